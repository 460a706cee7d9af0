"""Managing webhooks through the HTTP API (docs/api.md#webhooks-create and the sections after it), on both
adapters: validation (400 naming the field, nothing changed), the secret shown once, ids never reused, and the
deliveries a webhook is owed. Roles and other accounts are in ``test_auth.py``; delivery itself in
``test_webhook_delivery.py``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Api

URL = "https://shop.example/hooks"


def create(api: Api, **fields: Any) -> dict[str, Any]:
    created: dict[str, Any] = api.ok("webhooks/create", **{"url": URL, "events": ["code.activated"], **fields})
    return created


def test_create_answers_the_secret_once_and_list_never(api: Api) -> None:
    created = create(api, events=["code.attached", "program.pool_low", "code.attached"], description=" Shop ")
    assert list(created) == ["id", "url", "events", "description", "active", "created", "secret"]
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert (created["url"], created["events"], created["description"], created["active"]) == (
        URL,
        ["code.attached", "program.pool_low"],
        "Shop",
        True,
    )
    (listed,) = api.ok("webhooks/list")
    assert listed == {key: value for key, value in created.items() if key != "secret"}
    assert create(api)["secret"] != created["secret"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"url": "ftp://shop.example/x"}, "url"),
        ({"url": "shop.example/hooks"}, "url"),
        ({"url": "http://"}, "url"),
        ({"url": "https://shop.example/a b"}, "url"),
        ({"url": "https://shop.example:99999/"}, "url"),
        ({"url": "https://shop.example/\x00"}, "url"),
        ({"events": []}, "events"),
        ({"events": ["code.created"]}, "events"),
        ({"events": "code.activated"}, "events"),
        ({"url": None}, "url"),
    ],
)
def test_create_refuses_bad_fields_with_400_and_changes_nothing(api: Api, fields: dict[str, Any], named: str) -> None:
    body = api.call("webhooks/create", **{"url": URL, "events": ["code.activated"], **fields})
    assert body["error"] == 400 and f"`{named}`" in body["error_text"], body
    assert api.ok("webhooks/list") == []


def test_url_and_events_are_required(api: Api) -> None:
    assert api.call("webhooks/create", events=["code.activated"])["error"] == 400
    assert api.call("webhooks/create", url=URL)["error"] == 400


def test_update_changes_what_is_given_and_validates_it(api: Api) -> None:
    created = create(api)
    updated = api.ok("webhooks/update", id=created["id"], events=["code.detached", "code.attached"], active=False)
    assert (updated["events"], updated["active"], updated["url"]) == (["code.attached", "code.detached"], False, URL)
    assert "secret" not in updated
    assert (
        api.ok("webhooks/update", id=created["id"], url="http://10.0.0.5:8080/in")["url"] == "http://10.0.0.5:8080/in"
    )
    before = api.ok("webhooks/list")
    for fields in ({"url": "mailto:x@example.org"}, {"events": []}, {"events": ["nope"]}, {}):
        body = api.call("webhooks/update", id=created["id"], **fields)
        assert body["error"] == 400, body
    assert api.ok("webhooks/list") == before
    assert api.call("webhooks/update", id=created["id"] + 1, active=True)["error"] == 404


def test_delete_and_ids_never_reused(api: Api) -> None:
    first = create(api)
    second = create(api)
    assert api.ok("webhooks/delete", id=second["id"]) is None
    assert api.call("webhooks/delete", id=second["id"])["error"] == 404
    third = create(api)
    assert third["id"] > second["id"] > first["id"]
    assert [hook["id"] for hook in api.ok("webhooks/list")] == [first["id"], third["id"]]


def test_deliveries_list_what_a_webhook_is_owed_newest_first(api: Api) -> None:
    created = create(api, events=["code.attached", "code.activated"])
    loyalty_id = api.program()
    api.codes(loyalty_id, "A-1", "A-2")
    db_id = api.database()
    api.profile(db_id, "ann@example.org")
    for code in ("A-1", "A-2"):
        api.ok("promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email="ann@example.org", code=code)
    api.ok("promocodes/activate", loyalty_id=loyalty_id, code="A-1")
    deliveries = api.ok("webhooks/deliveries", id=created["id"])
    assert [(item["type"], item["state"], item["attempts"]) for item in deliveries] == [
        ("code.activated", "pending", 0),
        ("code.attached", "pending", 0),
        ("code.attached", "pending", 0),
    ]
    assert list(deliveries[0]) == [
        "id",
        "event_id",
        "type",
        "state",
        "attempts",
        "next_attempt",
        "last_status",
        "last_error",
        "created",
        "finished",
    ]
    assert len(api.ok("webhooks/deliveries", id=created["id"], limit=1)) == 1
    for limit in (0, 101):
        assert api.call("webhooks/deliveries", id=created["id"], limit=limit)["error"] == 400
    assert api.call("webhooks/deliveries", id=created["id"] + 1)["error"] == 404


def test_a_refused_change_owes_nothing(api: Api) -> None:
    created = create(api, events=["code.activated", "code.attached"])
    loyalty_id = api.program()
    api.codes(loyalty_id, "FREE-1")
    assert api.call("promocodes/activate", loyalty_id=loyalty_id, code="FREE-1")["error"] == 409  # not attached
    assert api.call("promocodes/activate", loyalty_id=loyalty_id, code="NOPE")["error"] == 404
    assert api.ok("webhooks/deliveries", id=created["id"]) == []
