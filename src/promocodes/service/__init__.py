"""The rules of the API, one service per domain, all over one :class:`~promocodes.store.Store`. No SQL here."""

from __future__ import annotations

from promocodes.service.accounts import AccountService
from promocodes.service.auth import Authenticator
from promocodes.service.migrations import MigrationService
from promocodes.service.profiles import ProfileService
from promocodes.service.programs import ProgramService
from promocodes.service.promocodes import PromocodeService
from promocodes.service.tokens import TokenService
from promocodes.service.webhooks import WebhookService
from promocodes.store import Store


class Services:
    """Everything the http layer and the command line call, wired to one store."""

    def __init__(self, store: Store, token_cache_seconds: float = 2.0) -> None:
        self.store = store
        self.authenticator = Authenticator(store, token_cache_seconds)
        self.programs = ProgramService(store)
        self.profiles = ProfileService(store)
        self.promocodes = PromocodeService(store, self.programs, self.profiles)
        self.tokens = TokenService(store, self.authenticator)
        self.accounts = AccountService(store)
        self.webhooks = WebhookService(store)
        self.migrations = MigrationService(store)
