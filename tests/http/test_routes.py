"""The route table (``promocodes.http.routes``): each method runs its handler only on the struct it declares."""

from __future__ import annotations

from pathlib import Path

import pytest

from promocodes import schemas
from promocodes.http.routes import METHODS, Method
from promocodes.models import Capability, Principal, Role
from promocodes.service import Services
from promocodes.store import open_store

pytestmark = pytest.mark.anyio

ADMIN = Principal(account_id=1, role=Role.ADMIN)


def test_every_method_declares_a_request_struct() -> None:
    for method in METHODS:
        assert isinstance(method, Method)
        assert issubclass(method.request, schemas.Request), method.path


async def test_a_method_answers_its_own_struct_and_refuses_any_other(tmp_path: Path) -> None:
    seen: list[schemas.ProgramRef] = []

    async def handler(services: Services, principal: Principal, request: schemas.ProgramRef) -> object:
        seen.append(request)
        return request.loyalty_id

    method = Method("/x", schemas.ProgramRef, Capability.READ_CATALOG, handler, response=int, summary="x")
    services = Services(open_store(f"sqlite:///{tmp_path}/unused.db"))  # never opened: the handler reads nothing
    assert await method.answer(services, ADMIN, schemas.ProgramRef(loyalty_id=7)) == 7
    with pytest.raises(TypeError, match="/x takes ProgramRef, not Empty"):
        await method.answer(services, ADMIN, schemas.Empty())
    assert seen == [schemas.ProgramRef(loyalty_id=7)]
