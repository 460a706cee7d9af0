"""Accounts and their tokens (docs/api.md#tokens): the operations of :class:`AccountStore`."""

from __future__ import annotations

from datetime import datetime

from promocodes.domain.times import to_micros
from promocodes.models import Principal, Role, TokenInfo
from promocodes.store.base import Connection, StoreBase, operation, read_operation
from promocodes.store.rows import _token


class AccountStore(StoreBase):
    """Accounts and tokens: created, looked up by name or by token hash, listed, revoked."""

    @operation
    async def ensure_account(self, conn: Connection, name: str, now: datetime) -> int:
        """The id of the named account, created if missing (``ON CONFLICT`` makes concurrent creators agree)."""
        async with conn.transaction():
            await conn.fetchval(
                "INSERT INTO accounts (name, created) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id",
                name,
                to_micros(now),
            )
            account_id: int = await conn.fetchval("SELECT id FROM accounts WHERE name = $1", name)
            return account_id

    @read_operation
    async def find_account(self, conn: Connection, name: str) -> int | None:
        account_id: int | None = await conn.fetchval("SELECT id FROM accounts WHERE name = $1", name)
        return account_id

    @operation
    async def create_token(
        self, conn: Connection, account_id: int, name: str, role: Role, token_hash: str, now: datetime
    ) -> TokenInfo:
        async with conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO tokens (account_id, name, role, token_hash, created) VALUES ($1, $2, $3, $4, $5) "
                "RETURNING *",
                account_id,
                name,
                role.value,
                token_hash,
                to_micros(now),
            )
            return _token(row)

    @read_operation
    async def principal_for(self, conn: Connection, token_hash: str) -> Principal | None:
        """The caller a token stands for, with the token's name (which the history records, docs/api.md#history);
        None for an unknown or revoked token."""
        row = await conn.fetchrow(
            "SELECT id, account_id, role, name FROM tokens WHERE token_hash = $1 AND revoked IS NULL", token_hash
        )
        if row is None:
            return None
        return Principal(
            account_id=row["account_id"], role=Role(row["role"]), token_id=row["id"], token_name=row["name"]
        )

    @read_operation
    async def list_tokens(self, conn: Connection, account_id: int) -> list[TokenInfo]:
        rows = await conn.fetch("SELECT * FROM tokens WHERE account_id = $1 ORDER BY id", account_id)
        return [_token(row) for row in rows]

    @operation
    async def revoke_token(self, conn: Connection, account_id: int, token_id: int, now: datetime) -> TokenInfo | None:
        """Revoke once; revoking a revoked token changes nothing. None when the account has no such token."""
        async with conn.transaction():
            row = await conn.fetchrow(
                "UPDATE tokens SET revoked = COALESCE(revoked, $3) WHERE id = $2 AND account_id = $1 RETURNING *",
                account_id,
                token_id,
                to_micros(now),
            )
            return None if row is None else _token(row)

    @read_operation
    async def count_tokens(self, conn: Connection) -> int:
        count: int = await conn.fetchval("SELECT count(*) FROM tokens")
        return count
