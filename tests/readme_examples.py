"""The example requests of README.md as a user reads them, and the comparison of a shown answer with a real one.

The README writes its examples in shell. They are read here with a small tokenizer for the few shapes they use —
variable assignments, the walk-through's ``post NAME 'json'`` helper, ``curl -s URL -H … -d …`` with ``\\``
continuations, single and double quotes, ``$VAR`` — and never handed to a shell, so the test runs anywhere and a
README example cannot run anything but an HTTP request. An answer is shown either as ``# …`` lines right under a
request, or after ``# →`` at the end of the request's line.

Shown answers may be abbreviated with ``…``: a bare ``…`` in an object means "these keys and possibly others", at
the end of an array "these first items and possibly more", and ``"…"`` or ``<x>…</x>`` "any value". Times and ids
differ on every run, so only their shape is compared (present, empty or an RFC 3339 UTC time; an integer or 24 hex
characters).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element

from defusedxml.ElementTree import fromstring as xml_fromstring

ELLIPSIS = "…"
TIME_FIELDS = frozenset({"created", "attached", "activated", "expired", "expire_date", "updated", "time"})
ID_FIELDS = frozenset({"profile_id", "id", "token"})
FIRST_SECTION = "## From nothing to a redeemed code"
END_SECTION = "## Command line"
# The walk-through's helper, exactly as the README defines it: `post NAME BODY` is read as this curl line, so a
# change to the definition must be taught here too.
POST_DEFINITION = (
    'post() { curl -s "$API/$1" -H "Authorization: Bearer $T" -H \'Content-Type: application/json\' -d "$2"; echo; }'
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]")
_RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_HINT = re.compile(r"data\.(\w+)(?:\s*=\s*([^\s,]+))?")


@dataclass
class Statement:
    """One shell command line (continuations joined): its words after expansion and its trailing comment."""

    line: int
    text: str
    words: list[str] = field(default_factory=list)
    comment: str | None = None


@dataclass
class Example:
    """One example request, with the answer the README shows for it (``shown``, JSON or XML, perhaps abbreviated)
    and the prose after ``# →`` on its line (``hint``)."""

    line: int
    source: str
    path: str
    headers: dict[str, str]
    body: str | None
    shown: str | None = None
    hint: str | None = None


def statements(text: str, first_line: int, variables: dict[str, str]) -> Iterator[Statement]:
    """The commands of a shell block, one by one. ``$NAME`` is expanded from ``variables`` when it is read, so an
    assignment the caller records after one statement is in force for the next; an unknown name stays as written
    (the helper's ``$1``). A newline inside quotes belongs to the word, as in a shell."""
    index, line = 0, first_line
    statement = Statement(line, "")
    start = 0
    word: str | None = None

    def finish() -> None:
        nonlocal word
        if word is not None:
            statement.words.append(word)
            word = None

    def expand(at: int) -> tuple[str, int]:
        name = _NAME.match(text, at + 1)
        if name is None:
            return "$", at + 1
        return variables.get(name.group(), f"${name.group()}"), name.end()

    while index < len(text):
        char = text[index]
        if char == "\\" and text.startswith("\n", index + 1):
            index, line = index + 2, line + 1
        elif char == "\n":
            finish()
            statement.text = text[start:index].strip()
            yield statement
            index, line = index + 1, line + 1
            start = index
            statement = Statement(line, "")
        elif char in " \t":
            finish()
            index += 1
        elif char == "#" and word is None:
            end = text.find("\n", index)
            end = len(text) if end < 0 else end
            statement.comment = text[index + 1 : end].strip()
            index = end
        elif char == "'":
            end = text.index("'", index + 1)
            line += text.count("\n", index, end)
            word = (word or "") + text[index + 1 : end]
            index = end + 1
        elif char == '"':
            word = word or ""
            index += 1
            while text[index] != '"':
                if text[index] == "\\" and text[index + 1] in '"\\$':
                    word, index = word + text[index + 1], index + 2
                elif text[index] == "$":
                    value, index = expand(index)
                    word += value
                else:
                    line += text[index] == "\n"
                    word, index = word + text[index], index + 1
            index += 1
        elif char == "$":
            value, index = expand(index)
            word = (word or "") + value
        else:
            word, index = (word or "") + char, index + 1
    finish()
    statement.text = text[start:].strip()
    if statement.words or statement.comment is not None:
        yield statement


def _request(statement: Statement, variables: dict[str, str]) -> Example:
    """The HTTP request of a ``post`` or ``curl`` line, with the headers curl would add that matter here."""
    words = statement.words
    if words[0] == "post":
        if len(words) != 3:
            raise ValueError(f"README line {statement.line}: post takes a method and a body: {statement.text}")
        # The helper's definition, checked word for word against POST_DEFINITION, with $1 and $2 in place.
        method, data = words[1], words[2]
        authorization = f"Authorization: Bearer {variables['T']}"
        words = ["curl", "-s", f"{variables['API']}/{method}", "-H", authorization]
        words += ["-H", "Content-Type: application/json", "-d", data]
    url: str | None = None
    headers: dict[str, str] = {}
    body: str | None = None
    arguments = iter(words[1:])
    for word in arguments:
        if word == "-s":
            continue
        if word == "-H":
            name, _, value = next(arguments).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            body = next(arguments)
        elif word.startswith("-") or url is not None:
            raise ValueError(f"README line {statement.line}: curl argument {word!r} is not understood here")
        else:
            url = word
    if url is None:
        raise ValueError(f"README line {statement.line}: a curl line without a URL: {statement.text}")
    if body is not None and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/x-www-form-urlencoded"  # what `curl -d` labels every body
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return Example(statement.line, statement.text, path, headers, body, hint=statement.comment)


def examples(readme: str, token: str) -> list[Example]:
    """Every request of the README's walk-through and API sections, in order, with ``$T`` = ``token`` and ``$API``
    = the path of the README's ``API`` (requests are then sent to a test server, whatever host the README names)."""
    start = readme.index(FIRST_SECTION)
    end = readme.index(END_SECTION, start)
    first_line = readme.count("\n", 0, start) + 1
    variables = {"T": token}
    found: list[Example] = []
    blocks = re.finditer(r"^```sh\n(.*?)^```$", readme[start:end], flags=re.MULTILINE | re.DOTALL)
    for block in blocks:
        block_line = first_line + readme.count("\n", start, start + block.start(1))
        last: Example | None = None  # the request that `# …` lines right below it answer
        for statement in statements(block.group(1), block_line, variables):
            words = statement.words
            if not words:
                if statement.comment is None:
                    last = None
                elif last is not None:
                    last.shown = f"{last.shown}\n{statement.comment}" if last.shown else statement.comment
                continue
            last = None
            assignment = re.fullmatch(r"([A-Za-z_]\w*)=(.*)", words[0], flags=re.DOTALL)
            if assignment and len(words) == 1:
                name, value = assignment.groups()
                if name == "API":
                    variables[name] = urlsplit(value).path
                elif name != "T":  # the README's placeholder; the server's real token stands in
                    variables[name] = value
            elif words[0] == "post()":
                if statement.text != POST_DEFINITION:
                    raise ValueError(f"README line {statement.line}: post() changed; teach readme_examples.py")
            elif words[0] in ("post", "curl"):
                last = _request(statement, variables)
                found.append(last)
            else:
                raise ValueError(f"README line {statement.line}: {words[0]!r} is not an example request")
    return found


def shown_answer(text: str) -> str:
    """The answer part of the ``# …`` lines under a request: from the first ``{`` or ``<`` to its end; prose after
    it (in parentheses) is not part of the answer."""
    match = re.search(r"[{<]", text)
    if match is None:
        raise ValueError(f"no answer in {text!r}")
    begin = match.start()
    if text[begin] == "<":
        end = text.rindex("</xml>") + len("</xml>")
        return text[begin:end]
    depth, in_string, escaped = 0, False, False
    for index in range(begin, len(text)):
        char = text[index]
        if in_string:
            escaped, in_string = (not escaped and char == "\\"), in_string and (escaped or char != '"')
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return text[begin : index + 1]
    raise ValueError(f"unbalanced answer {text!r}")


def loads_shown(text: str) -> Any:
    """A shown JSON answer, with each bare ``…`` made a marker: a ``"…"`` key in an object, a ``"…"`` item in an
    array."""
    out: list[str] = []
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (not escaped and char == "\\"), escaped or char != '"'
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]":
            stack.pop()
        elif char == ELLIPSIS:
            out.append('"…": "…"' if stack and stack[-1] == "{" else '"…"')
            continue
        out.append(char)
    return json.loads("".join(out))


def time_shape(value: Any) -> str:
    if value == "":
        return "empty"
    if isinstance(value, str) and _RFC3339_UTC.fullmatch(value):
        return "RFC 3339 UTC time"
    return f"not a time: {value!r}"


def id_shape(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return "integer"
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{24}", value):
        return "24 hex characters"
    if isinstance(value, str) and value:
        return "text"
    return f"{value!r}"


def json_mismatches(shown: Any, actual: Any, where: str = "") -> Iterator[str]:
    """Where ``actual`` differs from ``shown`` (abbreviations, times and ids as described in the module)."""
    key = where.rpartition(".")[2]
    if shown == ELLIPSIS:
        return
    if key in TIME_FIELDS:
        if time_shape(shown) != time_shape(actual):
            yield f"{where}: shown {time_shape(shown)}, answered {time_shape(actual)}"
        return
    if key in ID_FIELDS:
        if id_shape(shown) != id_shape(actual):
            yield f"{where}: shown {id_shape(shown)}, answered {id_shape(actual)}"
        return
    if isinstance(shown, dict):
        if not isinstance(actual, dict):
            yield f"{where}: shown an object, answered {actual!r}"
            return
        for name, value in shown.items():
            if name == ELLIPSIS:
                continue
            if name not in actual:
                yield f"{where}.{name}: shown, not answered"
            else:
                yield from json_mismatches(value, actual[name], f"{where}.{name}")
        if ELLIPSIS not in shown and (extra := sorted(actual.keys() - shown.keys())):
            yield f"{where}: answered keys not shown (and no …): {extra}"
    elif isinstance(shown, list):
        if not isinstance(actual, list):
            yield f"{where}: shown an array, answered {actual!r}"
            return
        abbreviated = bool(shown) and shown[-1] == ELLIPSIS
        items = shown[:-1] if abbreviated else shown
        if len(actual) < len(items) or (not abbreviated and len(actual) != len(items)):
            yield f"{where}: shown {len(items)} items{'+' if abbreviated else ''}, answered {len(actual)}"
        for index, (item, answered) in enumerate(zip(items, actual, strict=False)):
            yield from json_mismatches(item, answered, f"{where}[{index}]")
    elif type(shown) is not type(actual) or shown != actual:
        yield f"{where}: shown {shown!r}, answered {actual!r}"


def xml_mismatches(shown: Element, actual: Element, where: str = "") -> Iterator[str]:
    """Where the element ``actual`` differs from ``shown``: names, order, texts (times and ids by shape)."""
    where = f"{where}/{shown.tag}"
    if shown.tag != actual.tag:
        yield f"{where}: answered <{actual.tag}>"
        return
    shown_text, actual_text = (shown.text or "").strip(), (actual.text or "").strip()
    if shown_text == ELLIPSIS and not len(shown):
        return
    if shown.tag in TIME_FIELDS:
        if time_shape(shown_text) != time_shape(actual_text):
            yield f"{where}: shown {time_shape(shown_text)}, answered {time_shape(actual_text)}"
        return
    if shown.tag in ID_FIELDS:
        if id_shape(shown_text) != id_shape(actual_text):
            yield f"{where}: shown {id_shape(shown_text)}, answered {id_shape(actual_text)}"
        return
    if not len(shown) and shown_text != actual_text:
        yield f"{where}: shown {shown_text!r}, answered {actual_text!r}"
    abbreviated = shown_text == ELLIPSIS or any((child.tail or "").strip() == ELLIPSIS for child in shown)
    shown_children, actual_children = list(shown), list(actual)
    too_few = len(actual_children) < len(shown_children)
    if too_few or (not abbreviated and len(actual_children) != len(shown_children)):
        answered = [child.tag for child in actual_children]
        yield f"{where}: shown {[child.tag for child in shown_children]}, answered {answered}"
        return
    for mine, theirs in zip(shown_children, actual_children, strict=False):
        yield from xml_mismatches(mine, theirs, where)


def answer_mismatches(shown: str, content_type: str, body: bytes) -> list[str]:
    """Where a real answer differs from a shown one; an XML answer shown must come as XML, JSON as JSON."""
    expected = shown_answer(shown)
    if expected.startswith("<"):
        if "xml" not in content_type:
            return [f"shown XML, answered {content_type}: {body[:200]!r}"]
        return list(xml_mismatches(xml_fromstring(expected.replace("\n", " ")), xml_fromstring(body)))
    if "json" not in content_type:
        return [f"shown JSON, answered {content_type}: {body[:200]!r}"]
    return list(json_mismatches(loads_shown(expected), json.loads(body)))


def hint_mismatches(hint: str, answer: Any) -> list[str]:
    """What a ``# → …`` note on a request's line claims about ``data``: ``{…}`` (the data itself), ``data.KEY =
    VALUE`` or ``data.KEY`` (present). Any other note is prose and claims nothing."""
    claim = hint.removeprefix("→").strip()
    data = answer.get("data") if isinstance(answer, dict) else None
    if not hint.startswith("→"):
        return []
    if claim.startswith("{"):
        return list(json_mismatches(loads_shown(shown_answer(claim)), data, "data"))
    match = _HINT.match(claim)
    if match is None:
        return []
    key, value = match.groups()
    if not isinstance(data, dict) or key not in data:
        return [f"data.{key}: claimed, not answered ({answer!r})"]
    if value is not None and data[key] != json.loads(value):
        return [f"data.{key}: claimed {value}, answered {data[key]!r}"]
    return []
