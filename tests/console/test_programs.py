"""The console's program pages through the in-process client (docs/console.md#programs): create, edit, pause,
delete; the charts; generate, export and import by upload — and for every form, the CSRF token and the role."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from promocodes.config import Settings
from promocodes.console.programs import MAX_CHART_DAYS, UPLOAD_BATCH
from promocodes.http.app import create_app
from promocodes.models import Role
from tests.client import InProcessClient
from tests.console.helpers import csrf_of, seed, sign_in
from tests.helpers import Api, admin_token

TODAY = datetime.now(UTC).date()


def _console(settings: Settings) -> Iterator[Api]:
    app = create_app(settings)
    with InProcessClient(app) as client:
        api = Api(client, settings.database_url, admin_token(client, app))
        sign_in(client, api.token)
        yield api


@pytest.fixture
def console(app_settings: Settings) -> Iterator[Api]:
    """The app in-process, signed in to the console with an admin token (the same token serves the API calls)."""
    yield from _console(app_settings)


def csrf(api: Api, path: str = "/console/programs") -> str:
    return csrf_of(api.client.get(path).text)


def programs(api: Api) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = api.ok("promocodes/programs/list")
    return listed


def form(**fields: str) -> dict[str, str]:
    """A program form as the page posts it: every text field (empty unless given), boxes ticked only when given."""
    base = {"name": "", "short_name": "", "description": "", "valid_from": "", "valid_to": "", "codes_limit": "",
            "template": "", "pool_low_threshold": ""}  # fmt: skip
    return base | fields


def upload(
    api: Api, loyalty_id: int, body: bytes, token: str | None = None, *, json: bool = False, name: str = "codes.csv"
) -> object:
    headers = {"X-Requested-With": "XMLHttpRequest"} if json else {}
    data = {} if token is None else {"csrf": token}
    return api.client.post(
        f"/console/programs/{loyalty_id}/import",
        data=data,
        files={"file": (name, body, "text/csv")},
        headers=headers,
        follow_redirects=False,
    )


# --- create, edit, pause, delete --------------------------------------------------------------------------------


def test_an_admin_creates_a_program_with_every_setting(console: Api) -> None:
    page = console.client.get("/console/programs/new")
    assert page.status_code == 200
    for name in ("name", "short_name", "description", "active", "valid_from", "valid_to", "multiple_usage",
                 "case_sensitive", "codes_limit", "create_on_attach", "template", "generate_on_attach",
                 "one_code_per_profile", "pool_low_threshold"):  # fmt: skip
        assert (f'id="{name}"' in page.text and f'for="{name}"' in page.text) or f'name="{name}"' in page.text, name
    fields = form(name="Summer", short_name="summer_24", codes_limit="500", template="SUM-####",
                  valid_to="2030-01-31T12:00", active="on", create_on_attach="on", generate_on_attach="on")  # fmt: skip
    answer = console.client.post("/console/programs/new", data={"csrf": csrf_of(page.text), **fields})
    assert answer.status_code == 200 and "The program was created." in answer.text
    [created] = programs(console)
    assert created["name"] == "Summer" and created["codes_limit"] == 500 and created["template"] == "SUM-####"
    assert created["valid_to"] == "2030-01-31T12:00:00Z" and created["generate_on_attach"] is True
    assert created["case_sensitive"] is False and created["multiple_usage"] is False  # unticked boxes


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"name": "A", "short_name": "has space"}, "short_name", "must not contain spaces"),
        ({"name": "A", "generate_on_attach": "on"}, "generate_on_attach", "needs a `template`"),
        ({"name": "A", "codes_limit": "lots"}, "codes_limit", "whole number"),
        ({"name": "A", "template": "X" * 300}, "template", ""),
        ({"name": "A", "valid_from": "2030-02-01T00:00", "valid_to": "2030-01-01T00:00"}, "valid_from", "later"),
        ({"name": "   "}, "name", "must not be empty"),
    ],
)
def test_a_refused_setting_is_shown_next_to_its_field_and_nothing_is_created(
    console: Api, fields: dict[str, str], field: str, text: str
) -> None:
    answer = console.client.post("/console/programs/new", data={"csrf": csrf(console), **form(**fields)})
    assert answer.status_code == 400
    block = re.search(rf'<div class="field invalid" data-field="{field}">(.*?)</div>', answer.text, re.S)
    assert block, answer.text
    assert 'class="field-error"' in block.group(1) and text in block.group(1)
    assert answer.text.count('class="field-error"') == 1
    assert programs(console) == []


def test_edit_saves_what_changed_and_shows_a_refusal_next_to_the_field(console: Api) -> None:
    loyalty_id = console.program(name="Spring", case_sensitive=False)
    console.codes(loyalty_id, "A-1")
    page = console.client.get(f"/console/programs/{loyalty_id}/edit")
    assert page.status_code == 200 and 'value="Spring"' in page.text
    # case_sensitive stays unticked (as it is), so the program holding codes is no obstacle
    fields = form(name="Spring sale", codes_limit="10", active="on", create_on_attach="on")
    answer = console.client.post(f"/console/programs/{loyalty_id}/edit", data={"csrf": csrf_of(page.text), **fields})
    assert answer.status_code == 200 and "The settings were saved." in answer.text
    shown = console.ok("promocodes/programs/get", loyalty_id=loyalty_id)
    assert (shown["name"], shown["codes_limit"], shown["case_sensitive"]) == ("Spring sale", 10, False)
    refused = form(name="Spring sale", short_name="two words", active="on", create_on_attach="on")
    answer = console.client.post(f"/console/programs/{loyalty_id}/edit", data={"csrf": csrf_of(page.text), **refused})
    assert answer.status_code == 400 and 'data-field="short_name"' in answer.text and "two words" in answer.text
    assert console.ok("promocodes/programs/get", loyalty_id=loyalty_id)["short_name"] == ""


def test_pause_and_activate(console: Api) -> None:
    loyalty_id = console.program(name="Spring")
    token = csrf(console, f"/console/programs/{loyalty_id}")
    answer = console.client.post(f"/console/programs/{loyalty_id}/active", data={"csrf": token, "active": "0"})
    assert "The program was paused" in answer.text and 'data-action="activate"' in answer.text
    assert console.ok("promocodes/programs/get", loyalty_id=loyalty_id)["active"] is False
    console.client.post(f"/console/programs/{loyalty_id}/active", data={"csrf": token, "active": "1"})
    assert console.ok("promocodes/programs/get", loyalty_id=loyalty_id)["active"] is True


def test_delete_confirmation_says_what_is_lost_then_deletes(console: Api) -> None:
    spring, autumn = seed(console)
    page = console.client.get(f"/console/programs/{spring}/delete")
    assert page.status_code == 200
    said = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", page.text))
    assert "its 4 codes — 2 of them attached to profiles and 1 activated" in said
    assert programs(console) and console.ok("promocodes/programs/get", loyalty_id=spring)
    answer = console.client.post(f"/console/programs/{spring}/delete", data={"csrf": csrf_of(page.text), "force": "1"})
    assert answer.status_code == 200 and f"Program #{spring} was deleted." in answer.text
    assert [p["id"] for p in programs(console)] == [autumn]


def test_delete_without_force_is_refused_when_a_code_was_attached_after_the_page(console: Api) -> None:
    loyalty_id = console.program(name="Spring")
    console.codes(loyalty_id, "S-1")
    page = console.client.get(f"/console/programs/{loyalty_id}/delete")
    assert 'name="force" value="0"' in page.text
    db_id = console.database()
    console.profile(db_id, "ann@example.com")
    console.ok("promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email="ann@example.com", code="S-1")
    answer = console.client.post(
        f"/console/programs/{loyalty_id}/delete", data={"csrf": csrf_of(page.text), "force": "0"}
    )
    assert answer.status_code == 409
    assert console.ok("promocodes/programs/get", loyalty_id=loyalty_id)["stats"]["attached"] == 1


# --- CSRF and roles on every form -------------------------------------------------------------------------------

POSTS = ["new", "edit", "active", "delete", "generate", "import"]


def _post(api: Api, loyalty_id: int, what: str, token: str | None) -> object:
    data = {} if token is None else {"csrf": token}
    if what == "new":
        return api.client.post("/console/programs/new", data=data | form(name="Forged"), follow_redirects=False)
    if what == "import":
        return upload(api, loyalty_id, b"FORGED-1\nFORGED-2\n", token)
    fields = {"edit": form(name="Forged"), "active": {"active": "0"}, "delete": {"force": "1"},
              "generate": {"count": "3"}}[what]  # fmt: skip
    return api.client.post(f"/console/programs/{loyalty_id}/{what}", data=data | fields, follow_redirects=False)


def _unchanged(api: Api, loyalty_id: int) -> None:
    [program] = programs(api)
    assert (program["id"], program["name"], program["active"]) == (loyalty_id, "Spring", True)
    assert api.ok("promocodes/programs/get", loyalty_id=loyalty_id)["stats"]["total"] == 1


@pytest.mark.parametrize("what", POSTS)
@pytest.mark.parametrize("token", [None, "forged"])
def test_every_program_form_without_the_right_csrf_token_changes_nothing(console: Api, what: str, token: str) -> None:
    loyalty_id = console.program(name="Spring", template="S-####")
    console.codes(loyalty_id, "S-1")
    answer = _post(console, loyalty_id, what, token)
    assert answer.status_code == 403, what  # type: ignore[attr-defined]
    _unchanged(console, loyalty_id)


@pytest.mark.parametrize("what", POSTS)
def test_a_read_token_is_offered_no_change_and_its_forged_posts_are_refused(console: Api, what: str) -> None:
    loyalty_id = console.program(name="Spring", template="S-####")
    console.codes(loyalty_id, "S-1")
    sign_in(console.client, console.token_for(Role.READ))
    page = console.client.get(f"/console/programs/{loyalty_id}")
    assert page.status_code == 200
    for control in ('data-action="edit"', 'data-action="delete"', 'data-action="pause"', "data-upload",
                    'data-action="generate"'):  # fmt: skip
        assert control not in page.text
    assert 'data-action="export"' in page.text  # reading is allowed
    assert 'data-action="new"' not in console.client.get("/console/programs").text
    assert console.client.get("/console/programs/new").status_code == 403
    assert console.client.get(f"/console/programs/{loyalty_id}/delete").status_code == 403
    answer = _post(console, loyalty_id, what, csrf_of(page.text))  # the session's own, valid CSRF token
    assert answer.status_code == 403, what  # type: ignore[attr-defined]
    _unchanged(console, loyalty_id)


@pytest.mark.parametrize("what", ["new", "edit", "active", "delete"])
def test_a_write_token_adds_codes_but_cannot_manage_programs(console: Api, what: str) -> None:
    """Program settings need ``manage`` in the console as in the API (programs/create|update|delete)."""
    loyalty_id = console.program(name="Spring", template="S-####")
    console.codes(loyalty_id, "S-1")
    sign_in(console.client, console.token_for(Role.WRITE))
    page = console.client.get(f"/console/programs/{loyalty_id}")
    assert "data-upload" in page.text and 'data-action="edit"' not in page.text
    assert _post(console, loyalty_id, what, csrf_of(page.text)).status_code == 403  # type: ignore[attr-defined]
    _unchanged(console, loyalty_id)


# --- charts ------------------------------------------------------------------------------------------------------


def _points(html: str, series: str) -> list[tuple[str, int]]:
    return [
        (day, int(value))
        for day, value in re.findall(rf'data-point="{series}" data-day="([\d-]+)" data-value="(\d+)"', html)
    ]


def test_the_charts_draw_a_point_per_day_from_the_counters(console: Api) -> None:
    spring, _ = seed(console)
    page = console.client.get(f"/console/programs/{spring}")
    assert page.status_code == 200
    attached, activated, free = (_points(page.text, name) for name in ("attached", "activated", "free"))
    assert len(attached) == len(activated) == len(free) == 30
    assert attached[-1] == (TODAY.isoformat(), 2) and activated[-1] == (TODAY.isoformat(), 1)
    assert sum(value for _, value in attached[:-1]) == 0
    assert free[-1] == (TODAY.isoformat(), 2)  # 4 codes, 2 attached (one expired: the figures count it)
    assert page.text.count("<title>") >= 90 and '<table class="settings" data-table="per-day">' in page.text
    funnel = re.findall(r'data-point="(total|attached|activated)" data-value="(\d+)"><title>', page.text)
    assert funnel == [("total", "4"), ("attached", "2"), ("activated", "1")]
    assert "style=" not in page.text  # the CSP allows no inline style


def test_the_chart_range_is_chosen_and_bounded(console: Api) -> None:
    loyalty_id = console.program(name="Spring")
    first = TODAY - timedelta(days=6)
    page = console.client.get(f"/console/programs/{loyalty_id}", params={"from": first.isoformat()})
    assert page.status_code == 200 and len(_points(page.text, "attached")) == 7
    too_long = TODAY - timedelta(days=MAX_CHART_DAYS)
    for params, text in (
        ({"from": too_long.isoformat()}, f"at most {MAX_CHART_DAYS} days"),
        ({"from": TODAY.isoformat(), "to": first.isoformat()}, "must not be later"),
        ({"from": "yesterday"}, "give a date"),
    ):
        answer = console.client.get(f"/console/programs/{loyalty_id}", params=params)
        assert answer.status_code == 400 and text in answer.text and 'id="range-error"' in answer.text
        assert len(_points(answer.text, "attached")) == 30  # the default range is drawn instead


# --- generate and export -------------------------------------------------------------------------------------------


def test_generate_from_the_template(console: Api) -> None:
    loyalty_id = console.program(name="Spring", template="G-######")
    token = csrf(console, f"/console/programs/{loyalty_id}")
    answer = console.client.post(f"/console/programs/{loyalty_id}/generate", data={"csrf": token, "count": "25"})
    assert answer.status_code == 200 and "25 codes were generated." in answer.text
    assert console.ok("promocodes/programs/get", loyalty_id=loyalty_id)["stats"]["total"] == 25
    refused = console.client.post(f"/console/programs/{loyalty_id}/generate", data={"csrf": token, "count": "0"})
    assert refused.status_code == 400
    assert console.ok("promocodes/programs/get", loyalty_id=loyalty_id)["stats"]["total"] == 25


def test_export_is_a_csv_download_of_every_code(console: Api) -> None:
    spring, _ = seed(console)
    console.codes(spring, *[f"BULK-{n}" for n in range(2500)])
    sign_in(console.client, console.token_for(Role.READ))
    answer = console.client.get(f"/console/programs/{spring}/export")
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == f'attachment; filename="program-{spring}-codes.csv"'
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert rows[0] == ["code", "attached", "activated"] and len(rows) == 1 + 4 + 2500
    first = {row[0]: row for row in rows[1:5]}
    assert first["SPRING-1"][1] and first["SPRING-1"][2] and first["SPRING-4"][1:] == ["", ""]


# --- import by upload ----------------------------------------------------------------------------------------------


def test_an_upload_imports_in_batches_and_counts_inserted_duplicated_invalid(console: Api) -> None:
    loyalty_id = console.program(name="Spring")
    console.codes(loyalty_id, "CODE-00001")
    lines = [f"CODE-{n:05d}" for n in range(UPLOAD_BATCH + 500)]  # more than one batch
    body = ("code,note\n" + "\n".join(f"{code},x" for code in lines) + '\n"bad\x01code",x\nCODE-00002,again\n').encode()
    token = csrf(console, f"/console/programs/{loyalty_id}")
    answer = upload(console, loyalty_id, body, token)
    assert answer.status_code == 200  # type: ignore[attr-defined]
    counts = dict(re.findall(r'data-count="(\w+)">(\d+)<', answer.text))  # type: ignore[attr-defined]
    assert counts == {"inserted": str(len(lines) - 1), "duplicated": "2", "invalid": "1", "discarded_by_limit": "0",
                      "lines": str(len(lines) + 3)}  # fmt: skip
    assert f"line {len(lines) + 2}:" in answer.text  # type: ignore[attr-defined]
    assert console.ok("promocodes/programs/get", loyalty_id=loyalty_id)["stats"]["total"] == len(lines)
    again = upload(console, loyalty_id, "\n".join(lines).encode(), token, json=True)
    assert again.json() | {"errors": []} == {  # type: ignore[attr-defined]
        "inserted": 0, "duplicated": len(lines), "invalid": 0, "discarded_by_limit": 0, "lines": len(lines),
        "errors": [], "stopped": "",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 40, 400, "not a text file"),
        ("CODE-1\nCODE-2\n".encode("utf-16"), 400, "not a text file"),
        (b"CODE-1\nCODE-\xff\xfe2\n", 400, "Line 2 of the file is not UTF-8"),
        (b"X" * (70 * 1024), 400, "longer than 64 KiB"),
    ],
)
def test_a_bad_file_is_refused_and_changes_nothing(console: Api, body: bytes, status: int, text: str) -> None:
    loyalty_id = console.program(name="Spring")
    token = csrf(console, f"/console/programs/{loyalty_id}")
    answer = upload(console, loyalty_id, body, token)
    assert answer.status_code == status and text in answer.text  # type: ignore[attr-defined]
    as_json = upload(console, loyalty_id, body, token, json=True)
    assert as_json.status_code == status and text in as_json.json()["error"]  # type: ignore[attr-defined]
    assert console.ok("promocodes/programs/get", loyalty_id=loyalty_id)["stats"]["total"] == 0


def test_an_upload_over_the_size_limit_is_refused_before_it_is_read(app_settings: Settings) -> None:
    small = dataclasses.replace(app_settings, max_body_bytes=4096)
    for api in _console(small):
        loyalty_id = api.program(name="Spring")
        token = csrf(api, f"/console/programs/{loyalty_id}")
        answer = upload(api, loyalty_id, b"".join(b"C-%05d\n" % n for n in range(1000)), token)
        assert answer.status_code == 413 and "upload limit" in answer.text  # type: ignore[attr-defined]
        assert api.ok("promocodes/programs/get", loyalty_id=loyalty_id)["stats"]["total"] == 0


def test_an_upload_whose_file_comes_before_the_csrf_field_is_refused(console: Api) -> None:
    loyalty_id = console.program(name="Spring")
    token = csrf(console, f"/console/programs/{loyalty_id}")
    boundary = "xyz"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nA-1\nA-2\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{token}\r\n--{boundary}--\r\n'
    ).encode()
    answer = console.client.post(
        f"/console/programs/{loyalty_id}/import",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert answer.status_code == 403
    assert console.ok("promocodes/programs/get", loyalty_id=loyalty_id)["stats"]["total"] == 0


def test_an_upload_that_is_not_a_form_or_has_no_file_is_refused(console: Api) -> None:
    loyalty_id = console.program(name="Spring")
    token = csrf(console, f"/console/programs/{loyalty_id}")
    raw = console.client.post(
        f"/console/programs/{loyalty_id}/import", content=b"A-1\n", headers={"content-type": "text/csv"}
    )
    assert raw.status_code == 400 and "multipart/form-data" in raw.text
    empty = console.client.post(
        f"/console/programs/{loyalty_id}/import", data={"csrf": token}, files={"other": ("x", b"")}
    )
    assert empty.status_code == 400 and "Choose a file" in empty.text
    assert console.ok("promocodes/programs/get", loyalty_id=loyalty_id)["stats"]["total"] == 0


def test_a_malformed_form_is_refused_and_changes_nothing(console: Api) -> None:
    loyalty_id = console.program(name="Spring")
    token = csrf(console, f"/console/programs/{loyalty_id}")
    body = f'--b\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{token}\r\n--b\r\nbroken\x00header'.encode()
    answer = console.client.post(
        f"/console/programs/{loyalty_id}/import",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert answer.status_code == 400
    assert console.ok("promocodes/programs/get", loyalty_id=loyalty_id)["stats"]["total"] == 0
