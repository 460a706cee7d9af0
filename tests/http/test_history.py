"""`promocodes/history` (docs/api.md#history) through the whole application, on both adapters: what each method
records, in which fields, under which token's name; what refused calls leave (nothing); paging; look-up like `get`."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from promocodes.models import Role
from tests.helpers import Api, count_rows
from tests.http.helpers import error_of, post, post_json, xml_root

RFC3339_UTC = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")
EVENT_KEYS = ["id", "time", "event", "profile_id", "database_id", "token_name", "details"]


def named_token(api: Api, role: str, name: str) -> str:
    token: str = api.ok("tokens/create", role=role, name=name)["token"]
    return token


def history(api: Api, loyalty_id: int, code: str, token: str | None = None, **fields: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = api.ok("promocodes/history", token, loyalty_id=loyalty_id, code=code, **fields)
    return events


def brief(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each event without its id and time (which differ on every run)."""
    return [(e["event"], e["profile_id"], e["database_id"], e["token_name"], e["details"]) for e in events]


def test_every_change_is_an_event_naming_its_token(api: Api) -> None:
    till = named_token(api, "write", "till 1")
    auditor = named_token(api, "read", "auditor")
    loyalty_id = api.program()
    api.ok("promocodes/import", till, loyalty_id=loyalty_id, codes=["A", "B"])
    db_id = api.database()
    ann = api.profile(db_id, "ann@example.org")
    who = {"db_id": db_id, "email": "ann@example.org"}

    api.ok("promocodes/attach", till, loyalty_id=loyalty_id, code="A", **who)
    api.ok("promocodes/activate", till, loyalty_id=loyalty_id, code="A")
    api.ok("promocodes/update", till, loyalty_id=loyalty_id, code="A", activated=False)
    api.ok("promocodes/update", till, loyalty_id=loyalty_id, code="A", expire_date="2030-01-01T00:00:00+03:00")
    api.ok("promocodes/update", till, loyalty_id=loyalty_id, code="A", expire_date="")
    api.ok("promocodes/detach", till, loyalty_id=loyalty_id, code="A", **who)

    events = history(api, loyalty_id, "A", auditor)  # a read token may read the history
    assert all(list(event) == EVENT_KEYS for event in events)
    assert all(RFC3339_UTC.match(event["time"]) for event in events)
    assert [event["id"] for event in events] == sorted({event["id"] for event in events})
    assert brief(events) == [
        ("created", "", None, "till 1", {"source": "import", "count": 2}),
        ("attached", ann, db_id, "till 1", {}),
        ("activated", ann, db_id, "till 1", {}),
        ("deactivated", ann, db_id, "till 1", {}),
        ("expiry_changed", "", None, "till 1", {"old": None, "new": "2029-12-31T21:00:00Z"}),
        ("expiry_changed", "", None, "till 1", {"old": "2029-12-31T21:00:00Z", "new": None}),
        ("detached", ann, db_id, "till 1", {}),
    ]
    # The import's one `created` event is shared by the codes it created.
    assert history(api, loyalty_id, "B") == events[:1]


def test_refused_changes_record_nothing(api: Api) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "A")
    db_id = api.database()
    api.profile(db_id, "ann@example.org")
    api.profile(db_id, "bob@example.org")
    api.ok("promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email="ann@example.org")
    api.ok("promocodes/activate", loyalty_id=loyalty_id, code="A")
    before = history(api, loyalty_id, "A")

    refusals = [
        ("promocodes/activate", {"code": "A"}),  # a second activation
        ("promocodes/detach", {"code": "A", "db_id": db_id, "email": "ann@example.org"}),  # an activated code
        ("promocodes/attach", {"db_id": db_id, "email": "bob@example.org"}),  # no free code left
        ("promocodes/attach", {"code": "A", "db_id": db_id, "email": "bob@example.org"}),  # someone else's
        ("promocodes/update", {"code": "A", "activated": True, "expire_date": "2030-01-01T00:00:00Z"}),
    ]
    for method, fields in refusals:
        assert api.call(method, loyalty_id=loyalty_id, **fields)["error"] == 409, method
    api.ok("promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email="ann@example.org", code="A")  # unchanged

    assert history(api, loyalty_id, "A") == before


def test_an_update_doing_two_things_records_two_events(api: Api) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "A")
    db_id = api.database()
    api.profile(db_id, "ann@example.org")
    api.ok("promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email="ann@example.org", code="A")
    api.ok("promocodes/update", loyalty_id=loyalty_id, code="A", activated=True, expire_date="2030-01-01T00:00:00Z")

    changes = [(event["event"], event["details"]) for event in history(api, loyalty_id, "A")[2:]]
    assert changes == [("expiry_changed", {"old": None, "new": "2030-01-01T00:00:00Z"}), ("activated", {})]


def test_codes_made_on_attach_record_their_creation(api: Api) -> None:
    till = named_token(api, "write", "till 2")
    loyalty_id = api.program(template="G-####", generate_on_attach=True)
    db_id = api.database()
    ann = api.profile(db_id, "ann@example.org")
    who = {"db_id": db_id, "email": "ann@example.org"}
    named = api.ok("promocodes/attach", till, loyalty_id=loyalty_id, code="NEW-1", **who)["code"]
    generated = api.ok("promocodes/attach", till, loyalty_id=loyalty_id, **who)["code"]

    for code in (named, generated):
        assert brief(history(api, loyalty_id, code)) == [
            ("created", "", None, "till 2", {"source": "attach"}),
            ("attached", ann, db_id, "till 2", {}),
        ]


def test_paging_with_limit_and_after(api: Api) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "A")
    db_id = api.database()
    api.profile(db_id, "ann@example.org")
    who = {"loyalty_id": loyalty_id, "code": "A", "db_id": db_id, "email": "ann@example.org"}
    for _ in range(50):
        api.ok("promocodes/attach", **who)
        api.ok("promocodes/detach", **who)

    everything = history(api, loyalty_id, "A", limit=1000)
    assert len(everything) == 101
    assert history(api, loyalty_id, "A") == everything[:100]  # 100 by default
    assert history(api, loyalty_id, "A", after=everything[99]["id"]) == everything[100:]
    assert history(api, loyalty_id, "A", limit=2, after=everything[0]["id"]) == everything[1:3]
    assert history(api, loyalty_id, "A", limit="1", after=str(everything[-2]["id"])) == everything[-1:]
    assert history(api, loyalty_id, "A", after=everything[-1]["id"]) == []


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"after": -1}, "after"),
        ({"code": ""}, "code"),
        ({"code": None}, "code"),
    ],
)
def test_bad_fields_are_400_naming_the_field(api: Api, fields: dict[str, Any], named: str) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "A")
    error, text = error_of(post_json(api, "promocodes/history", {"loyalty_id": loyalty_id, "code": "A", **fields}))
    assert error == 400 and named in text, text


def test_unknown_code_or_program_is_404(api: Api) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "A")
    other = named_token(api, "admin", "other")  # of the same account: the program is found, the code is not
    assert api.call("promocodes/history", other, loyalty_id=loyalty_id, code="NOPE")["error"] == 404
    assert api.call("promocodes/history", loyalty_id=loyalty_id + 1000, code="A")["error"] == 404
    stranger = api.token_for(Role.ADMIN, account="elsewhere")
    assert api.call("promocodes/history", stranger, loyalty_id=loyalty_id, code="A")["error"] == 404


def test_no_token_is_401(api: Api) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "A")
    answer = post_json(api, "promocodes/history", {"loyalty_id": loyalty_id, "code": "A"}, token=None)
    assert error_of(answer)[0] == 401


def test_a_case_insensitive_program_finds_the_code_in_any_case(api: Api) -> None:
    loyalty_id = api.program(case_sensitive=False)
    api.codes(loyalty_id, "Spring-1")
    assert [event["event"] for event in history(api, loyalty_id, "SPRING-1")] == ["created"]
    assert history(api, loyalty_id, " spring-1 ") == history(api, loyalty_id, "Spring-1")


def test_a_deleted_profile_keeps_its_ids_in_the_history(api: Api) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "A", "B")
    db_id = api.database()
    ann = api.profile(db_id, "ann@example.org")
    who = {"loyalty_id": loyalty_id, "db_id": db_id, "email": "ann@example.org"}
    api.ok("promocodes/attach", code="A", **who)
    api.ok("promocodes/detach", code="A", **who)
    api.ok("promocodes/attach", code="B", **who)

    api.ok("profiles/delete", db_id=db_id, email="ann@example.org", force=True)  # releases B

    assert brief(history(api, loyalty_id, "A"))[1:] == [
        ("attached", ann, db_id, "", {}),
        ("detached", ann, db_id, "", {}),
    ]
    assert brief(history(api, loyalty_id, "B"))[1:] == [
        ("attached", ann, db_id, "", {}),
        ("detached", ann, db_id, "", {"reason": "profile deleted"}),
    ]


def test_an_xml_answer_shows_empty_fields_as_empty_elements(api: Api) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "A")
    api.ok("promocodes/update", loyalty_id=loyalty_id, code="A", expire_date="2030-01-01T00:00:00Z")
    root = xml_root(post_json(api, "promocodes/history", {"loyalty_id": loyalty_id, "code": "A", "format": "xml"}))

    created, changed = root.findall("data")
    assert [child.tag for child in created] == sorted(EVENT_KEYS)
    assert (created.findtext("profile_id"), created.findtext("database_id")) == ("", "")
    assert details(created) == [("count", "1"), ("source", "import")]
    assert details(changed) == [("new", "2030-01-01T00:00:00Z"), ("old", None)]


def details(event: ET.Element) -> list[tuple[str, str | None]]:
    found = event.find("details")
    assert found is not None
    return [(child.tag, child.text) for child in found]


def test_an_xml_request_is_answered(api: Api) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "A")
    body = f"<xml><loyalty_id>{loyalty_id}</loyalty_id><code>A</code><limit>5</limit></xml>"
    answer = post(api, "promocodes/history", body, content_type="application/xml")
    assert [event["event"] for event in answer.json()["data"]] == ["created"]


def test_generated_codes_share_one_created_event_of_their_request(api: Api) -> None:
    generator = named_token(api, "write", "nightly batch")
    loyalty_id = api.program()
    first = api.ok(
        "promocodes/generate", generator, loyalty_id=loyalty_id, count=3, template="G-####", return_codes=True
    )
    second = api.ok(
        "promocodes/generate", generator, loyalty_id=loyalty_id, count=2, template="H-####", return_codes=True
    )
    [created] = history(api, loyalty_id, first["codes"][0])
    assert brief([created]) == [("created", "", None, "nightly batch", {"source": "generate", "count": 3})]
    assert all(history(api, loyalty_id, code) == [created] for code in first["codes"])
    [other] = history(api, loyalty_id, second["codes"][1])
    assert other["id"] > created["id"] and other["details"] == {"source": "generate", "count": 2}


def test_a_refused_generation_records_no_event(api: Api) -> None:
    loyalty_id = api.program(codes_limit=2)
    assert api.call("promocodes/generate", loyalty_id=loyalty_id, count=3, template="G-####")["error"] == 402
    assert asyncio.run(count_rows(api.database_url, "code_events")) == 0  # not even an event that names no code
