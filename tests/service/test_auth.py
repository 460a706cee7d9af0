"""Token checks and the per-worker token cache (``service.auth.Authenticator``), on both adapters."""

from __future__ import annotations

import pytest

from promocodes.domain.times import utcnow
from promocodes.errors import Unauthorized
from promocodes.models import Principal, Role
from promocodes.schemas import TokenRevoke
from promocodes.service import Services
from promocodes.store import Store

pytestmark = pytest.mark.anyio


async def issued(services: Services) -> tuple[str, int, int]:
    view = await services.tokens.issue("acme", Role.WRITE, "till 3")
    assert isinstance(view.token, str)
    account_id = await services.store.find_account("acme")
    assert account_id is not None
    return view.token, view.id, account_id


@pytest.mark.parametrize("token", [None, "", "pc_not-a-token"])
async def test_missing_or_unknown_tokens_are_refused(store: Store, token: str | None) -> None:
    with pytest.raises(Unauthorized):
        await Services(store).authenticator.authenticate(token)


async def test_a_checked_token_is_remembered_for_the_ttl(store: Store) -> None:
    services = Services(store, token_cache_seconds=3600)
    token, token_id, account_id = await issued(services)
    # The token's name comes with it, cached alike: the history names it (docs/api.md#history).
    assert await services.authenticator.authenticate(token) == Principal(account_id, Role.WRITE, token_id, "till 3")
    # Revoked behind the cache's back (as another worker would): this worker still trusts it within the TTL...
    assert await store.revoke_token(account_id, token_id, utcnow()) is not None
    assert (await services.authenticator.authenticate(token)).token_id == token_id
    # ...until it forgets, as it does on a revocation made through it.
    services.authenticator.forget()
    with pytest.raises(Unauthorized):
        await services.authenticator.authenticate(token)


async def test_a_revocation_through_the_service_takes_effect_at_once(store: Store) -> None:
    services = Services(store, token_cache_seconds=3600)
    token, token_id, account_id = await issued(services)
    await services.authenticator.authenticate(token)
    await services.tokens.revoke(Principal(account_id, Role.ADMIN), TokenRevoke(id=token_id))
    with pytest.raises(Unauthorized):
        await services.authenticator.authenticate(token)


async def test_ttl_zero_reads_the_database_every_time(store: Store) -> None:
    services = Services(store, token_cache_seconds=0)
    token, token_id, account_id = await issued(services)
    await services.authenticator.authenticate(token)
    await store.revoke_token(account_id, token_id, utcnow())
    with pytest.raises(Unauthorized):
        await services.authenticator.authenticate(token)
