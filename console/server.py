"""The console's aiohttp application: pages, their JSON API, the live tail, sign-in.

Every route but ``/signin``, ``/static/`` and ``/healthz`` needs a scope (``auth.py``); a
tenant scope binds its tenant into every query (``queries.py``), the explain form and the
live tail's filter, so nothing of another tenant leaves the server.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from dnsflow.console import pages
from dnsflow.console.auth import COOKIE, Auth, Scope
from dnsflow.console.explain import Explainer, ExplainError
from dnsflow.console.metrics import ConsoleMetrics
from dnsflow.console.queries import ConsoleQueryError, Queries
from dnsflow.console.tail import EventFeed, FilterError, TailFilter, format_line

log = logging.getLogger(__name__)

PUBLIC = ("/signin", "/static/", "/healthz", "/metrics")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
KEEPALIVE_S = 15.0


class BadParam(ValueError):
    pass


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParam(f"{name}: expected a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise BadParam(f"{name}: must be between {lo} and {hi}")
    return value


def _minutes(request: web.Request) -> int:
    """The time window asked for: a day unless said, a year at most."""
    return _int(request, "minutes", 1440, 1, 525600)


def _limit(request: web.Request, default: int = 200, most: int = 2000) -> int:
    """How many rows a list may show."""
    return _int(request, "limit", default, 1, most)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class Console:
    def __init__(self, queries: Queries, explainer: Explainer, auth: Auth,
                 feed: EventFeed | None = None, *, tail_note: str = "") -> None:
        self.queries = queries
        self.explainer = explainer
        self.auth = auth
        self.feed = feed
        self.tail_note = tail_note or "no live event bus here (start the console with --kafka)"
        self.metrics = ConsoleMetrics(feed)

    # -- the application -------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        reads = {  # GET (and HEAD) only
            "/": self.page_traffic, "/anomalies": self.page_anomalies,
            "/alerts": self.page_alerts, "/policy": self.page_policy, "/tail": self.page_tail,
            "/healthz": self.healthz, "/metrics": self.metrics.handler,
            "/api/tenants": self.api_tenants, "/api/traffic": self.api_traffic,
            "/api/top": self.api_top, "/api/anomalies": self.api_anomalies,
            "/api/alerts": self.api_alerts, "/api/policy_log": self.api_policy_log,
            "/api/tail": self.api_tail,
        }
        r = app.router
        r.add_routes([web.get(path, handler) for path, handler in reads.items()])
        r.add_get("/signin", self.signin_form)
        r.add_post("/signin", self.signin)
        r.add_post("/signout", self.signout)
        r.add_route("*", "/api/explain", self.api_explain)  # GET or POST, else 405 with Allow
        r.add_static("/static/", str(files("dnsflow.console").joinpath("static")))
        app.on_shutdown.append(self._shutdown)
        return app

    async def _shutdown(self, app: web.Application) -> None:
        if self.feed is not None:
            await self.feed.close()

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        api = request.path.startswith("/api/")
        started = time.perf_counter()
        try:
            resp = await self._guarded(request, handler, api)
        except web.HTTPException as exc:
            self.metrics.observe(request, exc.status, started)
            raise
        self.metrics.observe(request, resp.status, started)
        return resp

    async def _guarded(self, request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                       api: bool) -> web.StreamResponse:
        if not request.path.startswith(PUBLIC):
            scope = self.auth.scope(request)
            if scope is None:
                if api:
                    return _json({"error": "unauthorised: send Authorization: Bearer <token>"},
                                 401)
                target = quote(request.path_qs, safe="")
                raise web.HTTPSeeOther(f"/signin?next={target}")
        try:
            resp = await handler(request)
        except (BadParam, FilterError, ExplainError) as exc:
            resp = _json({"error": str(exc)}, 400) if api else self._problem(request, exc, 400)
        except PermissionError as exc:
            resp = _json({"error": str(exc)}, 403) if api else self._problem(request, exc, 403)
        except ConsoleQueryError as exc:
            resp = _json({"error": f"ClickHouse: {exc}"}, 502) if api else \
                self._problem(request, f"ClickHouse: {exc}", 502)
        if not resp.prepared:
            resp.headers.update(HEADERS)
            if not request.path.startswith("/static/"):  # tenant data: never in a cache
                resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    def _problem(self, request: web.Request, exc: object, status: int) -> web.Response:
        scope = self.auth.scope(request)
        body = f'<p class="error" id="problem">{pages.escape(str(exc))}</p>'
        html = pages.layout(request.path, "Problem", body, tenants=[], tenant="", minutes=1440,
                            who=scope.label if scope else "", all_tenants=False)
        return web.Response(text=html, status=status, content_type="text/html")

    # -- shared bits -------------------------------------------------------------------------

    def _scope(self, request: web.Request) -> Scope:
        scope = self.auth.scope(request)  # the guard let it through: never None here
        assert scope is not None
        return scope

    def _tenant(self, request: web.Request) -> str:
        return self._scope(request).tenant_param(request.query.get("tenant") or None)

    async def _page(self, request: web.Request, title: str, body: str) -> web.Response:
        scope = self._scope(request)
        tenants = ([scope.tenant] if scope.tenant is not None
                   else await self.queries.tenants(""))
        html = pages.layout(
            request.path, title, body, tenants=tenants, tenant=self._tenant(request),
            minutes=_minutes(request),
            who=f"signed in: {scope.label}" if self.auth.required else "",
            all_tenants=scope.tenant is None)
        return web.Response(text=html, content_type="text/html")

    # -- pages -------------------------------------------------------------------------------

    async def page_traffic(self, request: web.Request) -> web.Response:
        t, m = self._tenant(request), _minutes(request)
        series = await self.queries.traffic(t, m)
        top = await self.queries.top(t, m, _limit(request, 15, 500))
        return await self._page(request, "Traffic", pages.traffic(series, top))

    async def page_anomalies(self, request: web.Request) -> web.Response:
        t, m = self._tenant(request), _minutes(request)
        found = await self.queries.anomalies(t, m, _limit(request))
        return await self._page(request, "Anomalies", pages.anomalies(found))

    async def page_alerts(self, request: web.Request) -> web.Response:
        t, m = self._tenant(request), _minutes(request)
        found = await self.queries.alerts(t, m, _limit(request))
        return await self._page(request, "Alerts", pages.alerts(found))

    async def page_policy(self, request: web.Request) -> web.Response:
        t = self._tenant(request)
        form = {k: request.query.get(k, "") for k in
                ("client", "ns_tenant", "namespace", "name", "type", "tenant", "minutes")}
        answer, error = None, ""
        if form["name"] or form["client"]:
            try:
                answer = self._explain(request, {**form, "tenant": form["ns_tenant"]})
            except (ExplainError, PermissionError) as exc:
                error = str(exc)
        entries = await self.queries.policy_log(t, _limit(request))
        body = pages.policy(entries, form, answer, error, self.explainer.policies.label)
        return await self._page(request, "Policy", body)

    async def page_tail(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        flt = {k: request.query.get(k, "") for k in
               ("tenant", "namespace", "pod", "name", "decision")}
        body = pages.tail(flt, scope.tenant)
        if self.feed is None:
            body = f'<p class="error">{pages.escape(self.tail_note)}</p>' + body
        return await self._page(request, "Live tail", body)

    # -- sign-in -----------------------------------------------------------------------------

    @staticmethod
    def _next(value: str) -> str:
        return value if value.startswith("/") and not value.startswith("//") else "/"

    async def signin_form(self, request: web.Request, error: str = "",
                          status: int = 200) -> web.Response:
        if not self.auth.required:
            raise web.HTTPSeeOther("/")
        html = pages.template("signin.html").substitute(
            next=pages.escape(self._next(request.query.get("next", "/"))),
            error=pages.escape(error))
        resp = web.Response(text=html, status=status, content_type="text/html")
        return resp

    async def signin(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token", "")).strip()
        if not self.auth.required:
            raise web.HTTPSeeOther("/")
        if not token or self.auth.scope_for_token(token) is None:
            return await self.signin_form(request, "That token is not valid.", 401)
        resp = web.HTTPSeeOther(self._next(str(form.get("next", "/"))))
        secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
        resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=secure,
                        path="/", max_age=12 * 3600)
        raise resp

    async def signout(self, request: web.Request) -> web.Response:
        resp = web.HTTPSeeOther("/signin")
        resp.del_cookie(COOKIE, path="/")
        raise resp

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"ok": True})

    # -- API ---------------------------------------------------------------------------------

    async def api_tenants(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        return _json({"tenants": await self.queries.tenants(scope.tenant_param(None))})

    async def api_traffic(self, request: web.Request) -> web.Response:
        m = _minutes(request)
        series = await self.queries.traffic(self._tenant(request), m)
        return _json({"minutes": m, "tenants": series})

    async def api_top(self, request: web.Request) -> web.Response:
        m = _minutes(request)
        top = await self.queries.top(self._tenant(request), m, _limit(request, 15, 500))
        return _json({"minutes": m, **top})

    async def api_anomalies(self, request: web.Request) -> web.Response:
        m = _minutes(request)
        found = await self.queries.anomalies(self._tenant(request), m, _limit(request))
        return _json({"minutes": m, "incidents": found})

    async def api_alerts(self, request: web.Request) -> web.Response:
        m = _minutes(request)
        found = await self.queries.alerts(self._tenant(request), m, _limit(request))
        return _json({"minutes": m, "alerts": found})

    async def api_policy_log(self, request: web.Request) -> web.Response:
        found = await self.queries.policy_log(self._tenant(request), _limit(request))
        return _json({"entries": found})

    def _explain(self, request: web.Request, form: dict[str, str]) -> dict[str, Any]:
        return self.explainer.answer(form, self._scope(request).tenant)

    async def api_explain(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "POST"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        form: dict[str, str] = {k: str(v) for k, v in request.query.items()}
        if request.method == "POST":
            if request.content_type == "application/json":
                try:
                    body = orjson.loads(await request.read())
                except orjson.JSONDecodeError:
                    raise BadParam("body: not JSON") from None
                if not isinstance(body, dict):
                    raise BadParam("body: expected a JSON object")
                form.update({k: str(v) for k, v in body.items() if v is not None})
            else:
                form.update({k: str(v) for k, v in (await request.post()).items()})
        return _json(self._explain(request, form))

    async def api_tail(self, request: web.Request) -> web.StreamResponse:
        flt = TailFilter.from_mapping(request.query).scoped(self._scope(request).tenant)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no", **HEADERS})
        if self.feed is None:
            await resp.prepare(request)
            await resp.write(b"event: problem\ndata: "
                             + orjson.dumps({"error": self.tail_note}) + b"\n\n")
            return resp
        async with self.feed.subscribe(flt) as sub:
            await resp.prepare(request)  # after subscribing: nothing published from now is lost
            await resp.write(b": live\n\n")
            with contextlib.suppress(ConnectionResetError):
                async for ev in sub.events(KEEPALIVE_S):
                    if ev is None:
                        await resp.write(b": keep-alive\n\n")
                        continue
                    data = orjson.dumps({"line": format_line(ev), "event": ev})
                    await resp.write(b"event: dns\ndata: " + data + b"\n\n")
        return resp
