"""Accounts and their tokens (docs/api.md#tokens): shown once, stored as a hash, revocable."""

from __future__ import annotations

import functools

from promocodes.domain.times import format_rfc3339, utcnow
from promocodes.errors import NotFound
from promocodes.models import Principal, Role, TokenInfo
from promocodes.schemas import TokenCreate, TokenRevoke, TokenView
from promocodes.service.accounts import AccountService
from promocodes.service.auth import Authenticator, new_token, token_hash
from promocodes.service.idempotency import final
from promocodes.store import Store


def token_view(info: TokenInfo, token: str | None = None) -> TokenView:
    view = TokenView(
        id=info.id,
        name=info.name,
        role=info.role.value,
        created=format_rfc3339(info.created),
        revoked=format_rfc3339(info.revoked),
    )
    if token is not None:
        view.token = token
    return view


def _revoked(token_id: int, info: TokenInfo | None) -> TokenView:
    """``tokens/revoke``'s answer to the store's result. Pure: it also runs inside the store's transaction, to keep
    the answer of a request with an idempotency key (docs/api.md#idempotent-retries)."""
    if info is None:
        raise NotFound(f"Token {token_id} not found")
    return token_view(info)


class TokenService:
    def __init__(self, store: Store, authenticator: Authenticator) -> None:
        self.store = store
        self.authenticator = authenticator

    async def issue(self, account_name: str, role: Role, name: str = "") -> TokenView:
        """For the command line: create the account if it does not exist (``AccountService.ensure_admin``'s rules),
        then a token for it."""
        admin = await AccountService(self.store).ensure_admin(account_name)
        return await self.create(admin, TokenCreate(role=role, name=name))

    async def count_all(self) -> int:
        """For the command line: how many tokens the database holds, in every account, revoked ones included (a
        database without any gets a first admin token when ``serve`` starts)."""
        return await self.store.count_tokens()

    async def create(self, principal: Principal, request: TokenCreate) -> TokenView:
        token = new_token()
        info = await self.store.create_token(
            principal.account_id, request.name.strip(), request.role, token_hash(token), utcnow()
        )
        return token_view(info, token)

    async def list(self, principal: Principal) -> list[TokenView]:
        return [token_view(info) for info in await self.store.list_tokens(principal.account_id)]

    async def revoke(self, principal: Principal, request: TokenRevoke) -> TokenView:
        answer = final(functools.partial(_revoked, request.id))
        view = answer(await self.store.revoke_token(principal.account_id, request.id, utcnow()))
        self.authenticator.forget()
        return view
