"""Records that travel between the layers. Plain, typed and immutable; no behaviour beyond derived flags."""

from __future__ import annotations

import enum
import typing
from datetime import date, datetime
from typing import Annotated, Any

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
    MANAGE = "manage programs, databases, tokens and webhooks"

    @property
    def writes(self) -> bool:
        """Whether a method needing this capability may change something (the others only read)."""
        return self not in _READ_ONLY


_READ_ONLY = frozenset({Capability.READ_CODES, Capability.READ_PROFILES, Capability.READ_CATALOG})

ROLE_CAPABILITIES: dict[Role, frozenset[Capability]] = {
    Role.ADMIN: frozenset(Capability),
    Role.WRITE: frozenset(Capability) - {Capability.MANAGE},
    Role.READ: _READ_ONLY,
}


#: the name the command line acts under in a code's history (docs/api.md#history): it holds no token
COMMAND_LINE = "command line"


class Actor(msgspec.Struct, frozen=True):
    """Who made a change, as a code's history records it (docs/api.md#history): the token's id (None for the
    command line) and its name, copied into each event so that it outlives the token."""

    token_id: int | None
    token_name: str


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the account every object is scoped to, the role of the token used, and its id and name."""

    account_id: int
    role: Role
    token_id: int | None = None  # None for the command line, which acts as the account's administrator
    token_name: str = COMMAND_LINE

    @property
    def actor(self) -> Actor:
        """The caller as the history records it."""
        return Actor(token_id=self.token_id, token_name=self.token_name)


def _setting(description: str, **extra: Any) -> msgspec.Meta:
    """One program setting's description (the OpenAPI document and `program --help` show it), and what a layer
    needs beyond the type: ``prose`` (control characters of prose allowed), ``flag`` (the command-line switch)."""
    return msgspec.Meta(description=description, extra=extra)


class ProgramSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of a program, declared once (docs/api.md#program-settings): its type, its default and what it
    means. The request and answer structs, the store's row mapping, the service's parsing and the command-line
    options are all made from this declaration, so a new setting is a field here, a migration and a test.

    A field without a default is required by programs/create. Types the layers understand: ``str``, ``bool``,
    ``int | None`` (a count, ``null`` for none), ``str | None`` (``""`` clears) and ``datetime | None``."""

    name: Annotated[str, _setting("Program name; must not be empty.")]
    short_name: Annotated[str, _setting("Name used in templates; no white space.")] = ""
    description: Annotated[str, _setting("Free text; may hold tab, line feed and carriage return.", prose=True)] = ""
    active: Annotated[bool, _setting("Whether codes may be attached and used.", flag="--active/--inactive")] = True
    valid_from: Annotated[datetime | None, _setting('RFC 3339 time the program starts; "" for none.')] = None
    valid_to: Annotated[datetime | None, _setting('RFC 3339 time the program ends; "" for none.')] = None
    multiple_usage: Annotated[bool, _setting("Codes may be bound to many profiles.")] = False
    case_sensitive: Annotated[bool, _setting("Compare codes exactly (else by case fold).")] = True
    codes_limit: Annotated[int | None, _setting("Most codes the program may hold; none means no limit.")] = None
    create_on_attach: Annotated[bool, _setting("Attaching an unknown code creates it.")] = True
    template: Annotated[str | None, _setting('Generation pattern: # digit, @ letter, ? either; "" for none.')] = None
    generate_on_attach: Annotated[bool, _setting("Generate a code when the pool is empty.")] = False
    one_code_per_profile: Annotated[bool, _setting("A profile holds at most one code.")] = False
    pool_low_threshold: Annotated[
        int | None,
        _setting("Free codes below which a `program.pool_low` webhook fires; none for never."),
    ] = None


class Program(ProgramSettings, frozen=True, kw_only=True):
    """A loyalty program (docs/api.md#program-settings): the container a `loyalty_id` names."""

    id: int
    account_id: int
    created: datetime

    def issuing_allowed(self, now: datetime) -> bool:
        """Attach (which hands codes out) needs an active program inside its validity range (docs/api.md#attach)."""
        if not self.active:
            return False
        if self.valid_from is not None and now < self.valid_from:
            return False
        return self.valid_to is None or now <= self.valid_to


class Setting(msgspec.Struct, frozen=True):
    """One program setting as the other layers read it: ``kind`` is the type without ``None`` (``str``, ``bool``,
    ``int`` or ``datetime``), ``optional`` whether ``None`` is a value, ``required`` whether create needs it."""

    name: str
    kind: type
    optional: bool
    required: bool
    default: Any
    description: str
    extra: dict[str, Any]


def _settings() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(ProgramSettings, include_extras=True)
    settings = []
    for field in msgspec.structs.fields(ProgramSettings):
        declared, meta = typing.get_args(hints[field.name])
        kinds = [kind for kind in typing.get_args(declared) or (declared,) if kind is not type(None)]
        assert len(kinds) == 1, f"program setting {field.name}: one type, optionally with None"
        settings.append(
            Setting(
                name=field.name,
                kind=kinds[0],
                optional=kinds[0] is not declared,
                required=field.required,
                default=None if field.required else field.default,
                description=meta.description,
                extra=dict(meta.extra or {}),
            )
        )
    return tuple(settings)


SETTINGS: tuple[Setting, ...] = _settings()
# The names alone, in declaration order (which is the order program answers show them in).
PROGRAM_SETTINGS: tuple[str, ...] = ProgramSettings.__struct_fields__


class ProgramStats(msgspec.Struct, frozen=True):
    """Overlapping counts, as a user reads them (docs/api.md#program-statistics)."""

    total: int
    free: int
    attached: int
    activated: int
    expired: int


class ProgramDay(msgspec.Struct, frozen=True):
    """One UTC day of a program's counters (docs/console.md#one-program): codes created, first bound, released,
    first activated and last deactivated that day."""

    day: date
    created: int = 0
    attached: int = 0
    detached: int = 0
    activated: int = 0
    deactivated: int = 0


class ProgramHistory(msgspec.Struct, frozen=True):
    """A program's counters over a range of days: ``before`` sums every day before the first (its ``day`` is the
    day before the range), ``days`` has one entry per day of the range, in order, zeros included."""

    before: ProgramDay
    days: list[ProgramDay]


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


class CodeEventKind(enum.StrEnum):
    """What happened to a code (docs/api.md#history)."""

    CREATED = "created"
    ATTACHED = "attached"
    ACTIVATED = "activated"
    DEACTIVATED = "deactivated"
    DETACHED = "detached"
    EXPIRY_CHANGED = "expiry_changed"
    #: a program event (no code): the program's free codes fell below its ``pool_low_threshold``
    #: (docs/api.md#webhooks); never part of a code's history
    POOL_LOW = "pool_low"


class WebhookEventType(enum.StrEnum):
    """What a webhook may subscribe to (docs/api.md#webhooks)."""

    CODE_ATTACHED = "code.attached"
    CODE_ACTIVATED = "code.activated"
    CODE_DEACTIVATED = "code.deactivated"
    CODE_DETACHED = "code.detached"
    CODE_EXPIRY_CHANGED = "code.expiry_changed"
    PROGRAM_POOL_LOW = "program.pool_low"


#: the webhook type each event kind is delivered as; ``created`` is none (an import creates codes by the million)
WEBHOOK_TYPES: dict[CodeEventKind, WebhookEventType] = {
    CodeEventKind.ATTACHED: WebhookEventType.CODE_ATTACHED,
    CodeEventKind.ACTIVATED: WebhookEventType.CODE_ACTIVATED,
    CodeEventKind.DEACTIVATED: WebhookEventType.CODE_DEACTIVATED,
    CodeEventKind.DETACHED: WebhookEventType.CODE_DETACHED,
    CodeEventKind.EXPIRY_CHANGED: WebhookEventType.CODE_EXPIRY_CHANGED,
    CodeEventKind.POOL_LOW: WebhookEventType.PROGRAM_POOL_LOW,
}


class CodeEvent(msgspec.Struct, frozen=True):
    """One entry of a code's history: ``profile_id``/``database_id`` are the profile's as they were (None when no
    profile is concerned); ``details`` what else the event carries (docs/api.md#history)."""

    id: int
    time: datetime
    event: CodeEventKind
    token_id: int | None
    token_name: str
    profile_id: str | None
    database_id: int | None
    details: dict[str, Any]


class Webhook(msgspec.Struct, frozen=True):
    """A subscription of an account (docs/api.md#webhooks): where to POST which event types, signed with ``secret``."""

    id: int
    account_id: int
    url: str
    events: tuple[WebhookEventType, ...]
    description: str
    active: bool
    secret: str
    created: datetime


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Delivery(msgspec.Struct, frozen=True):
    """One event owed to one webhook (the outbox row, docs/api.md#webhooks)."""

    id: int
    webhook_id: int
    event_id: int
    type: WebhookEventType
    state: DeliveryState
    attempts: int
    next_attempt: datetime
    last_status: int | None
    last_error: str
    created: datetime
    finished: datetime | None


class DueDelivery(msgspec.Struct, frozen=True):
    """A pending delivery the worker may send now, with everything its body and signature are made of: the event's
    immutable row and the code's text (None for a program event). Times are integer microseconds."""

    id: int
    webhook_id: int
    url: str
    secret: str
    attempts: int
    created: int
    event_id: int
    event: CodeEventKind
    time: int
    program_id: int
    code: str | None
    profile_id: str | None
    database_id: int | None
    details: dict[str, Any]


class Outcome(enum.Enum):
    """What a conditional write on a code did, or the fact that stopped it (the service turns facts into errors)."""

    DONE = "done"
    NO_PROGRAM = "no such program"  # for the caller's account: activate judges the program in the store
    NEEDS_PROFILE = "a multiple-usage code needs the profile"
    UNCHANGED = "unchanged"  # already in the asked-for state: attach to its own profile, deactivate an unused code
    NO_CODE = "no such code"
    NOT_ATTACHED = "not attached"
    ATTACHED_ELSEWHERE = "attached to another profile"
    SEVERAL_PROFILES = "attached to several profiles"
    ALREADY_ACTIVATED = "already activated"
    EXPIRED = "expired"
    PROGRAM_INACTIVE = "program inactive"  # paused after the service read it: judged again in the transaction
    LIMIT_REACHED = "program limit reached"
    KEY_SPACE_FULL = "too many codes for the template's key space"


class Generation(msgspec.Struct, frozen=True):
    """What the store did with a generate request (docs/api.md#generate): ``outcome`` DONE, with the new codes in
    creation order when they were asked for; or the fact that refused it — LIMIT_REACHED or KEY_SPACE_FULL — with
    the two numbers the refusal names: ``wanted``, the codes asked for plus those held that count against the
    bound, and ``allowed``, the bound (``codes_limit``, or the key-space bound the service gave). The new codes are
    the program's codes whose ids are above ``after_id`` and at most ``last_id``."""

    outcome: Outcome
    codes: list[str] = msgspec.field(default_factory=list)
    wanted: int = 0
    allowed: int = 0
    after_id: int = 0
    last_id: int = 0
