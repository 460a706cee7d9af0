"""Two fuzzers against the whole application, on both adapters (issue 5, item 9).

1. schemathesis reads ``/openapi.json`` and sends cases generated from it (valid ones, then invalid ones) to every
   operation, with a valid admin token: no answer may be a server error, and every answer must match the documented
   schema.
2. A hypothesis fuzzer sends mutated raw bodies to every API path — valid bodies with fields replaced by hostile
   values (NUL and control characters, huge numbers, dates at the edge of the calendar, very long strings, deep
   nesting), XML with bogus or UTF-16 encodings, forms, random bytes, wrong or missing content types — with and
   without a valid token (header, body or query string). Every answer must be a well-formed envelope (JSON or XML)
   with an integer ``error``, never a 5xx other than 503; and what the server accepted must be usable: no control
   character comes back in a successful answer, no template that makes codes longer than 255 characters is kept.

Both are bounded (a fixed number of examples per operation, no shrinking) and derandomized, so a run is the same
every time. Each collects every distinct failure before asserting, so one run reports all of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import response_schema_conformance

from promocodes.config import Settings
from promocodes.http.app import create_app
from promocodes.http.openapi import OPENAPI_PATH
from promocodes.http.routes import METHODS, ApiMethod
from promocodes.models import Role
from promocodes.service import Services
from promocodes.store import open_store
from tests.client import InProcessClient
from tests.helpers import Api

pytestmark = pytest.mark.slow  # live servers / fuzzers: left out of the quick loop (-m 'not slow')

# Examples per operation. Together both fuzzers stay well under a minute per adapter on a small machine.
SCHEMATHESIS_POSITIVE = 12
SCHEMATHESIS_NEGATIVE = 6
RAW_EXAMPLES = 15  # per path, anything goes
RAW_EXAMPLES_PER_FIELD = 4  # per field of each path, a valid call with that one field hostile

MAX_BODY = 1024 * 1024
FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,  # the same cases on every run, so CI is reproducible
    database=None,
    phases=[Phase.explicit, Phase.generate],  # nothing fails inside hypothesis: failures are collected instead
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


@pytest.fixture
def app_settings(database_url: str) -> Settings:
    """The failed-look-up and failed-token limits are off: the fuzzers send many unknown codes and bad tokens on
    purpose, and 429s would hide every rule behind them."""
    return Settings(database_url=database_url, max_body_bytes=MAX_BODY, failed_lookup_limit=0, failed_auth_limit=0)


# --- the objects the fuzzers aim at ----------------------------------------------------------------------------


@dataclass
class World:
    """Objects of the fuzzed account, so that generated requests reach the rules and not only "not found":
    a personal program with free, attached and activated codes, a multiple-usage program that generates on
    attach, a database with two profiles, and a spare token."""

    url: str
    token: str
    token_id: int
    loyalty_ids: list[int]
    db_id: int
    codes: list[str]
    emails: list[str]
    spare_token_id: int
    requests: int = 0
    #: distinct failures: (what went wrong, its cause) → the operations it happened on, and the first example
    failures: dict[tuple[str, str], tuple[set[str], str]] = field(default_factory=dict)

    def record(self, operation: str, problem: str, cause: str, example: str) -> None:
        operations, _ = self.failures.setdefault((problem, cause), (set(), example))
        operations.add(operation)

    def watch_revocation(self, path: str, answer: Any) -> None:
        """A fuzzed ``tokens/revoke`` may hit the fuzzer's own token: issue a new one, so the rest of the run
        still reaches the rules behind authentication."""
        if path.endswith("/tokens/revoke") and isinstance(answer, dict) and answer.get("error") == 0:
            data = answer.get("data")
            if isinstance(data, dict) and data.get("id") == self.token_id:
                self.token, self.token_id = issue_admin_token(self.url)

    def report(self) -> str:
        return "\n\n".join(
            f"{problem} — {cause}\non: {', '.join(sorted(operations))}\n{example}"
            for (problem, cause), (operations, example) in sorted(self.failures.items())
        )


class ServerFaults(logging.Handler):
    """Reads the exception behind a 500 from the server's log (the client only sees "Internal error"), so that
    failures are told apart by their cause rather than by the request that showed them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if error is None:
            return
        frames = traceback.extract_tb(error.__traceback__)
        ours = [frame for frame in frames if "/promocodes/" in frame.filename]
        where = ours[-1] if ours else frames[-1]
        text = str(error).splitlines()[0][:100] if str(error) else ""
        self.last = f"{type(error).__name__}: {text} (raised via {where.filename.rsplit('/', 1)[-1]}:{where.lineno})"

    def take(self) -> str:
        last, self.last = self.last, ""
        return last


@pytest.fixture
def server_faults() -> Iterator[ServerFaults]:
    handler = ServerFaults()
    logger = logging.getLogger("promocodes")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def issue_admin_token(database_url: str) -> tuple[str, int]:
    """An admin token of the account ``default`` and its id, made through a separate connection."""

    async def issue() -> tuple[str, int]:
        store = open_store(database_url)
        await store.open()
        try:
            await store.migrate()
            view = await Services(store).tokens.issue("default", Role.ADMIN)
        finally:
            await store.close()
        assert isinstance(view.token, str)
        return view.token, view.id

    return asyncio.run(issue())


def build_world(settings_: Settings) -> World:
    token, token_id = issue_admin_token(settings_.database_url)
    with InProcessClient(create_app(settings_, migrate=True)) as client:
        api = Api(client, settings_.database_url, token)
        personal = api.program(name="Fuzz personal")
        universal = api.program(
            name="Fuzz universal", multiple_usage=True, template="MU-####", generate_on_attach=True, codes_limit=500
        )
        codes = ["FUZZ-1", "FUZZ-2", "FUZZ-3", "FUZZ-4"]
        api.codes(personal, *codes)
        api.codes(universal, "SHARED")
        db_id = api.database("fuzz")
        emails = ["fuzz@example.org", "idle@example.org"]
        api.profile(db_id, emails[0], phones=["+7 900 000-00-00"], crm="42")
        api.profile(db_id, emails[1])
        api.ok("promocodes/attach", loyalty_id=personal, db_id=db_id, email=emails[0], code="FUZZ-2")
        api.ok("promocodes/attach", loyalty_id=personal, db_id=db_id, email=emails[0], code="FUZZ-3")
        api.ok("promocodes/activate", loyalty_id=personal, code="FUZZ-3")
        spare = api.ok("tokens/create", role="read", name="spare")["id"]
    return World(settings_.database_url, token, token_id, [personal, universal], db_id, codes, emails, spare)


def run_order(methods: tuple[ApiMethod, ...]) -> list[ApiMethod]:
    """Deletions and revocations last, so that the objects the other operations aim at still exist for them."""
    return sorted(methods, key=lambda method: method.path.endswith(("/delete", "/revoke")))


# --- invariants of every answer ----------------------------------------------------------------------------------

TRANSPORT_STATUSES = {404, 405, 408, 413, 429, 503}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_DESCRIPTION = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # tab, LF and CR are allowed there


def envelope_problems(response: Any) -> tuple[list[str], Any]:
    """What is wrong with an answer's transport and envelope, and the parsed JSON envelope (None for XML)."""
    status = response.status_code
    problems = []
    if status >= 500 and status != 503:
        problems.append(f"HTTP {status}")
    elif status != 200 and status not in TRANSPORT_STATUSES:
        problems.append(f"undocumented HTTP {status}")
    media = response.headers.get("content-type", "").split(";")[0]
    parsed: Any = None
    error: Any = None
    try:
        if media == "application/json":
            parsed = json.loads(response.content)
            if not isinstance(parsed, dict) or not {"data", "error", "error_text"} <= parsed.keys():
                problems.append("JSON answer is not an envelope")
                return problems, None
            error = parsed["error"]
            if not isinstance(parsed["error_text"], str):
                problems.append("error_text is not a string")
        elif media == "application/xml":
            root = ET.fromstring(response.content)
            element = root.find("error")
            if root.tag != "xml" or element is None or root.find("error_text") is None:
                problems.append("XML answer is not an envelope")
                return problems, None
            error = int(element.text or "")
        else:
            problems.append(f"answer of type {media!r}")
            return problems, None
    except (ValueError, ET.ParseError) as exc:
        problems.append(f"malformed {media} answer: {type(exc).__name__}")
        return problems, None
    if not isinstance(error, int) or isinstance(error, bool):
        problems.append(f"`error` is not an integer: {error!r}")
    elif status != 200 and error != status:
        problems.append(f"HTTP {status} carries error {error}")
    return problems, parsed


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _strings(name, "(key)")
            yield from _strings(item, str(name))
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, key)


def _code_length(template: str) -> int:
    """How long the codes of a template are: each character is one, an escaped one too."""
    return len(re.sub(r"\\(.)", r"\1", template))


def accepted_data_problems(path: str, answer: Any) -> list[str]:
    """What a successful answer shows the server kept although the rules refuse it: a control character in a
    text field (only a description may hold tab, LF and CR), a template whose codes exceed 255 characters, a
    code longer than 255 characters."""
    if not isinstance(answer, dict) or answer.get("error") != 0:
        return []
    data = answer.get("data")
    if path.endswith("/promocodes/import") and isinstance(data, list):
        data = [item for item in data if isinstance(item, dict) and item.get("error") == 0]  # refused items echo
    problems = []
    for key, text in _strings(data):
        pattern = _CONTROL_IN_DESCRIPTION if key == "description" else _CONTROL
        if pattern.search(text):
            problems.append(f"control character kept in `{key}`")
    items = data if isinstance(data, list) else [data]
    for item in items:
        if not isinstance(item, dict):
            continue
        template = item.get("template")
        if isinstance(template, str) and _code_length(template) > 255:
            problems.append("template whose codes exceed 255 characters kept")
        code = item.get("code")
        if isinstance(code, str) and len(code) > 255:
            problems.append("code longer than 255 characters handed out")
    return problems


def describe(request: str, response: Any) -> str:
    return f"request:  {request[:600]}\nresponse: HTTP {response.status_code} {response.content[:400]!r}"


# --- 1. schemathesis ---------------------------------------------------------------------------------------------


def _pin(case: Any, world: World, choice: int) -> None:
    """Point a generated body at the world's objects (half of the cases), so that its rules run."""
    if choice == 0 or not isinstance(case.body, dict):
        return
    pins: dict[str, Any] = {
        "loyalty_id": world.loyalty_ids[choice % 2],
        "db_id": world.db_id,
        "code": world.codes[choice % len(world.codes)],
        "email": world.emails[choice % 2],
        "id": world.spare_token_id,
    }
    for name, value in pins.items():
        if name in case.body:
            case.body[name] = value


def schemathesis_fuzzer(
    operation: Any, mode: GenerationMode, examples: int, world: World, faults: ServerFaults
) -> Callable[[], None]:
    @settings(FUZZ_SETTINGS, max_examples=examples)
    @given(case=operation.as_strategy(generation_mode=mode), pin=st.integers(0, 3))
    def fuzz(case: Any, pin: int) -> None:
        _pin(case, world, pin)
        world.requests += 1
        try:
            response = case.call_and_validate(
                headers={"Authorization": f"Bearer {world.token}"},
                checks=[not_a_server_error, response_schema_conformance],
            )
        except (Exception, schemathesis.errors.FailureGroup) as error:
            cause = faults.take() or f"{mode.value} case"
            for failure in getattr(error, "exceptions", [error]):
                title = str(getattr(failure, "title", type(failure).__name__))
                world.record(operation.label, title, cause, str(error)[:2500])
            return
        faults.take()
        try:
            answer = response.json()
        except ValueError:
            answer = None
        for problem in accepted_data_problems(operation.path, answer):
            world.record(
                operation.label, problem, "accepted", case.as_curl_command()[:1500] + "\n" + response.text[:500]
            )
        world.watch_revocation(operation.path, answer)

    return fuzz


@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_error_and_no_schema_break(
    app_settings: Settings, server_faults: ServerFaults
) -> None:
    world = build_world(app_settings)
    app = create_app(app_settings, migrate=True)
    schema = schemathesis.openapi.from_asgi(OPENAPI_PATH, app)
    operations = {
        (operation.method.upper(), operation.path): operation
        for operation in (result.ok() for result in schema.get_all_operations())
    }
    ordered = [("POST", method.path) for method in run_order(METHODS)] + [("GET", "/healthz")]
    assert set(ordered) <= set(operations), "every API path must be in the document"
    started = time.perf_counter()
    try:
        for method, path in ordered:
            operation = operations[method, path]
            schemathesis_fuzzer(operation, GenerationMode.POSITIVE, SCHEMATHESIS_POSITIVE, world, server_faults)()
            if method == "POST":  # a GET without parameters has no invalid form
                schemathesis_fuzzer(operation, GenerationMode.NEGATIVE, SCHEMATHESIS_NEGATIVE, world, server_faults)()
    finally:
        shutdown_lifespans()
    print(f"\nschemathesis: {world.requests} requests in {time.perf_counter() - started:.1f} s")
    assert not world.failures, f"{len(world.failures)} distinct failures:\n\n{world.report()}"


# --- 2. hypothesis, raw bodies -----------------------------------------------------------------------------------


class Raw(str):
    """JSON text written as is: numbers Python's json module cannot write (1e400), deep nesting."""


def to_json(value: Any, *, ascii_only: bool) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        members = (
            json.dumps(str(k), ensure_ascii=ascii_only) + ":" + to_json(v, ascii_only=ascii_only)
            for k, v in value.items()
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(item, ascii_only=ascii_only) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)  # NaN and Infinity come out as invalid JSON on purpose


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def to_xml(params: dict[str, Any], *, escaped: bool) -> str:
    def element(name: str, value: Any) -> str:
        if isinstance(value, list):
            return "".join(element(name, item) for item in value)
        if isinstance(value, dict):
            return f"<{name}>" + "".join(element(str(k), v) for k, v in value.items()) + f"</{name}>"
        text = _text(value)
        return f"<{name}>{escape(text) if escaped else text}</{name}>"

    return "<xml>" + "".join(element(str(name), value) for name, value in params.items()) + "</xml>"


def to_form(params: dict[str, Any]) -> str:
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        if isinstance(value, dict):
            pairs += [(f"{name}[{k}]", _text(v)) for k, v in value.items()]
        elif isinstance(value, list):
            pairs += [(str(name), _text(item)) for item in value]
        else:
            pairs.append((str(name), _text(value)))
    return urlencode(pairs)


def _deep_json(depth: int, kind: str) -> Raw:
    if kind == "array":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


# Values aimed at known weak spots, tried in every field they fit, beside generic hostile values.
CONTROL_TEXT = ["\x00", "A\x00B", "\x00\x00\x00", "\x01\x02\x1b\x7f", "\x85\x9f", "tab\there", "line\nfeed\r"]
EDGE_DATES = [
    "9999-12-31T23:59:59-14:00",  # after the offset: past year 9999
    "0001-01-01T00:00:00+14:00",  # before year 1
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "2025-02-30T00:00:00Z",
    "2025-03-01T09:30:00",
    "2025-03-01T09:30:00+99:99",
]
LONG_TEMPLATES = ["#" * 256, "FZ-" + "#" * 300, "@" * 255 + "#", "\\A" * 200 + "#" * 60, "?" * 1000]
BIG_NUMBERS: list[Any] = [
    Raw("1e400"),
    Raw("-1e400"),
    Raw("18446744073709551616"),
    Raw("-9223372036854775809"),
    Raw("1" * 400),
    Raw("1.5e-400"),
    2**64,
    2**63,
    -1,
    0,
    1.5,
    float("nan"),
    "18446744073709551616",
    "1e400",
    "-1",
    "NaN",
]
GENERIC: list[Any] = [
    "",
    " ",
    "true",
    "false",
    "1",
    "0",
    True,
    False,
    None,
    [],
    {},
    [None],
    {"a": {"b": None}},
    "\\",
    "X" * 256,
    "\u2028",
    "\ufeff",
    "\U0001f4a5",
    "<xml/>",
    "&amp;",
    "]]>",
    "%00",
    "email",
    "profile_id",
    "custom",
]
DATE_FIELDS = {"expire_date", "valid_from", "valid_to"}
MATCHING_MODES = ["email", "email_profile", "phone", "profile_id", "custom", "bogus", ""]
# Fields a request may carry beyond the valid base body: the envelope's own, and the profile-matching ones.
EXTRA_FIELDS = ["token", "format", "matching", "phone", "profile_id", "field_name", "field_value", "expire_date"]

hostile_values = st.one_of(
    st.sampled_from(GENERIC + BIG_NUMBERS + CONTROL_TEXT + EDGE_DATES),
    st.text(max_size=20),
    st.integers(),
    st.floats(),
    st.integers(256, 70_000).map(lambda n: "Ä" * n),
    st.builds(_deep_json, st.integers(65, 5000), st.sampled_from(["array", "object"])),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)


def _with_control(text: str) -> st.SearchStrategy[str]:
    return st.sampled_from(CONTROL_TEXT).flatmap(lambda c: st.sampled_from([c, text + c, c + text]))


def hostile_for(name: str, value: Any) -> st.SearchStrategy[Any]:
    """A hostile replacement for one field: mostly aimed at what the field holds, sometimes anything."""
    aimed: list[st.SearchStrategy[Any]] = []
    if name in DATE_FIELDS:
        aimed.append(st.sampled_from(EDGE_DATES))
    if name == "template":
        aimed.append(st.sampled_from(LONG_TEMPLATES))
    if name == "matching":
        aimed.append(st.sampled_from(MATCHING_MODES))
    if isinstance(value, str) or value is None:
        aimed.append(_with_control(value or "x"))
    if isinstance(value, int) and not isinstance(value, bool):
        aimed.append(st.sampled_from(BIG_NUMBERS))
    if isinstance(value, list):
        aimed.append(st.lists(_with_control("CODE") | st.text(max_size=8), min_size=1, max_size=3))
    if isinstance(value, dict):  # a profile's data
        aimed.append(
            st.fixed_dictionaries(
                {},
                optional={
                    "email": _with_control("a@example.org"),
                    "phones": st.lists(_with_control("+7 900"), max_size=2),
                    "crm": _with_control("42"),
                    "x\x00y": st.just("1"),
                },
            )
        )
    return st.one_of(*aimed, hostile_values)


def base_params(method: ApiMethod, world: World) -> dict[str, Any]:
    """A valid body for the method, aimed at the world's objects."""
    known: dict[str, Any] = {
        "loyalty_id": world.loyalty_ids[0],
        "db_id": world.db_id,
        "code": world.codes[0],
        "codes": ["NEW-1", "NEW-2"],
        "email": world.emails[0],
        "name": "fuzzed",
        "role": "read",
        "id": world.spare_token_id,
        "activated": True,
        "expire_date": "2999-01-01T00:00:00Z",
        "template": "FZ-####",
        "valid_from": "2000-01-01T00:00:00Z",
        "valid_to": "2999-01-01T00:00:00Z",
        "data": {"email": world.emails[0], "phones": ["+7 900 000-00-00"], "crm": "43"},
        "description": "fuzzed",
        "short_name": "fz",
        "codes_limit": 1000,
    }
    info = msgspec.inspect.type_info(method.request)
    assert isinstance(info, msgspec.inspect.StructType)
    return {f.name: known[f.name] for f in info.fields if f.name in known}


@dataclass(frozen=True)
class RawRequest:
    body: bytes
    content_type: str | None
    query: str
    headers: dict[str, str]

    def __str__(self) -> str:
        return f"?{self.query} {self.headers} content-type={self.content_type!r} body={self.body[:400]!r}"


ENCODINGS = ["plain", "declared", "bogus", "utf-16", "utf-16-declared", "latin-1-declared", "doctype"]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/xml",
    "text/xml",
    "application/x-www-form-urlencoded",
    "text/plain",
    "application/json; charset=utf-16",
    "multipart/form-data; boundary=x",
    "application/soap+xml",
    "",
    "garbage/<>",
]


def _encode_xml(document: str, encoding: str) -> bytes:
    declaration = '<?xml version="1.0" encoding="{}"?>'
    if encoding == "declared":
        return (declaration.format("UTF-8") + document).encode("utf-8")
    if encoding == "bogus":
        return (declaration.format("bogus") + document).encode("utf-8")
    if encoding == "utf-16":
        return document.encode("utf-16")
    if encoding == "utf-16-declared":
        return (declaration.format("UTF-16") + document).encode("utf-16")
    if encoding == "latin-1-declared":
        return (declaration.format("ISO-8859-1") + document).encode("latin-1", errors="replace")
    if encoding == "doctype":
        return ('<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa">]>' + document).encode("utf-8")
    return document.encode("utf-8")


def _mutate_bytes(body: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Byte-level edits, as a classic fuzzer makes: 0 flip a byte, 1 insert one, 2 delete one, 3 cut the rest."""
    data = bytearray(body)
    for kind, where, byte in edits:
        if not data:
            data.append(byte)
            continue
        at = where % len(data)
        if kind == 0:
            data[at] ^= byte or 1
        elif kind == 1:
            data.insert(at, byte)
        elif kind == 2:
            del data[at]
        else:
            del data[at:]
    return bytes(data)


# A target field that only matters with a matching mode comes with the fields that select that mode.
COMPANIONS: dict[str, dict[str, Any]] = {
    "profile_id": {"matching": "profile_id"},
    "phone": {"matching": "phone"},
    "field_name": {"matching": "custom", "field_value": "42"},
    "field_value": {"matching": "custom", "field_name": "crm"},
}
BODY_KINDS = ["json", "json", "json", "xml", "xml", "form", "deep json", "deep xml", "bytes"]


def targets(method: ApiMethod) -> list[str]:
    """The fields the raw fuzzer aims at one by one: every field of the request, and the envelope's two."""
    info = msgspec.inspect.type_info(method.request)
    assert isinstance(info, msgspec.inspect.StructType)
    return [f.name for f in info.fields] + ["token", "format"]


@st.composite
def raw_requests(draw: st.DrawFn, method: ApiMethod, world: World, target: str | None) -> RawRequest:
    """One request. With a ``target``, a well-formed body whose target field holds a hostile value; without
    one, anything: several fields broken, deep nesting, random bytes, byte-level edits, a body past the size
    limit, any content type. Hypothesis tries the simplest draw first, so every choice's first option is the
    benign one and each target's first example is its most pointed hostile value in an otherwise valid call."""
    params = base_params(method, world)
    if target is not None:
        params.update(COMPANIONS.get(target, {}))
        params[target] = draw(hostile_for(target, params.get(target)))
    else:
        for name in draw(st.lists(st.sampled_from(sorted({*params, *EXTRA_FIELDS})), max_size=3, unique=True)):
            params[name] = draw(hostile_for(name, params.get(name)))
        if draw(st.integers(0, 3)) == 3 and params:
            params.pop(draw(st.sampled_from(sorted(params))))  # a required field may go missing

    auth = draw(st.sampled_from(["header", "body", "query", "none", "wrong header", "wrong body"]))
    headers: dict[str, str] = {}
    query: dict[str, str] = {}
    if auth == "header":
        headers["Authorization"] = f"Bearer {world.token}"
    elif auth == "wrong header":
        headers["Authorization"] = draw(st.sampled_from(["Bearer pc_unknown", "Bearer ", "Basic eDp5", "bearer"]))
    elif auth == "body" and "token" not in params:
        params["token"] = world.token
    elif auth == "wrong body":
        params["token"] = draw(st.sampled_from(["pc_unknown", "", "\x00"]))
    elif auth == "query":
        query["token"] = world.token
    answer_format = draw(st.sampled_from([None, None, "json", "xml", "XML", "bogus"]))
    if answer_format is not None:
        query["format"] = answer_format
    accept = draw(st.sampled_from([None, None, "application/xml", "*/*", "text/html"]))
    if accept is not None:
        headers["Accept"] = accept

    kind = draw(st.sampled_from(BODY_KINDS[:6] if target is not None else BODY_KINDS))
    if kind == "json":
        body = to_json(params, ascii_only=not draw(st.booleans())).encode("utf-8")
        if draw(st.integers(0, 9)) == 9:
            body = body.decode("utf-8").encode("utf-16")
        natural = "application/json"
    elif kind == "xml":
        document = to_xml(params, escaped=not draw(st.booleans()))
        body = _encode_xml(document, draw(st.sampled_from(ENCODINGS)))
        natural = "application/xml"
    elif kind == "form":
        body = to_form(params).encode("utf-8")
        natural = "application/x-www-form-urlencoded"
    elif kind == "deep json":
        depth = draw(st.integers(65, 20_000))
        inner = to_json(_deep_json(depth, draw(st.sampled_from(["array", "object"]))), ascii_only=True)
        body = ('{"loyalty_id": 1, "codes": ' + inner + "}").encode("utf-8")
        natural = "application/json"
    elif kind == "deep xml":
        depth = draw(st.integers(65, 20_000))
        body = _encode_xml("<xml>" + "<codes>" * depth + "A" + "</codes>" * depth + "</xml>", "plain")
        natural = "application/xml"
    else:
        body = draw(st.binary(max_size=200))
        natural = "application/octet-stream"
    content_type: str | None = natural
    if target is None:
        if draw(st.integers(0, 4)) == 4:
            edits = st.tuples(st.integers(0, 3), st.integers(0, 2**16), st.integers(0, 255))
            body = _mutate_bytes(body, draw(st.lists(edits, min_size=1, max_size=4)))
        if draw(st.integers(0, 29)) == 29:
            body += b" " * (MAX_BODY + 1)  # past the size limit: 413
        if draw(st.integers(0, 2)) == 2:
            content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers["Content-Type"] = content_type
    return RawRequest(body, content_type, "&".join(f"{k}={quote(v)}" for k, v in query.items()), headers)


def raw_fuzzer(
    method: ApiMethod, target: str | None, world: World, client: InProcessClient, faults: ServerFaults
) -> Callable[[], None]:
    @settings(FUZZ_SETTINGS, max_examples=RAW_EXAMPLES if target is None else RAW_EXAMPLES_PER_FIELD)
    @given(request=raw_requests(method, world, target))
    def fuzz(request: RawRequest) -> None:
        world.requests += 1
        url = method.path + (f"?{request.query}" if request.query else "")
        response = client.post(url, content=request.body, headers=request.headers)
        problems, answer = envelope_problems(response)
        cause = faults.take()
        for problem in problems:
            world.record(method.path, problem, cause or "-", describe(str(request), response))
        for problem in accepted_data_problems(method.path, answer):
            world.record(method.path, problem, "accepted", describe(str(request), response))
        world.watch_revocation(method.path, answer)

    return fuzz


@pytest.mark.timeout(900)
def test_raw_bodies_get_an_envelope_and_never_a_server_error(
    app_settings: Settings, server_faults: ServerFaults
) -> None:
    world = build_world(app_settings)
    started = time.perf_counter()
    with InProcessClient(create_app(app_settings, migrate=True), raise_server_exceptions=False) as client:
        for method in run_order(METHODS):
            for target in [None, *targets(method)]:
                raw_fuzzer(method, target, world, client, server_faults)()
    print(f"\nraw bodies: {world.requests} requests in {time.perf_counter() - started:.1f} s")
    assert not world.failures, f"{len(world.failures)} distinct failures:\n\n{world.report()}"
