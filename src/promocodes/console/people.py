"""The console's pages about people and the systems around the codes: profiles, tokens and webhooks
(docs/console.md#profiles, docs/console.md#tokens, docs/console.md#webhooks).

They work as the code pages of ``routes.py`` do, through :class:`~promocodes.console.routes.Console`'s helpers: the
signed-in token's :class:`Principal` goes to the same services the API calls, and each page asks
:func:`authorize` for the capability the matching API method needs (docs/api.md#roles) — ``profiles/get`` for a
profile, ``tokens/…`` and ``webhooks/…`` (``admin`` only) for the rest — whatever the page offered. Every form that
changes something carries the CSRF token, checked before anything else is read.

A new token and a new webhook's secret are shown once, as the API's answers show them: the answer to the form is a
redirect to a page that shows the value, carried there in a short-lived signed cookie that the page removes
(:class:`ShownOnce`), so that reloading that page shows it no more and never creates a second one.
"""

from __future__ import annotations

import binascii
import hmac
import json
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from promocodes.console.session import COOKIE, Session, _b64, _unb64
from promocodes.console.views import PREFIX, convert, read_form, render, status_of, templates
from promocodes.errors import BadRequest, Conflict, Forbidden, NotFound, PromocodeError
from promocodes.models import ROLE_CAPABILITIES, Capability, Principal, Role, WebhookEventType
from promocodes.schemas import (
    DatabaseView,
    ProfileRef,
    ProfileView,
    TokenCreate,
    TokenRevoke,
    TokenView,
    WebhookCreate,
    WebhookDeliveriesRequest,
    WebhookRef,
    WebhookUpdate,
    WebhookView,
)
from promocodes.service.auth import authorize
from promocodes.store.profiles import HeldCode

if TYPE_CHECKING:
    from promocodes.console.routes import Console

#: how a profile may be looked up from the console, and the label of each way (docs/api.md#profile-matching)
MATCHING = {"email": "Email", "phone": "Phone", "profile_id": "Profile id"}
#: the most codes a profile page lists (the latest bound first)
PROFILE_CODES_SHOWN = 1000
#: the deliveries a webhook's page lists, newest first (the most webhooks/deliveries answers)
DELIVERIES_SHOWN = 100
#: what a webhook's page may do to it, and the label of each; "disable" and "delete" ask for a confirmation first
WEBHOOK_ACTIONS = {"enable": "Enable", "disable": "Disable", "delete": "Delete"}
#: the message a page shows after a change; fixed texts, so nothing in the address is ever shown as is
DONE = {
    "revoked": "The token was revoked.",
    "enabled": "The webhook was enabled: deliveries resume.",
    "disabled": "The webhook was disabled: what it is owed waits.",
    "deleted": "The webhook was deleted.",
}
# The field an error names: "Field `url` …" from the services, "… at `$.role`" from msgspec.
_NAMED_FIELD = re.compile(r"`(?:\$\.)?([a-z_]+)")


def may_manage(principal: Principal | None) -> bool:
    """Whether the token may see the tokens and webhooks pages (the ``admin`` role: docs/api.md#roles)."""
    return principal is not None and Capability.MANAGE in ROLE_CAPABILITIES[principal.role]


# The navigation of every page (base.html) offers those pages only to a token that may use them; a global of the
# shared environment, since every page renders the navigation whichever module's handler renders the page.
templates.globals["may_manage"] = may_manage


def field_errors(error: PromocodeError, fields: tuple[str, ...]) -> dict[str, str]:
    """A 400's text keyed by the form field it names, to be shown next to that field; ``""`` when it names none
    of ``fields`` (the page then shows it above the form)."""
    named = [name for name in _NAMED_FIELD.findall(error.text) if name in fields]
    return {named[0] if named else "": error.text}


class ShownOnce:
    """A value the console shows once — a new token, a new webhook's secret — carried from the form's answer to the
    page that shows it, in a cookie of its own.

    The cookie is signed under the console's key (a purpose of its own, so it stands for no session or CSRF token),
    names the session it was made for (a cookie planted from another session is ignored), lives
    :attr:`SECONDS` at most, is HttpOnly, SameSite=Strict and sent only to the one page that shows it, which removes
    it. Nothing is kept on the server, so it works on every worker; once shown, the value exists only in the page
    the person has open (docs/console.md#shown-once)."""

    COOKIE = "promocodes_console_once"
    SECONDS = 60
    PURPOSE = b"promocodes console shown once\x00"

    def __init__(self, console: Console) -> None:
        self.console = console

    def _mac(self, body: bytes) -> bytes:
        return self.console.signer._mac(self.PURPOSE, body)

    def give(self, request: Request, session: Session, path: str, value: Mapping[str, Any]) -> Response:
        """A redirect to ``path`` carrying ``value`` for that page alone."""
        body = json.dumps({"n": session.nonce, "p": path, "t": int(time.time()), "v": value}).encode("utf-8")
        response = RedirectResponse(f"{PREFIX}{path}", status_code=303)
        response.set_cookie(
            self.COOKIE,
            f"{_b64(body)}.{_b64(self._mac(body))}",
            max_age=self.SECONDS,
            path=f"{PREFIX}{path}",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    def take(self, request: Request, session: Session, path: str) -> dict[str, Any] | None:
        """The value given for this page in this session within :attr:`SECONDS`; None otherwise."""
        cookie = request.cookies.get(self.COOKIE, "")
        if cookie.count(".") != 1:
            return None
        body_text, mac_text = cookie.split(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
            if not hmac.compare_digest(mac, self._mac(body)):
                return None
            fields = json.loads(body)
            fresh = 0 <= time.time() - int(fields["t"]) <= self.SECONDS
            if fields["n"] != session.nonce or fields["p"] != path or not fresh or not isinstance(fields["v"], dict):
                return None
            value: dict[str, Any] = fields["v"]
            return value
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None

    def forget(self, response: Response, path: str) -> Response:
        response.delete_cookie(self.COOKIE, path=f"{PREFIX}{path}", httponly=True, samesite="strict")
        return response


class People:
    """The profiles, tokens and webhooks pages, over a :class:`Console`'s helpers and services."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.services = console.services
        self.once = ShownOnce(console)

    def _page(self, request: Request, session: Session, principal: Principal, **page: Any) -> dict[str, Any]:
        return self.console._context(request, session, principal, **page)

    async def _form(self, request: Request, session: Session, principal: Principal) -> dict[str, str]:
        """A posted form, its CSRF token checked first and then the role (``admin``): a forged post, or one from a
        token that may not manage, is refused before anything is read or changed."""
        form = await read_form(request)
        if not self.console.signer.csrf_valid(session, form.get("csrf")):
            raise Forbidden("The form has expired or did not come from this console: load the page and try again")
        authorize(principal, Capability.MANAGE)
        return form

    # --- profiles -----------------------------------------------------------------------------------------------

    async def profiles(self, request: Request, session: Session, principal: Principal) -> Response:
        """The look-up form, and the profile it finds with the codes the profile holds. A look-up that finds
        nothing counts towards the failed look-up limit, as a code search does (docs/api.md#rate-limits)."""
        authorize(principal, Capability.READ_PROFILES)
        authorize(principal, Capability.READ_CODES)
        databases = await self.services.profiles.list_databases(principal)
        asked = {name: request.query_params.get(name, "").strip() for name in ("db_id", "matching", "value")}
        asked["matching"] = asked["matching"] if asked["matching"] in MATCHING else "email"
        if not asked["db_id"] and len(databases) == 1:
            asked["db_id"] = str(databases[0].id)  # the one database is the one meant
        page = self._page(
            request,
            session,
            principal,
            title="Profiles",
            databases=databases,
            matching=MATCHING,
            asked=asked,
            errors={},
            profile=None,
            codes=[],
            more=False,
        )
        if not asked["value"] or not databases:
            return render("profiles.html", page)
        try:
            found, codes = await self._profile(request, principal, databases, asked)
        except (BadRequest, NotFound, Conflict) as error:
            # next to the database's field when it names it, else next to the value (no profile found, several
            # found, or a value that cannot be a phone number...)
            errors = field_errors(error, ("db_id",))
            page["errors"] = {"db_id": errors["db_id"]} if "db_id" in errors else {"value": error.text}
            return render("profiles.html", page, status_of(error))
        page.update(profile=found, codes=codes[:PROFILE_CODES_SHOWN], more=len(codes) > PROFILE_CODES_SHOWN)
        return render("profiles.html", page)

    async def _profile(
        self, request: Request, principal: Principal, databases: list[DatabaseView], asked: dict[str, str]
    ) -> tuple[ProfileView, list[HeldCode]]:
        if not asked["db_id"].isdecimal() or int(asked["db_id"]) not in {database.id for database in databases}:
            raise BadRequest("Field `db_id`: choose one of the account's databases")
        fields = {"db_id": asked["db_id"], "matching": asked["matching"], asked["matching"]: asked["value"]}
        reference = convert(fields, ProfileRef)
        return await self.console._guarded_lookup(
            principal,
            request,
            lambda: self.services.profiles.profile_and_codes(principal, reference, PROFILE_CODES_SHOWN + 1),
        )

    # --- tokens -------------------------------------------------------------------------------------------------

    async def tokens(self, request: Request, session: Session, principal: Principal) -> Response:
        return await self._listing("tokens", request, session, principal)

    async def _listing(
        self,
        kind: str,
        request: Request,
        session: Session,
        principal: Principal,
        errors: Mapping[str, str] | None = None,
        given: Mapping[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        """The ``tokens`` or the ``webhooks`` page: the account's list, the form that adds one (with what was
        ``given`` and its ``errors`` when it was refused), and the message of the change just made (``?done=``)."""
        authorize(principal, Capability.MANAGE)
        given = given or {}
        page: dict[str, Any]
        if kind == "tokens":
            page = {
                "tokens": await self.services.tokens.list(principal),
                "roles": [role.value for role in Role],
                "given": {"name": given.get("name", ""), "role": given.get("role", Role.WRITE.value)},
            }
        else:
            chosen = {event.value for event in WebhookEventType if given.get(f"event.{event.value}")}
            page = {
                "webhooks": await self.services.webhooks.list(principal),
                "event_types": [event.value for event in WebhookEventType],
                "given": {"url": given.get("url", ""), "description": given.get("description", ""), "events": chosen},
            }
        done = DONE.get(request.query_params.get("done", ""))
        context = self._page(request, session, principal, title=kind.title(), done=done, errors=errors or {}, **page)
        return render(f"{kind}.html", context, status)

    async def _shown(self, request: Request, session: Session, principal: Principal, kind: str) -> Response:
        """The page of a new token or webhook secret: the value once, then the page saying it was shown."""
        authorize(principal, Capability.MANAGE)
        path = f"/{kind}s/created"
        shown = self.once.take(request, session, path)
        page = self._page(request, session, principal, title=f"New {kind}", shown=shown, kind=kind)
        return self.once.forget(render("shown_once.html", page, 200 if shown else 410), path)

    async def create_token(self, request: Request, session: Session, principal: Principal) -> Response:
        form = await self._form(request, session, principal)
        try:
            created = await self.services.tokens.create(
                principal, convert({"name": form.get("name", ""), "role": form.get("role", "")}, TokenCreate)
            )
        except BadRequest as error:
            errors = field_errors(error, ("name", "role"))
            return await self._listing("tokens", request, session, principal, errors, form, 400)
        shown = {"id": created.id, "name": created.name, "role": created.role, "token": created.token}
        return self.once.give(request, session, "/tokens/created", shown)

    async def token_created(self, request: Request, session: Session, principal: Principal) -> Response:
        return await self._shown(request, session, principal, "token")

    async def confirm_revoke(self, request: Request, session: Session, principal: Principal) -> Response:
        authorize(principal, Capability.MANAGE)
        token = await self._token(principal, request.path_params["token_id"])
        page = self._page(
            request,
            session,
            principal,
            title="Revoke a token",
            token=token,
            own=token.id == principal.token_id,
        )
        return render("token_revoke.html", page)

    async def revoke(self, request: Request, session: Session, principal: Principal) -> Response:
        """Revoke a token. Revoking the token this session signed in with ends the session: its cookie goes, and
        the next page would refuse it anyway (each page looks the token up again)."""
        await self._form(request, session, principal)
        token_id = request.path_params["token_id"]
        await self.services.tokens.revoke(principal, convert({"id": token_id}, TokenRevoke))
        if token_id == principal.token_id:
            response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
            response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
            return response
        return RedirectResponse(f"{PREFIX}/tokens?done=revoked", status_code=303)

    async def _token(self, principal: Principal, token_id: int) -> TokenView:
        for token in await self.services.tokens.list(principal):
            if token.id == token_id:
                return token
        raise NotFound(f"Token {token_id} not found")

    # --- webhooks -----------------------------------------------------------------------------------------------

    async def webhooks(self, request: Request, session: Session, principal: Principal) -> Response:
        return await self._listing("webhooks", request, session, principal)

    async def create_webhook(self, request: Request, session: Session, principal: Principal) -> Response:
        form = await self._form(request, session, principal)
        # one checkbox per event type, each a field of its own (a console form keeps one value per name)
        events = [kind.value for kind in WebhookEventType if form.get(f"event.{kind.value}")]
        fields = {"url": form.get("url", ""), "events": events, "description": form.get("description", "")}
        try:
            created = await self.services.webhooks.create(principal, convert(fields, WebhookCreate))
        except BadRequest as error:
            errors = field_errors(error, ("url", "events", "description"))
            return await self._listing("webhooks", request, session, principal, errors, form, 400)
        shown = {"id": created.id, "url": created.url, "secret": created.secret}
        return self.once.give(request, session, "/webhooks/created", shown)

    async def webhook_created(self, request: Request, session: Session, principal: Principal) -> Response:
        return await self._shown(request, session, principal, "webhook")

    async def webhook(self, request: Request, session: Session, principal: Principal) -> Response:
        """One webhook, and its latest deliveries with their failures (webhooks/deliveries)."""
        authorize(principal, Capability.MANAGE)
        hook = await self._webhook(principal, request.path_params["webhook_id"])
        asked = WebhookDeliveriesRequest(id=hook.id, limit=DELIVERIES_SHOWN)
        deliveries = await self.services.webhooks.deliveries(principal, asked)
        page = self._page(
            request,
            session,
            principal,
            title=f"Webhook #{hook.id}",
            webhook=hook,
            deliveries=deliveries,
            failed=sum(delivery.state == "failed" for delivery in deliveries),
            max_shown=DELIVERIES_SHOWN,
            done=DONE.get(request.query_params.get("done", "")),
        )
        return render("webhook.html", page)

    async def confirm_webhook(self, request: Request, session: Session, principal: Principal) -> Response:
        authorize(principal, Capability.MANAGE)
        action = request.query_params.get("action", "")
        if action not in ("disable", "delete"):
            raise BadRequest("Unknown action: disable or delete")
        hook = await self._webhook(principal, request.path_params["webhook_id"])
        page = self._page(
            request, session, principal, title=f"{WEBHOOK_ACTIONS[action]} a webhook", webhook=hook, action=action
        )
        return render("webhook_confirm.html", page)

    async def act_on_webhook(self, request: Request, session: Session, principal: Principal) -> Response:
        form = await self._form(request, session, principal)
        webhook_id = request.path_params["webhook_id"]
        action = form.get("action", "")
        if action in ("enable", "disable"):
            update = convert({"id": webhook_id, "active": action == "enable"}, WebhookUpdate)
            await self.services.webhooks.update(principal, update)
            return RedirectResponse(f"{PREFIX}/webhooks/{webhook_id}?done={action}d", status_code=303)
        if action == "delete":
            await self.services.webhooks.delete(principal, convert({"id": webhook_id}, WebhookRef))
            return RedirectResponse(f"{PREFIX}/webhooks?{urlencode({'done': 'deleted'})}", status_code=303)
        raise BadRequest(f"Unknown action {action!r}: one of {', '.join(WEBHOOK_ACTIONS)}")

    async def _webhook(self, principal: Principal, webhook_id: int) -> WebhookView:
        for hook in await self.services.webhooks.list(principal):
            if hook.id == webhook_id:
                return hook
        raise NotFound(f"Webhook {webhook_id} not found")


def people_routes(console: Console) -> list[BaseRoute]:
    """The routes of the profiles, tokens and webhooks pages, for the console's mount (``console_mount``)."""
    people = People(console)
    page = console._signed_in
    return [
        Route("/profiles", page(people.profiles), methods=["GET"]),
        Route("/tokens", page(people.tokens), methods=["GET"]),
        Route("/tokens", page(people.create_token), methods=["POST"]),
        Route("/tokens/created", page(people.token_created), methods=["GET"]),
        Route("/tokens/{token_id:int}/revoke", page(people.confirm_revoke), methods=["GET"]),
        Route("/tokens/{token_id:int}/revoke", page(people.revoke), methods=["POST"]),
        Route("/webhooks", page(people.webhooks), methods=["GET"]),
        Route("/webhooks", page(people.create_webhook), methods=["POST"]),
        Route("/webhooks/created", page(people.webhook_created), methods=["GET"]),
        Route("/webhooks/{webhook_id:int}", page(people.webhook), methods=["GET"]),
        Route("/webhooks/{webhook_id:int}/confirm", page(people.confirm_webhook), methods=["GET"]),
        Route("/webhooks/{webhook_id:int}/action", page(people.act_on_webhook), methods=["POST"]),
    ]
