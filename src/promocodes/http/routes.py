"""Every API method: its path, the typed request it takes, what the token must be allowed to do, the service call
that answers it and the shape of its answer's ``data`` (docs/api.md#promo-code-methods,
docs/api.md#management-methods). The pipeline that runs them is in
``promocodes.http.app``; ``promocodes.http.openapi`` describes them from this same table."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Generic, Protocol, TypeVar

import msgspec

from promocodes import schemas
from promocodes.models import Capability, Principal
from promocodes.service import Services

Req = TypeVar("Req", bound=schemas.Request)


@dataclass(frozen=True)
class Method(Generic[Req]):
    """One API method, typed by its request struct: mypy checks that ``handler`` takes the ``request`` struct."""

    path: str
    request: type[Req]
    capability: Capability
    handler: Callable[[Services, Principal, Req], Awaitable[object]]
    #: the type of the answer's ``data`` as the handler returns it (``None``: always null), for the OpenAPI document.
    #: ``object``: it holds typing constructs (a struct, ``list[...]``, ``Annotated[...]``, ``None``) that only
    #: msgspec's schema generator reads, and no type annotation describes them all
    response: object
    #: one line for the OpenAPI document
    summary: str
    #: looks an object up by what the client sends (a code, a program): its misses count towards the failed
    #: look-up limit (429), which is what makes guessing codes slow (docs/api.md#rate-limits)
    guessable: bool = False
    #: True for a method that only reads although its capability is one that may write (an administrator's lists)
    read_only: bool = False
    #: False for a writing method whose answer holds a secret that is never stored (``tokens/create``): it cannot be
    #: replayed, so it takes no ``Idempotency-Key``
    keeps_answer: bool = True

    @property
    def writes(self) -> bool:
        """Whether the method may change something: its capability may, and it does not say it only reads."""
        return self.capability.writes and not self.read_only

    @property
    def idempotent(self) -> bool:
        """Whether a retry with the same ``Idempotency-Key`` gets the first answer again instead of executing
        (docs/api.md#idempotent-retries): every method that writes and whose answer can be kept. Read-only methods
        ignore the key entirely."""
        return self.writes and self.keeps_answer

    @functools.cached_property  # inspecting a struct evaluates its annotations: tens of ms per application
    def array_fields(self) -> frozenset[str]:
        """Fields declared as arrays: a lone XML element or form pair for them is a one-item list."""
        info = msgspec.inspect.type_info(self.request)
        assert isinstance(info, msgspec.inspect.StructType)
        return frozenset(field.name for field in info.fields if isinstance(field.type, msgspec.inspect.ListType))

    async def answer(self, services: Services, principal: Principal, request: schemas.Request) -> object:
        """Run the handler on a request the pipeline decoded into this method's struct. The check proves that to
        the type checker (the pipeline handles every method alike, as an :class:`ApiMethod`); it cannot fail for
        a request converted to :attr:`request`, and fails loudly for any other."""
        if not isinstance(request, self.request):
            raise TypeError(f"{self.path} takes {self.request.__name__}, not {type(request).__name__}")
        return await self.handler(services, principal, request)


class ApiMethod(Protocol):
    """A :class:`Method` of whichever request struct, as the pipeline (``promocodes.http.app``) and the OpenAPI
    document read it: everything but the typed handler, which :meth:`Method.answer` runs."""

    @property
    def path(self) -> str: ...
    @property
    def request(self) -> type[schemas.Request]: ...
    @property
    def capability(self) -> Capability: ...
    @property
    def response(self) -> object: ...
    @property
    def summary(self) -> str: ...
    @property
    def guessable(self) -> bool: ...
    @property
    def writes(self) -> bool: ...
    @property
    def idempotent(self) -> bool: ...
    @property
    def array_fields(self) -> frozenset[str]: ...
    async def answer(self, services: Services, principal: Principal, request: schemas.Request) -> object: ...


PROMOCODES = "/api/v1.1/promocodes"
READ, WRITE = Capability.READ_CODES, Capability.WRITE_CODES

# `programs/get` answers the program with its statistics, which the other program answers leave out.
ProgramWithStats = Annotated[schemas.ProgramView, msgspec.Meta(extra_json_schema={"required": ["stats"]})]

# Left without a declared type on purpose: a declared element type (``ApiMethod``, or ``Method[Any]``) would become
# the context mypy infers each ``Method``'s ``Req`` from (``schemas.Request``, or ``Any``), and it would no longer
# check each handler against the struct its method declares. Inferred, each entry is typed by its own ``request``.
_METHODS = (
    Method(
        f"{PROMOCODES}/import",
        schemas.ImportRequest,
        WRITE,
        lambda s, p, r: s.promocodes.import_codes(p, r),
        response=schemas.ImportResult,
        summary="Import codes into a program; each item is answered on its own",
    ),
    Method(
        f"{PROMOCODES}/generate",
        schemas.GenerateRequest,
        WRITE,
        lambda s, p, r: s.promocodes.generate(p, r),
        response=schemas.GenerateResult,
        summary="Generate new codes from a template: exactly `count` of them, or none",
    ),
    Method(
        f"{PROMOCODES}/get",
        schemas.CodeRequest,
        READ,
        lambda s, p, r: s.promocodes.get(p, r),
        response=schemas.CodeReport,
        summary="Read one code's state",
        guessable=True,
    ),
    Method(
        f"{PROMOCODES}/activate",
        schemas.ActivateRequest,
        WRITE,
        lambda s, p, r: s.promocodes.activate(p, r),
        response=None,
        summary="Redeem an attached code (a second activation is refused)",
        guessable=True,
    ),
    Method(
        f"{PROMOCODES}/update",
        schemas.UpdateRequest,
        WRITE,
        lambda s, p, r: s.promocodes.update(p, r),
        response=None,
        summary="Change a code's expiry and/or activation, all or nothing",
        guessable=True,
    ),
    Method(
        f"{PROMOCODES}/attach",
        schemas.AttachRequest,
        WRITE,
        lambda s, p, r: s.promocodes.attach(p, r),
        response=schemas.AttachResult,
        summary="Bind the named code, or a free one from the pool, to a profile",
        guessable=True,
    ),
    Method(
        f"{PROMOCODES}/detach",
        schemas.DetachRequest,
        WRITE,
        lambda s, p, r: s.promocodes.detach(p, r),
        response=None,
        summary="Unbind a code from a profile",
        guessable=True,
    ),
    Method(
        f"{PROMOCODES}/export_all",
        schemas.ProgramRef,
        READ,
        lambda s, p, r: s.promocodes.export(p, r),
        response=list[schemas.ExportItem],
        summary="Every code of a program, in creation order (streamed)",
    ),
    Method(
        f"{PROMOCODES}/history",
        schemas.HistoryRequest,
        READ,
        lambda s, p, r: s.promocodes.history(p, r),
        response=list[schemas.HistoryEvent],
        summary="A code's history: every change, oldest first, a page at a time",
        guessable=True,
    ),
    # management (docs/api.md#management-methods)
    Method(
        f"{PROMOCODES}/programs/create",
        schemas.ProgramCreate,
        Capability.MANAGE,
        lambda s, p, r: s.programs.create(p, r),
        response=schemas.ProgramView,
        summary="Create a program",
    ),
    Method(
        f"{PROMOCODES}/programs/list",
        schemas.Empty,
        Capability.READ_CATALOG,
        lambda s, p, r: s.programs.list(p),
        response=list[schemas.ProgramView],
        summary="List the account's programs",
    ),
    Method(
        f"{PROMOCODES}/programs/get",
        schemas.ProgramRef,
        Capability.READ_CATALOG,
        lambda s, p, r: s.programs.get(p, r),
        response=ProgramWithStats,
        summary="Read a program with its code statistics",
    ),
    Method(
        f"{PROMOCODES}/programs/update",
        schemas.ProgramUpdate,
        Capability.MANAGE,
        lambda s, p, r: s.programs.update(p, r),
        response=schemas.ProgramView,
        summary="Change a program's settings",
    ),
    Method(
        f"{PROMOCODES}/programs/delete",
        schemas.ProgramDelete,
        Capability.MANAGE,
        lambda s, p, r: s.programs.delete(p, r),
        response=None,
        summary="Delete a program (refused while it holds attached codes, unless `force`)",
    ),
    Method(
        "/api/v1.1/databases/create",
        schemas.DatabaseCreate,
        Capability.MANAGE,
        lambda s, p, r: s.profiles.create_database(p, r),
        response=schemas.DatabaseView,
        summary="Create a profile database",
    ),
    Method(
        "/api/v1.1/databases/list",
        schemas.Empty,
        Capability.READ_CATALOG,
        lambda s, p, r: s.profiles.list_databases(p),
        response=list[schemas.DatabaseView],
        summary="List the account's profile databases",
    ),
    Method(
        "/api/v1.1/profiles/import",
        schemas.ProfileImport,
        Capability.WRITE_PROFILES,
        lambda s, p, r: s.profiles.import_profile(p, r),
        response=schemas.ProfileCreated,
        summary="Create a profile, or update the one that matches",
    ),
    Method(
        "/api/v1.1/profiles/get",
        schemas.ProfileRef,
        Capability.READ_PROFILES,
        lambda s, p, r: s.profiles.get_profile(p, r),
        response=schemas.ProfileView,
        summary="Read the profile that matches",
    ),
    Method(
        "/api/v1.1/profiles/delete",
        schemas.ProfileDelete,
        Capability.WRITE_PROFILES,
        lambda s, p, r: s.profiles.delete_profile(p, r),
        response=None,
        summary="Delete the profile that matches (refused while it holds codes, unless `force`)",
    ),
    Method(
        "/api/v1.1/tokens/create",
        schemas.TokenCreate,
        Capability.MANAGE,
        lambda s, p, r: s.tokens.create(p, r),
        response=schemas.TokenView,
        summary="Create a token; the only answer that shows it",
        keeps_answer=False,  # its answer holds the token, which is never stored
    ),
    Method(
        "/api/v1.1/tokens/list",
        schemas.Empty,
        Capability.MANAGE,
        lambda s, p, r: s.tokens.list(p),
        response=list[schemas.TokenView],
        summary="List the account's tokens (never the tokens themselves)",
        read_only=True,  # though only an administrator may
    ),
    Method(
        "/api/v1.1/tokens/revoke",
        schemas.TokenRevoke,
        Capability.MANAGE,
        lambda s, p, r: s.tokens.revoke(p, r),
        response=schemas.TokenView,
        summary="Revoke a token",
    ),
    Method(
        "/api/v1.1/webhooks/create",
        schemas.WebhookCreate,
        Capability.MANAGE,
        lambda s, p, r: s.webhooks.create(p, r),
        response=schemas.WebhookView,
        summary="Create a webhook; the only answer that shows its signing secret",
        keeps_answer=False,  # its answer holds the secret, which is never kept in an idempotent answer
    ),
    Method(
        "/api/v1.1/webhooks/list",
        schemas.Empty,
        Capability.MANAGE,
        lambda s, p, r: s.webhooks.list(p),
        response=list[schemas.WebhookView],
        summary="List the account's webhooks (never their secrets)",
        read_only=True,  # though only an administrator may
    ),
    Method(
        "/api/v1.1/webhooks/update",
        schemas.WebhookUpdate,
        Capability.MANAGE,
        lambda s, p, r: s.webhooks.update(p, r),
        response=schemas.WebhookView,
        summary="Change a webhook's URL, event types, description or active flag",
    ),
    Method(
        "/api/v1.1/webhooks/delete",
        schemas.WebhookRef,
        Capability.MANAGE,
        lambda s, p, r: s.webhooks.delete(p, r),
        response=None,
        summary="Delete a webhook and the deliveries it still owes",
    ),
    Method(
        "/api/v1.1/webhooks/deliveries",
        schemas.WebhookDeliveriesRequest,
        Capability.MANAGE,
        lambda s, p, r: s.webhooks.deliveries(p, r),
        response=list[schemas.DeliveryView],
        summary="A webhook's most recent deliveries, newest first, with their state",
        read_only=True,  # though only an administrator may
    ),
)

#: Every API method, as the pipeline and the OpenAPI document read them.
METHODS: tuple[ApiMethod, ...] = _METHODS
