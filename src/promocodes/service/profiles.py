"""Databases and profiles, and profile matching (docs/api.md#profile-matching)."""

from __future__ import annotations

import functools
import re
import secrets
import unicodedata
from typing import Any, NamedTuple

from promocodes.domain.fields import field_text
from promocodes.domain.phones import phone_digits
from promocodes.domain.times import format_rfc3339, utcnow
from promocodes.errors import BadRequest, Conflict, NotFound
from promocodes.models import Database, Match, MatchMode, Principal, Profile
from promocodes.schemas import (
    DatabaseCreate,
    DatabaseView,
    ProfileCreated,
    ProfileDelete,
    ProfileImport,
    ProfileRef,
    ProfileSelector,
    ProfileView,
)
from promocodes.service.idempotency import final
from promocodes.store import Store
from promocodes.store.profiles import HeldCode, ProfileData

# The field a mode reads, in the order used to guess the mode when `matching` is omitted.
_MODE_FIELDS = {
    MatchMode.EMAIL: "email",
    MatchMode.PHONE: "phone",
    MatchMode.PROFILE_ID: "profile_id",
    MatchMode.CUSTOM: "field_value",
}
_MODE_FIELDS_ALL = {**_MODE_FIELDS, MatchMode.EMAIL_PROFILE: "email"}

# A custom field's name is an element name in XML answers (docs/api.md#profiles-import), so it must be an XML 1.0 name
# (without ":", which XML reserves for namespaces).
_NAME_START = (
    "A-Z_a-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff\u200c-\u200d"
    "\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd\U00010000-\U000effff"
)
_FIELD_NAME = re.compile(f"[{_NAME_START}][{_NAME_START}\\-.0-9\u00b7\u0300-\u036f\u203f-\u2040]*")


def match_from(selector: ProfileSelector) -> Match:
    """The lookup a request's matching fields describe; every problem is a 400 naming the field.

    ``matching`` defaults to ``email``; when it is omitted and exactly one identifying field is present, that
    field's mode is used (the older Altcraft examples send only ``profile_id``).
    """
    if selector.matching is None:
        present = [mode for mode, field in _MODE_FIELDS.items() if getattr(selector, field) is not None]
        mode = present[0] if len(present) == 1 else MatchMode.EMAIL
    else:
        try:
            mode = MatchMode(selector.matching)
        except ValueError:
            modes = ", ".join(m.value for m in MatchMode)
            raise BadRequest(f"Unknown matching {selector.matching!r}: use one of {modes}") from None
    field = _MODE_FIELDS_ALL[mode]
    raw = getattr(selector, field)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise BadRequest(f"Field `{field}` is required for matching `{mode.value}`")
    if mode is MatchMode.CUSTOM:
        if not selector.field_name:
            raise BadRequest("Field `field_name` is required for matching `custom`")
        return Match(mode=mode, value=field_text(raw), field_name=selector.field_name)
    value = str(raw).strip()
    if mode is MatchMode.PHONE:
        return Match(mode=mode, value=phone_digits(value))
    if mode in (MatchMode.EMAIL, MatchMode.EMAIL_PROFILE):
        return Match(mode=mode, value=value.casefold())
    return Match(mode=mode, value=value.lower())


class ProfileLookup(NamedTuple):
    """A checked profile reference: the database and the match, built before any object is read, so that field
    errors (400) come before missing objects (404), as docs/api.md#order-of-checks orders them."""

    database_id: int
    match: Match


def lookup_from(selector: ProfileSelector) -> ProfileLookup:
    if selector.db_id is None:
        raise BadRequest("Field `db_id` is required to identify a profile")
    return ProfileLookup(selector.db_id, match_from(selector))


def describe(match: Match) -> str:
    if match.mode is MatchMode.CUSTOM:
        return f"{match.field_name} = {match.value!r}"
    return f"{match.mode.value} {match.value!r}"


def profile_view(profile: Profile) -> ProfileView:
    data: dict[str, Any] = {"email": profile.email or "", "phones": profile.phones, **profile.fields}
    return ProfileView(
        profile_id=profile.profile_id,
        db_id=profile.database_id,
        data=data,
        created=format_rfc3339(profile.created),
        updated=format_rfc3339(profile.updated),
    )


class ProfileService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def database(self, principal: Principal, database_id: int) -> Database:
        database = await self.store.get_database(principal.account_id, database_id)
        if database is None:
            raise NotFound(f"Database {database_id} not found")
        return database

    async def resolve(self, principal: Principal, lookup: ProfileLookup) -> Profile:
        """The one profile the lookup names: 404 when none, 409 when several (docs/api.md#profile-matching)."""
        database = await self.database(principal, lookup.database_id)
        found = await self.store.find_profiles(database.id, lookup.match)
        where = f"{describe(lookup.match)} in database {database.id}"
        if not found:
            raise NotFound(f"Profile not found: no profile with {where}")
        if len(found) > 1:
            raise Conflict(f"Several profiles match {where}; use profile_id")
        return found[0]

    # --- databases ----------------------------------------------------------------------------------------------

    async def create_database(self, principal: Principal, request: DatabaseCreate) -> DatabaseView:
        name = request.name.strip()
        if not name:
            raise BadRequest("Field `name` must not be empty")
        answer = final(_database_view)
        return answer(await self.store.create_database(principal.account_id, name, utcnow()))

    async def list_databases(self, principal: Principal) -> list[DatabaseView]:
        return [_database_view(database) for database in await self.store.list_databases(principal.account_id)]

    # --- profiles -----------------------------------------------------------------------------------------------

    async def import_profile(self, principal: Principal, request: ProfileImport) -> ProfileCreated:
        """Create the profile the selector names, or update the one it matches: given keys replace stored ones,
        a custom field set to null is removed. The look-up and the write are one store operation (serialised on
        the key), so concurrent imports of one new key create one profile."""
        match = match_from(request)
        email, phones, fields = _profile_data(request.data)
        database = await self.database(principal, request.db_id)

        def build(found: list[Profile]) -> ProfileData:
            """The data to write, given what the match finds now (called inside the store's transaction)."""
            if len(found) > 1:
                raise Conflict(f"Several profiles match {describe(match)} in database {database.id}; use profile_id")
            existing = found[0] if found else None
            new_email, new_phones, new_fields = email, phones, dict(fields)
            if existing is None:
                if match.mode is MatchMode.PROFILE_ID:
                    raise NotFound(f"Profile not found: profile ids are assigned by the server ({describe(match)})")
                # The identifying value becomes part of the new profile, so the same request finds it next time.
                if match.mode in (MatchMode.EMAIL, MatchMode.EMAIL_PROFILE) and new_email is None:
                    new_email = str(request.email).strip()
                if match.mode is MatchMode.PHONE and new_phones is None:
                    new_phones = [str(request.phone)]
                if match.mode is MatchMode.CUSTOM and match.field_name not in new_fields:
                    _check_field_name(str(match.field_name))
                    new_fields[str(match.field_name)] = request.field_value
            merged = {**(existing.fields if existing else {}), **new_fields}
            if existing is not None:
                new_email = existing.email if new_email is None else new_email
                new_phones = existing.phones if new_phones is None else new_phones
            return ProfileData(
                profile_id=existing.profile_id if existing else _new_profile_id(),
                email=new_email or None,
                phones=[(phone, phone_digits(phone)) for phone in new_phones or []],
                fields={name: value for name, value in merged.items() if value is not None},
            )

        answer = final(_profile_created)
        return answer(await self.store.upsert_profile(database.id, match, build, utcnow()))

    async def get_profile(self, principal: Principal, request: ProfileRef) -> ProfileView:
        return profile_view(await self.resolve(principal, lookup_from(request)))

    async def profile_and_codes(
        self, principal: Principal, request: ProfileRef, limit: int
    ) -> tuple[ProfileView, list[HeldCode]]:
        """The profile the request names (as :meth:`get_profile`) and the codes it holds, the latest bound first,
        at most ``limit`` of them: the console's profile page (docs/console.md#profiles). Two reads, no write: a code
        bound or released between them shows as it was at the second."""
        profile = await self.resolve(principal, lookup_from(request))
        return profile_view(profile), await self.store.profile_codes(profile.pk, limit)

    async def delete_profile(self, principal: Principal, request: ProfileDelete) -> None:
        profile = await self.resolve(principal, lookup_from(request))
        answer = final(functools.partial(_profile_deleted, profile.profile_id, request.force))
        # A forced delete releases the profile's codes: each records `detached` in its history (docs/api.md#history).
        answer(await self.store.delete_profile(profile.pk, request.force, utcnow(), actor=principal.actor))


# The answers of the writes to the store's results. Pure: each also runs inside the store's transaction, to keep the
# answer of a request with an idempotency key (docs/api.md#idempotent-retries).


def _database_view(database: Database) -> DatabaseView:
    return DatabaseView(id=database.id, name=database.name)


def _profile_created(profile: Profile) -> ProfileCreated:
    return ProfileCreated(profile_id=profile.profile_id)


def _profile_deleted(profile_id: str, force: bool, deleted: bool) -> None:
    if deleted:
        return
    if force:
        raise Conflict(
            f"Profile {profile_id} holds activated promo codes, which are records of redemptions "
            "and are never released; it cannot be deleted"
        )
    raise Conflict(f"Profile {profile_id} still holds promo codes; pass force: true to delete it")


def _check_field_name(name: str) -> None:
    if not _FIELD_NAME.fullmatch(name):
        raise BadRequest(
            f"Custom field name {name!r} is not usable: start with a letter or `_`, then letters, digits, `_`, `-` "
            "or `.` (it becomes an element name in XML answers)"
        )


def _check_text(field: str, value: str | None) -> None:
    """Control characters (Unicode Cc, NUL included) are refused in profile data: PostgreSQL cannot store NUL in
    text at all, and SQLite would keep what PostgreSQL refuses; both adapters must answer alike (a 400)."""
    if value is not None and any(unicodedata.category(char) == "Cc" for char in value):
        raise BadRequest(f"Field `{field}` must not contain control characters")


def _new_profile_id() -> str:
    return secrets.token_hex(12)  # 24 lower-case hex characters, like Altcraft's ids


def _profile_data(data: dict[str, Any]) -> tuple[str | None, list[str] | None, dict[str, Any]]:
    """Split a profile's ``data`` into email, phones and custom fields, checking each type (400 on a bad one)."""
    email = data.get("email")
    if email is not None and not isinstance(email, str):
        raise BadRequest("Field `data.email` must be a string")
    _check_text("data.email", email)
    phones = data.get("phones")
    if isinstance(phones, str):
        phones = [phones]  # XML sends a single <phones> element as text
    if phones is not None and not (isinstance(phones, list) and all(isinstance(p, str) for p in phones)):
        raise BadRequest("Field `data.phones` must be an array of strings")
    for phone in phones or []:
        _check_text("data.phones", phone)
    fields: dict[str, Any] = {}
    for name, value in data.items():
        if name in ("email", "phones"):
            continue
        _check_field_name(name)
        if value is not None and not isinstance(value, str | int | float | bool):
            raise BadRequest(f"Field `data.{name}` must be a string, number or boolean")
        if isinstance(value, str):
            _check_text(f"data.{name}", value)
        fields[name] = value
    for phone in phones or []:
        phone_digits(phone)
    return email, phones, fields
