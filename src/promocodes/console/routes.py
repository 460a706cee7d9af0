"""The console's pages and forms, mounted at /console (docs/console.md).

Every page works through the services with the signed-in token's :class:`Principal`, exactly as an API request
does: the services keep each account's data apart, :func:`authorize` refuses what the role may not do (whatever
the page offered), and each change lands in the code's history under the token's name (docs/api.md#history). The
API's guards apply too: a sign-in with a bad token counts towards the failed-token limit of its address, and a code
search that finds nothing towards the failed look-up limit (docs/api.md#rate-limits).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from promocodes.console.people import people_routes
from promocodes.console.programs import ProgramPages
from promocodes.console.session import COOKIE, SESSION_SECONDS, Session, SessionSigner, console_key
from promocodes.console.views import HERE, PREFIX, SecurityHeaders, read_form, render
from promocodes.console.views import convert as _convert
from promocodes.console.views import status_of as _status
from promocodes.errors import BadRequest, Forbidden, NotFound, PromocodeError, Unauthorized
from promocodes.models import ROLE_CAPABILITIES, Capability, Principal
from promocodes.schemas import (
    ActivateRequest,
    CodeReport,
    CodeRequest,
    DetachRequest,
    HistoryEvent,
    HistoryRequest,
    ProgramRef,
    ProgramView,
    UpdateRequest,
)
from promocodes.service.auth import authorize, token_hash
from promocodes.service.programs import program_view

if TYPE_CHECKING:
    from promocodes.http.app import RequestPipeline

T = TypeVar("T")
logger = logging.getLogger("promocodes")

#: what a write or admin token may do to a code from its page: the label of its button and of its confirmation
ACTIONS = {
    "activate": "Activate",
    "rollback": "Roll back the activation",
    "expire": "Change the expiry",
    "detach": "Detach from its profile",
}
#: the message the code page shows after an action; fixed texts, so nothing in the address is ever shown as is
DONE = {
    "activate": "The code was activated.",
    "rollback": "The activation was rolled back.",
    "expire": "The expiry was changed.",
    "detach": "The code was detached from its profile.",
}
#: the most events the code page shows (the latest ones); the history method pages through the rest
HISTORY_SHOWN = 1000
_HISTORY_PAGE = 1000


def _expiry_from_form(value: str) -> str:
    """The date of the form's ``datetime-local`` field (``2026-12-31T23:59``, read as UTC) as RFC 3339; an RFC 3339
    date passes as it is; empty means "remove the expiry"."""
    value = value.strip()
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%dT%H:%M:%SZ") if len(value) <= 19 else value
    except ValueError:
        raise BadRequest("Field `expire_date`: give a date and time such as 2026-12-31T23:59") from None


class Console:
    """The console's handlers, over the API's pipeline (its services, settings and guards)."""

    def __init__(self, pipeline: RequestPipeline) -> None:
        self.pipeline = pipeline
        self.services = pipeline.services
        self.signer = SessionSigner(console_key(pipeline.settings.console_secret))
        self.pages = ProgramPages(self)

    # --- sessions -----------------------------------------------------------------------------------------------

    def _session(self, request: Request) -> Session | None:
        return self.signer.load(request.cookies.get(COOKIE))

    def _set_cookie(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.signer.dump(session),
            max_age=SESSION_SECONDS,
            path=PREFIX,
            httponly=True,  # no script reads it
            samesite="strict",  # no other site's page sends it
            secure=request.url.scheme == "https",
        )

    async def _principal(self, session: Session | None) -> Principal | None:
        """The signed-in token's principal, read again on every page so that a revoked token ends its sessions.
        The cookie holds the token's hash, which is what the database keeps (service/auth.py's token_hash)."""
        if session is None or session.token_digest is None:
            return None
        return await self.services.authenticator.principal_of_digest(session.token_digest)

    def _context(self, request: Request, session: Session, principal: Principal | None, **page: Any) -> dict[str, Any]:
        capabilities = ROLE_CAPABILITIES[principal.role] if principal is not None else frozenset()
        return {
            "prefix": PREFIX,
            "csrf": self.signer.csrf_token(session),
            "principal": principal,
            "can_write": Capability.WRITE_CODES in capabilities,
            "can_manage": Capability.MANAGE in capabilities,
            **page,
        }

    def _address(self, request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def _signed_in(
        self, handler: Callable[[Request, Session, Principal], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A page for a signed-in token: anyone else is sent to sign in; a failure is a page saying what failed."""

        async def page(request: Request) -> Response:
            session = self._session(request)
            principal = None
            try:
                principal = await self._principal(session)
                if session is None or principal is None:
                    return RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
                self.pipeline.limiter.check(f"token:{principal.token_id}")
                return await handler(request, session, principal)
            except PromocodeError as error:
                fallback = session or Session.fresh()
                context = self._context(request, fallback, principal, title="Error", error=error.text)
                return render("error.html", context, _status(error))

        return page

    async def _guarded_lookup(self, principal: Principal, request: Request, lookup: Callable[[], Awaitable[T]]) -> T:
        """A look-up by a code the person typed: counted by the API's failed look-up guard, so that the console is
        no way around it (docs/api.md#rate-limits)."""
        keys = (f"token:{principal.token_id}", f"address:{self._address(request)}")
        self.pipeline.failed_lookups.check(*keys)
        try:
            return await lookup()
        except NotFound:
            self.pipeline.failed_lookups.failed(*keys)
            raise

    # --- sign-in and sign-out -----------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        signed_in = await self._principal(self._session(request)) is not None
        return RedirectResponse(f"{PREFIX}/programs" if signed_in else f"{PREFIX}/sign-in", status_code=303)

    async def sign_in_page(self, request: Request) -> Response:
        session = self._session(request)
        if await self._principal(session) is not None:
            return RedirectResponse(f"{PREFIX}/programs", status_code=303)
        return self._sign_in_form(request, session, None, 200)

    def _sign_in_form(self, request: Request, session: Session | None, message: str | None, status: int) -> Response:
        anonymous = session if session is not None and session.token_digest is None else Session.fresh()
        response = render(
            "sign_in.html", self._context(request, anonymous, None, title="Sign in", error=message), status
        )
        if anonymous is not session:
            self._set_cookie(request, response, anonymous)
        return response

    async def sign_in(self, request: Request) -> Response:
        session = self._session(request)
        try:
            form = await read_form(request)
            if not self.signer.csrf_valid(session, form.get("csrf")):
                raise Forbidden("The form has expired or did not come from this console: load the page and try again")
            token = form.get("token", "").strip()
            await self.pipeline.authenticate(token or None, self._address(request))
        except Unauthorized:
            return self._sign_in_form(request, session, "That token is not valid or was revoked.", 401)
        except PromocodeError as error:
            return self._sign_in_form(request, None, error.text, _status(error))
        response = RedirectResponse(f"{PREFIX}/programs", status_code=303)
        self._set_cookie(request, response, Session.fresh(token_hash(token)))  # a new nonce: no fixation
        return response

    async def sign_out(self, request: Request) -> Response:
        session = self._session(request)
        try:
            form = await read_form(request)
        except PromocodeError as error:
            return render(
                "error.html",
                self._context(request, Session.fresh(), None, title="Error", error=error.text),
                _status(error),
            )
        if not self.signer.csrf_valid(session, form.get("csrf")):
            context = self._context(
                request,
                session or Session.fresh(),
                None,
                title="Error",
                error="The form has expired: load the page and try again",
            )
            return render("error.html", context, 403)
        response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    # --- programs -----------------------------------------------------------------------------------------------

    async def programs(self, request: Request, session: Session, principal: Principal) -> Response:
        listed = await self.services.programs.list(principal)
        deleted = request.query_params.get("deleted", "")
        # programs/get's stats, one program at a time (docs/api.md#program-statistics)
        shown = [await self.services.programs.get(principal, ProgramRef(loyalty_id=view.id)) for view in listed]
        return render(
            "programs.html",
            self._context(
                request,
                session,
                principal,
                title="Programs",
                programs=shown,
                deleted=deleted.isdigit() and int(deleted),
            ),
        )

    async def _program_view(self, request: Request, principal: Principal) -> ProgramView:
        """The program without its statistics: the code pages show only its name (the figures cost a count)."""
        ref = _convert(dict(request.path_params), ProgramRef)
        return program_view(await self.services.programs.program(principal, ref.loyalty_id))

    # --- a code -------------------------------------------------------------------------------------------------

    async def _code(self, request: Request, principal: Principal, code: str) -> CodeReport:
        asked = _convert({**request.path_params, "code": code}, CodeRequest)
        return await self._guarded_lookup(principal, request, lambda: self.services.promocodes.get(principal, asked))

    async def _history(self, principal: Principal, report: CodeReport) -> tuple[list[HistoryEvent], bool]:
        """The code's latest events, newest first, and whether older ones were left out."""
        events: list[HistoryEvent] = []
        after = 0
        while True:
            asked = HistoryRequest(loyalty_id=report.loyalty_id, code=report.code, after=after, limit=_HISTORY_PAGE)
            page = await self.services.promocodes.history(principal, asked)
            events.extend(page)
            if len(page) < _HISTORY_PAGE:
                break
            after = page[-1].id
        return events[::-1][:HISTORY_SHOWN], len(events) > HISTORY_SHOWN

    async def code(self, request: Request, session: Session, principal: Principal) -> Response:
        loyalty_id = request.path_params["loyalty_id"]
        code = request.query_params.get("code", "").strip()
        if not code:
            return RedirectResponse(f"{PREFIX}/programs/{loyalty_id}", status_code=303)
        view = await self._program_view(request, principal)
        try:
            report = await self._code(request, principal, code)
        except NotFound as error:
            return await self.pages.program_page(request, session, principal, 404, searched=code, error=error.text)
        events, older = await self._history(principal, report)
        done = DONE.get(request.query_params.get("done", ""))
        context = self._context(
            request,
            session,
            principal,
            title=f"Code {report.code}",
            program=view,
            report=report,
            events=events,
            older=older,
            done=done,
            actions=ACTIONS,
        )
        return render("code.html", context)

    async def confirm(self, request: Request, session: Session, principal: Principal) -> Response:
        """The confirmation page of an action: what will change, and the one button that changes it."""
        authorize(principal, Capability.WRITE_CODES)
        action = request.query_params.get("action", "")
        if action not in ACTIONS:
            raise BadRequest(f"Unknown action {action!r}: one of {', '.join(ACTIONS)}")
        view = await self._program_view(request, principal)
        report = await self._code(request, principal, request.query_params.get("code", ""))
        expire_date = _expiry_from_form(request.query_params.get("expire_date", "")) if action == "expire" else ""
        context = self._context(
            request,
            session,
            principal,
            title=ACTIONS[action],
            program=view,
            report=report,
            action=action,
            label=ACTIONS[action],
            expire_date=expire_date,
        )
        return render("confirm.html", context)

    async def act(self, request: Request, session: Session, principal: Principal) -> Response:
        """Carry out a confirmed action. The CSRF token and the role are checked before anything is looked at."""
        form = await read_form(request)
        if not self.signer.csrf_valid(session, form.get("csrf")):
            raise Forbidden("The form has expired or did not come from this console: load the page and try again")
        authorize(principal, Capability.WRITE_CODES)
        action = form.get("action", "")
        fields: dict[str, Any] = {"loyalty_id": request.path_params["loyalty_id"], "code": form.get("code", "")}
        if form.get("db_id") and form.get("profile_id"):
            # the profile the code page showed the code bound to: the change applies to that binding
            fields.update(db_id=form["db_id"], profile_id=form["profile_id"])
        promocodes = self.services.promocodes
        if action == "activate":
            await self._guarded_lookup(
                principal, request, lambda: promocodes.activate(principal, _convert(fields, ActivateRequest))
            )
        elif action == "rollback":
            rollback = _convert({**fields, "activated": False}, UpdateRequest)
            await self._guarded_lookup(principal, request, lambda: promocodes.update(principal, rollback))
        elif action == "expire":
            fields.pop("db_id", None), fields.pop("profile_id", None)
            expiry = _convert({**fields, "expire_date": _expiry_from_form(form.get("expire_date", ""))}, UpdateRequest)
            await self._guarded_lookup(principal, request, lambda: promocodes.update(principal, expiry))
        elif action == "detach":
            await self._guarded_lookup(
                principal, request, lambda: promocodes.detach(principal, _convert(fields, DetachRequest))
            )
        else:
            raise BadRequest(f"Unknown action {action!r}: one of {', '.join(ACTIONS)}")
        query = urlencode({"code": fields["code"], "done": action})
        return RedirectResponse(f"{PREFIX}/programs/{fields['loyalty_id']}/code?{query}", status_code=303)

    async def not_found(self, request: Request, error: Exception) -> Response:
        """The console's own 404 and 405 pages (the API answers its envelope instead)."""
        status = error.status_code if isinstance(error, HTTPException) else 500
        text = "No such page in the console" if status == 404 else "That is not how this page is used"
        context = self._context(request, Session.fresh(), None, title="Not found", error=text)
        return render("error.html", context, status)


class ConsoleMount(Mount):
    """The console's mount; ``/console`` itself (without the slash) is sent on to ``/console/``."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and get_route_path(scope) == self.path:
            root_path = scope.get("root_path", "")
            return Match.FULL, {
                "path_params": {},
                "app_root_path": scope.get("app_root_path", root_path),
                "root_path": root_path + self.path,
                "endpoint": self.app,
            }
        return super().matches(scope)


def console_mount(pipeline: RequestPipeline) -> Mount:
    """The console at /console, served by the API's own process over its pipeline (docs/console.md)."""
    console = Console(pipeline)
    signed_in = console._signed_in
    app = Starlette(
        routes=[
            Route("/", console.home, methods=["GET"]),
            Route("/sign-in", console.sign_in_page, methods=["GET"]),
            Route("/sign-in", console.sign_in, methods=["POST"]),
            Route("/sign-out", console.sign_out, methods=["POST"]),
            Route("/programs", signed_in(console.programs), methods=["GET"]),
            *console.pages.routes(),  # console/programs.py: a program's page, its forms, import, export
            Route("/programs/{loyalty_id:int}/code", signed_in(console.code), methods=["GET"]),
            Route("/programs/{loyalty_id:int}/confirm", signed_in(console.confirm), methods=["GET"]),
            Route("/programs/{loyalty_id:int}/action", signed_in(console.act), methods=["POST"]),
            *people_routes(console),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: console.not_found},
    )
    return ConsoleMount(PREFIX, app=app)
