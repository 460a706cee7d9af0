"""Records that travel between the layers. Plain, typed and immutable; no behaviour beyond derived flags."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import msgspec


class Role(enum.StrEnum):
    ADMIN = "admin"
    WRITE = "write"
    READ = "read"


class Capability(enum.Enum):
    """What an endpoint needs; each role grants a fixed set of these (docs/api.md#roles)."""

    READ_CODES = "read codes"
    WRITE_CODES = "change codes"
    READ_PROFILES = "read profiles"
    WRITE_PROFILES = "change profiles"
    READ_CATALOG = "read programs and databases"
    MANAGE = "manage programs, databases and tokens"


ROLE_CAPABILITIES: dict[Role, frozenset[Capability]] = {
    Role.ADMIN: frozenset(Capability),
    Role.WRITE: frozenset(Capability) - {Capability.MANAGE},
    Role.READ: frozenset({Capability.READ_CODES, Capability.READ_PROFILES, Capability.READ_CATALOG}),
}


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the account every object is scoped to, and the role of the token used."""

    account_id: int
    role: Role
    token_id: int | None = None  # None for the command line, which acts as the account's administrator


class Program(msgspec.Struct, frozen=True):
    """A loyalty program (docs/api.md#program-settings): the container a `loyalty_id` names."""

    id: int
    account_id: int
    name: str
    short_name: str
    description: str
    active: bool
    valid_from: datetime | None
    valid_to: datetime | None
    multiple_usage: bool
    case_sensitive: bool
    codes_limit: int | None
    create_on_attach: bool
    template: str | None
    generate_on_attach: bool
    one_code_per_profile: bool
    created: datetime

    def issuing_allowed(self, now: datetime) -> bool:
        """Attach (which hands codes out) needs an active program inside its validity range (docs/api.md#attach)."""
        if not self.active:
            return False
        if self.valid_from is not None and now < self.valid_from:
            return False
        return self.valid_to is None or now <= self.valid_to


# The settings a program is created or updated with; every field optional so that one struct serves both.
PROGRAM_SETTINGS = (
    "name",
    "short_name",
    "description",
    "active",
    "valid_from",
    "valid_to",
    "multiple_usage",
    "case_sensitive",
    "codes_limit",
    "create_on_attach",
    "template",
    "generate_on_attach",
    "one_code_per_profile",
)


class ProgramStats(msgspec.Struct, frozen=True):
    """Overlapping counts, as a user reads them (docs/api.md#program-statistics)."""

    total: int
    free: int
    attached: int
    activated: int
    expired: int


class Binding(msgspec.Struct, frozen=True):
    """One code bound to one profile."""

    profile_pk: int
    profile_id: str
    database_id: int
    attached: datetime
    activated: datetime | None


class CodeState(msgspec.Struct, frozen=True):
    """A code with what `get` and the rules need to know about its bindings."""

    id: int
    code: str
    program_id: int
    created: datetime
    expire_date: datetime | None
    attached_count: int
    activated_count: int
    last_activated: datetime | None
    latest: Binding | None  # the most recent binding (the only one for a personal code)
    own: Binding | None  # the binding of the profile the caller named, when one was named

    def is_expired(self, now: datetime) -> bool:
        return self.expire_date is not None and self.expire_date <= now


class ExportedCode(msgspec.Struct, frozen=True):
    id: int
    code: str
    attached: datetime | None
    activated: datetime | None


class ImportOutcome(msgspec.Struct, frozen=True):
    """What the store did with a batch: the keys it inserted, and how many leading items it considered before the
    program's limit was reached (the items after them are discarded by the limit)."""

    inserted: frozenset[str]
    considered: int


class Database(msgspec.Struct, frozen=True):
    id: int
    name: str
    created: datetime


class Profile(msgspec.Struct, frozen=True):
    pk: int
    database_id: int
    profile_id: str
    email: str | None
    phones: list[str]
    fields: dict[str, Any]
    created: datetime
    updated: datetime


class MatchMode(enum.StrEnum):
    EMAIL = "email"
    EMAIL_PROFILE = "email_profile"
    PHONE = "phone"
    PROFILE_ID = "profile_id"
    CUSTOM = "custom"


class Match(msgspec.Struct, frozen=True):
    """A resolved profile lookup: the mode and the already-normalised value to compare with."""

    mode: MatchMode
    value: str
    field_name: str | None = None


class TokenInfo(msgspec.Struct, frozen=True):
    id: int
    account_id: int
    name: str
    role: Role
    created: datetime
    revoked: datetime | None


class Outcome(enum.Enum):
    """What a conditional write on a code did, or the fact that stopped it (the service turns facts into errors)."""

    DONE = "done"
    UNCHANGED = "unchanged"  # already in the asked-for state: attach to its own profile, deactivate an unused code
    NO_CODE = "no such code"
    NOT_ATTACHED = "not attached"
    ATTACHED_ELSEWHERE = "attached to another profile"
    SEVERAL_PROFILES = "attached to several profiles"
    ALREADY_ACTIVATED = "already activated"
    EXPIRED = "expired"
    LIMIT_REACHED = "program limit reached"
