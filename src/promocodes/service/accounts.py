"""Accounts as the command line sees them: it holds no token, and acts as the administrator of whichever account a
command names, by name or through a program the account owns."""

from __future__ import annotations

from promocodes.domain.times import utcnow
from promocodes.errors import BadRequest, NotFound
from promocodes.models import Principal, Role
from promocodes.service.programs import missing_program
from promocodes.store import Store


def _admin(account_id: int) -> Principal:
    return Principal(account_id=account_id, role=Role.ADMIN)


class AccountService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def find_admin(self, name: str) -> Principal | None:
        """The administrator of the named account; None when there is no such account."""
        account_id = await self.store.find_account(name)
        return None if account_id is None else _admin(account_id)

    async def admin(self, name: str) -> Principal:
        """The administrator of an existing account; :class:`NotFound` when there is none of that name."""
        principal = await self.find_admin(name)
        if principal is None:
            raise NotFound(f"Account {name!r} not found")
        return principal

    async def ensure_admin(self, name: str) -> Principal:
        """The administrator of the named account, which is created when missing (concurrent creators of one name
        get the same account), so that a command can set up a database that has no account yet. The name loses its
        surrounding white space and must not be empty: an account no one can name again would be lost."""
        account = name.strip()
        if not account:
            raise BadRequest("Account name must not be empty")
        return _admin(await self.store.ensure_account(account, utcnow()))

    async def program_admin(self, program_id: int) -> Principal:
        """The administrator of whichever account owns the program; :class:`NotFound` when there is no such
        program."""
        account_id = await self.store.program_account(program_id)
        if account_id is None:
            raise missing_program(program_id)
        return _admin(account_id)
