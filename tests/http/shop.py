"""A shop for the end-to-end API tests: a program with a database of three profiles, driven through the HTTP API (so
every test runs on both adapters through the ``api`` fixture)."""

from __future__ import annotations

from typing import Any

from tests.helpers import Api

PAST = "2000-01-01T00:00:00Z"
FUTURE = "2999-01-01T00:00:00Z"
ANN, BOB, CAROL = "ann@example.org", "bob@example.org", "carol@example.org"


class Shop:
    """One program (created with ``settings``, holding ``codes``) and one database with the profiles ann, bob
    and carol. Every call fills in ``loyalty_id``; the profile-facing ones also ``db_id``."""

    def __init__(self, api: Api, *codes: str, **settings: Any) -> None:
        self.api = api
        self.loyalty_id = api.program(**settings)
        if codes:
            api.codes(self.loyalty_id, *codes)
        self.db_id = api.database()
        self.profile_ids = {email: api.profile(self.db_id, email) for email in (ANN, BOB, CAROL)}

    # --- raw calls --------------------------------------------------------------------------------------------

    def call(self, method: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("loyalty_id", self.loyalty_id)
        return self.api.call(f"promocodes/{method}", **fields)

    def ok(self, method: str, **fields: Any) -> Any:
        body = self.call(method, **fields)
        assert body["error"] == 0, body
        assert body["error_text"] == "Successful operation", body
        return body["data"]

    def refused(self, method: str, error: int, text: str | None = None, **fields: Any) -> str:
        """Call, assert the request-level error (and that ``text`` is part of its text); return the text."""
        body = self.call(method, **fields)
        assert body["error"] == error, body
        assert body["data"] is None, body
        if text is not None:
            assert text in body["error_text"], body
        return str(body["error_text"])

    # --- the usual steps --------------------------------------------------------------------------------------

    def import_codes(self, *codes: str) -> dict[str, Any]:
        body = self.call("import", codes=list(codes))
        assert body["error"] == 0, body
        return body

    def get(self, code: str) -> dict[str, Any]:
        data: dict[str, Any] = self.ok("get", code=code)
        return data

    def who(self, email: str) -> dict[str, Any]:
        """The matching fields naming one of the shop's profiles."""
        return {"db_id": self.db_id, "email": email}

    def attach(self, email: str, code: str | None = None) -> str:
        """Attach (the named code, or one from the pool) to the profile; return the bound code."""
        extra = {} if code is None else {"code": code}
        data = self.ok("attach", **self.who(email), **extra)
        assert set(data) == {"code"}, data
        bound: str = data["code"]
        return bound

    def attach_call(self, email: str, code: str | None = None) -> dict[str, Any]:
        extra = {} if code is None else {"code": code}
        return self.call("attach", **self.who(email), **extra)

    def activate(self, code: str, **fields: Any) -> None:
        assert self.ok("activate", code=code, **fields) is None

    def expire(self, code: str, when: str | None = PAST) -> None:
        assert self.ok("update", code=code, expire_date=when) is None

    def program_update(self, **settings: Any) -> None:
        self.ok("programs/update", **settings)

    def export(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.ok("export_all")
        return data
