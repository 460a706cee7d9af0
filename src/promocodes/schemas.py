"""The typed shapes of every request and response body.

The http layer decodes JSON, XML or form bodies into a plain mapping and converts it into one of the request
structs below (``msgspec.convert(..., strict=False)``: a number may arrive as a decimal string, a boolean as
``true``/``false``/``1``/``0``, docs/api.md#values); the service takes these structs and answers with the response
structs, whose field order is the order the documented examples show (docs/api.md#get). Unknown fields are ignored,
so an Altcraft client that sends more than we read still works. ``token`` and ``format`` are envelope parameters read by
the http layer, not fields of these structs.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from promocodes.models import SETTINGS, Role, Setting

# Every id and count is stored as a 64-bit integer (SQLite INTEGER, PostgreSQL BIGINT): a larger number is a
# field error (400), not a fault of the storage (500).
INT64_MAX = 2**63 - 1
Id = Annotated[int, Meta(ge=1, le=INT64_MAX)]
Count = Annotated[int, Meta(ge=0, le=INT64_MAX)]

# Text refuses control characters (Unicode category Cc: U+0000-U+001F, U+007F-U+009F). A NUL cannot be stored by
# PostgreSQL at all and SQLite would keep it silently; refusing every Cc at the door makes both adapters answer the
# same 400 naming the field. These two are the only patterns of the request structs, so the http layer turns
# msgspec's "matching regex" message into "must not contain control characters".
Text = Annotated[str, Meta(pattern="\\A[^\\x00-\\x1f\\x7f-\\x9f]*\\Z")]
# A description is prose: tab, line feed and carriage return are allowed in it, the other control characters not.
Prose = Annotated[str, Meta(pattern="\\A[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*\\Z")]


class Request(msgspec.Struct, kw_only=True):
    """Base of the request structs."""


class Empty(Request, kw_only=True):
    """A request with no fields of its own (the list endpoints)."""


# --- the seven promo-code endpoints ------------------------------------------------------------------------------


class ProgramRef(Request, kw_only=True):
    loyalty_id: Id


class ImportRequest(ProgramRef, kw_only=True):
    codes: list[str]


class CodeRequest(ProgramRef, kw_only=True):
    code: Text


class ProfileSelector(Request, kw_only=True):
    """The profile-matching fields (docs/api.md#profile-matching), shared by attach, detach, activate, update and
    the profile API."""

    db_id: Id | None = None
    matching: Text | None = None
    email: Text | None = None
    phone: Text | None = None
    profile_id: Text | None = None
    field_name: Text | None = None
    field_value: Text | int | None = None

    def names_a_profile(self) -> bool:
        return any(
            value is not None
            for value in (self.db_id, self.matching, self.email, self.phone, self.profile_id, self.field_name)
        )


class ActivateRequest(ProfileSelector, kw_only=True):
    loyalty_id: Id
    code: Text


class UpdateRequest(ActivateRequest, kw_only=True):
    activated: bool | UnsetType = UNSET
    expire_date: Text | UnsetType | None = UNSET  # "" or null clears the expiry


# docs/api.md#generate: the most codes one request makes, and the most it may answer with.
MAX_GENERATED = 1_000_000
MAX_RETURNED_CODES = 10_000


class GenerateRequest(ProgramRef, kw_only=True):
    count: Annotated[int, Meta(ge=1, le=MAX_GENERATED)]
    template: Text | None = None  # None or "": the program's template
    return_codes: bool = False


class AttachRequest(ProfileSelector, kw_only=True):
    loyalty_id: Id
    db_id: Id
    code: Text | None = None


class DetachRequest(ProfileSelector, kw_only=True):
    loyalty_id: Id
    db_id: Id
    code: Text


class HistoryRequest(CodeRequest, kw_only=True):
    """docs/api.md#history: a page of the code's events, after the event id ``after``."""

    limit: Annotated[int, Meta(ge=1, le=1000)] = 100
    after: Count = 0


# --- management API (docs/api.md#management-methods) ---------------------------------------------------------


def _wire(setting: Setting) -> Any:
    """The type a setting arrives as: text is checked for control characters, a date is RFC 3339 text (parsed by
    the service), a number is a non-negative count; ``None`` stays allowed where the setting allows it."""
    kinds: dict[type, Any] = {str: Prose if setting.extra.get("prose") else Text, datetime: Text, int: Count}
    wire = kinds.get(setting.kind, setting.kind)
    return Annotated[wire | None if setting.optional else wire, Meta(description=setting.description)]


if TYPE_CHECKING:
    # mypy cannot see fields made at import time: it sees these structs as taking and holding any setting.

    class ProgramSettings(Request, kw_only=True):
        def __init__(self, **settings: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...

    class ProgramCreate(ProgramSettings, kw_only=True): ...

else:
    ProgramSettings = msgspec.defstruct(
        "ProgramSettings",
        [(setting.name, _wire(setting) | UnsetType, UNSET) for setting in SETTINGS],
        bases=(Request,),
        kw_only=True,
        module=__name__,
    )
    ProgramSettings.__doc__ = """Every setting of a program (docs/api.md#program-settings); UNSET means "not given"
    (create uses the defaults, update leaves it alone)."""

    # The settings declared without a default are required by create.
    ProgramCreate = msgspec.defstruct(
        "ProgramCreate",
        [(setting.name, _wire(setting)) for setting in SETTINGS if setting.required],
        bases=(ProgramSettings,),
        kw_only=True,
        module=__name__,
    )


class ProgramUpdate(ProgramSettings, kw_only=True):
    loyalty_id: Id


class ProgramDelete(ProgramRef, kw_only=True):
    force: bool = False


class DatabaseCreate(Request, kw_only=True):
    name: Text


class ProfileRef(ProfileSelector, kw_only=True):
    db_id: Id


class ProfileImport(ProfileRef, kw_only=True):
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class ProfileDelete(ProfileRef, kw_only=True):
    force: bool = False


class TokenCreate(Request, kw_only=True):
    role: Role
    name: Text = ""


class TokenRevoke(Request, kw_only=True):
    id: Id


class WebhookCreate(Request, kw_only=True):
    """docs/api.md#webhooks-create: ``events`` are checked by the service (400 naming an unknown type)."""

    url: Text
    events: list[Text]
    description: Prose = ""


class WebhookRef(Request, kw_only=True):
    id: Id


class WebhookUpdate(WebhookRef, kw_only=True):
    """docs/api.md#webhooks-update: UNSET means "not given", left as it is."""

    url: Text | UnsetType = UNSET
    events: list[Text] | UnsetType = UNSET
    description: Prose | UnsetType = UNSET
    active: bool | UnsetType = UNSET


class WebhookDeliveriesRequest(WebhookRef, kw_only=True):
    limit: Annotated[int, Meta(ge=1, le=100)] = 20


# --- responses ---------------------------------------------------------------------------------------------------


class Response(msgspec.Struct, omit_defaults=True):
    """Base of the response structs; a field left UNSET is not sent at all."""


# Holds only strings and numbers, so it need not be tracked by the garbage collector: an answer of a million items
# would otherwise make full collections pause the whole process. (The docstring is the description the OpenAPI
# document and /docs show, so it speaks to clients only: docs/api.md#import has the rules.)
class ImportItem(Response, gc=False):
    """One item of import's answer: the code, and its own error (0 when stored) and text."""

    code: str
    error: int
    error_text: str


class ImportResult(Response):
    """Import answers with counters beside ``data`` (docs/api.md#import); the envelope puts them in alphabetical
    order."""

    data: list[ImportItem]
    discarded_by_limit: int
    duplicated: int
    inserted: int


def envelope_members(result: object) -> dict[str, Any]:
    """The members of a success envelope besides ``error`` and ``error_text``: ``data``, and import's counters,
    which sit beside it (docs/api.md#import)."""
    if isinstance(result, ImportResult):
        return {
            "data": result.data,
            "discarded_by_limit": result.discarded_by_limit,
            "duplicated": result.duplicated,
            "inserted": result.inserted,
        }
    return {"data": result}


# docs/api.md#get. The docstring is the description the OpenAPI document gives, so it names no file.
class CodeReport(Response):
    """``get``'s data, keys in the documented order; the last four only where they apply."""

    created: str
    is_attached: bool
    is_activated: bool
    is_expired: bool
    attached: str
    activated: str
    expired: str
    expire_date: str
    loyalty_id: int
    code: str
    database_id: int | UnsetType = UNSET
    profile_id: str | UnsetType = UNSET
    attached_count: int | UnsetType = UNSET
    activated_count: int | UnsetType = UNSET


# docs/api.md#export_all. The docstring is the description the OpenAPI document gives, so it names no file.
class ExportItem(Response):
    """One code of ``export_all``: timestamps only when set."""

    code: str
    attached: str | UnsetType = UNSET
    activated: str | UnsetType = UNSET


class GenerateResult(Response):
    """``generate``'s data: how many codes were made, the template used, and the codes themselves in creation order
    when ``return_codes`` was true."""

    generated: int
    template: str
    codes: list[str] | UnsetType = UNSET


# docs/api.md#history. The docstring is the description the OpenAPI document gives, so it names no file.
class HistoryEvent(Response):
    """One event of a code's history, oldest first. ``profile_id`` is ``""`` and ``database_id`` null when no
    profile is concerned; ``details`` is an object, empty when the event carries nothing more."""

    id: int
    time: str
    event: str
    profile_id: str
    database_id: int | None
    token_name: str
    details: dict[str, Any]


class AttachResult(Response):
    code: str


class Stats(Response):
    total: int
    free: int
    attached: int
    activated: int
    expired: int


def _answer(setting: Setting) -> Any:
    """The type a setting is answered as: a date is RFC 3339 text, ``""`` when not set; others as they are."""
    if setting.kind is datetime:
        return str
    return setting.kind | None if setting.optional else setting.kind


if TYPE_CHECKING:

    class ProgramView(Response):
        id: int
        stats: Stats | UnsetType

        def __init__(self, **fields: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...

else:
    # Key order of the answer: id, the settings in declaration order, created, then stats (programs/get only).
    ProgramView = msgspec.defstruct(
        "ProgramView",
        [
            ("id", int),
            *[(setting.name, _answer(setting)) for setting in SETTINGS],
            ("created", str),
            ("stats", Stats | UnsetType, UNSET),
        ],
        bases=(Response,),
        module=__name__,
    )


class DatabaseView(Response):
    id: int
    name: str


class ProfileView(Response):
    profile_id: str
    db_id: int
    data: dict[str, Any]
    created: str
    updated: str


class ProfileCreated(Response):
    profile_id: str


class TokenView(Response):
    id: int
    name: str
    role: str
    created: str
    revoked: str
    token: str | UnsetType = UNSET  # shown once, in the answer to tokens/create


class WebhookView(Response):
    id: int
    url: str
    events: list[str]
    description: str
    active: bool
    created: str
    secret: str | UnsetType = UNSET  # shown once, in the answer to webhooks/create


class DeliveryView(Response):
    """One delivery of a webhook (docs/api.md#webhooks-deliveries)."""

    id: int
    event_id: str
    type: str
    state: str
    attempts: int
    next_attempt: str
    last_status: int | None
    last_error: str
    created: str
    finished: str
