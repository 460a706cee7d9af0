"""Every API method: its path, the typed request it takes, what the token must be allowed to do, and the
service call that answers it (spec 3 and 9.2). The pipeline that runs them is in ``promocodes.http.app``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from promocodes import schemas
from promocodes.models import Capability, Principal
from promocodes.service import Services

Handler = Callable[[Services, Principal, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    path: str
    request: type[schemas.Request]
    capability: Capability
    handler: Handler
    #: looks an object up by what the client sends (a code, a program): its misses count towards the failed
    #: look-up limit (429), which is what makes guessing codes slow (docs/api.md#rate-limits)
    guessable: bool = False

    @property
    def array_fields(self) -> frozenset[str]:
        """Fields declared as arrays: a lone XML element or form pair for them is a one-item list."""
        info = msgspec.inspect.type_info(self.request)
        assert isinstance(info, msgspec.inspect.StructType)
        return frozenset(field.name for field in info.fields if isinstance(field.type, msgspec.inspect.ListType))


PROMOCODES = "/api/v1.1/promocodes"
READ, WRITE = Capability.READ_CODES, Capability.WRITE_CODES

METHODS: tuple[Method, ...] = (
    Method(f"{PROMOCODES}/import", schemas.ImportRequest, WRITE, lambda s, p, r: s.promocodes.import_codes(p, r)),
    Method(f"{PROMOCODES}/get", schemas.CodeRequest, READ, lambda s, p, r: s.promocodes.get(p, r), guessable=True),
    Method(
        f"{PROMOCODES}/activate",
        schemas.ActivateRequest,
        WRITE,
        lambda s, p, r: s.promocodes.activate(p, r),
        guessable=True,
    ),
    Method(
        f"{PROMOCODES}/update", schemas.UpdateRequest, WRITE, lambda s, p, r: s.promocodes.update(p, r), guessable=True
    ),
    Method(
        f"{PROMOCODES}/attach", schemas.AttachRequest, WRITE, lambda s, p, r: s.promocodes.attach(p, r), guessable=True
    ),
    Method(
        f"{PROMOCODES}/detach", schemas.DetachRequest, WRITE, lambda s, p, r: s.promocodes.detach(p, r), guessable=True
    ),
    Method(f"{PROMOCODES}/export_all", schemas.ProgramRef, READ, lambda s, p, r: s.promocodes.export(p, r)),
    # management (spec 9.2)
    Method(
        f"{PROMOCODES}/programs/create",
        schemas.ProgramCreate,
        Capability.MANAGE,
        lambda s, p, r: s.programs.create(p, r),
    ),
    Method(f"{PROMOCODES}/programs/list", schemas.Empty, Capability.READ_CATALOG, lambda s, p, r: s.programs.list(p)),
    Method(
        f"{PROMOCODES}/programs/get", schemas.ProgramRef, Capability.READ_CATALOG, lambda s, p, r: s.programs.get(p, r)
    ),
    Method(
        f"{PROMOCODES}/programs/update",
        schemas.ProgramUpdate,
        Capability.MANAGE,
        lambda s, p, r: s.programs.update(p, r),
    ),
    Method(
        f"{PROMOCODES}/programs/delete",
        schemas.ProgramDelete,
        Capability.MANAGE,
        lambda s, p, r: s.programs.delete(p, r),
    ),
    Method(
        "/api/v1.1/databases/create",
        schemas.DatabaseCreate,
        Capability.MANAGE,
        lambda s, p, r: s.profiles.create_database(p, r),
    ),
    Method(
        "/api/v1.1/databases/list", schemas.Empty, Capability.READ_CATALOG, lambda s, p, r: s.profiles.list_databases(p)
    ),
    Method(
        "/api/v1.1/profiles/import",
        schemas.ProfileImport,
        Capability.WRITE_PROFILES,
        lambda s, p, r: s.profiles.import_profile(p, r),
    ),
    Method(
        "/api/v1.1/profiles/get",
        schemas.ProfileRef,
        Capability.READ_PROFILES,
        lambda s, p, r: s.profiles.get_profile(p, r),
    ),
    Method(
        "/api/v1.1/profiles/delete",
        schemas.ProfileDelete,
        Capability.WRITE_PROFILES,
        lambda s, p, r: s.profiles.delete_profile(p, r),
    ),
    Method("/api/v1.1/tokens/create", schemas.TokenCreate, Capability.MANAGE, lambda s, p, r: s.tokens.create(p, r)),
    Method("/api/v1.1/tokens/list", schemas.Empty, Capability.MANAGE, lambda s, p, r: s.tokens.list(p)),
    Method("/api/v1.1/tokens/revoke", schemas.TokenRevoke, Capability.MANAGE, lambda s, p, r: s.tokens.revoke(p, r)),
)
