"""The inbox web application: ``create_app(settings)`` returns a FastAPI app.

Run it with ``copyhunt serve`` (uvicorn). Two ways in, both per customer:

* pages (``/signin``, ``/hits``, ``/hits/{id}``, ``/settings``): sign in with e-mail and password
  (accounts made at ``/signup``, see copyhunt.inbox.accounts_routes) or with a customer token, get
  a session cookie (HttpOnly, SameSite=Lax; only its hash is stored). Every form post carries a
  CSRF token derived from the session id, checked in constant time;
* JSON (``/api/hits``, ``/api/hits/{id}``): ``Authorization: Bearer <token>``; 401 without it.
  OpenAPI at ``/api/openapi.json``.

Who is calling is answered by the dependencies in copyhunt.inbox.auth (``current_customer``,
``check_csrf``, ``api_customer``), which routers in other files use too.

Failed token checks (the sign-in form, Bearer tokens) are limited per client address
(copyhunt.inbox.ratelimit): past SIGNIN_FAILURES_MAX in SIGNIN_WINDOW_SECONDS, 429 with Retry-After.

Tenant isolation: the signed-in customer id goes into every query (copyhunt.hitsdb.workflow); a hit
or image of another customer is "not found". Images are served only through routes that check the
hit belongs to the caller, re-encoded (copyhunt.inbox.images), never from a path in a request.
Web text (titles, URLs, operator names) is autoescaped by Jinja2 and only http(s) URLs become
links; a strict Content-Security-Policy (scripts only as files from /static, never inline or eval) backs that up.
"""

# No "from __future__ import annotations" here: FastAPI reads the route signatures at runtime, and
# some of their annotations name dependencies local to create_app.
import datetime as dt
import json
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Literal

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from copyhunt import coverage
from copyhunt.config import Settings
from copyhunt.hitsdb import accounts, tokens, workflow
from copyhunt.hitsdb.digest import format_money, safe_href
from copyhunt.hitsdb.store import make_engine
from copyhunt.inbox import auth
from copyhunt.inbox.accounts_routes import EMAIL_FIELD_MAX, PASSWORD_FIELD_MAX
from copyhunt.inbox.accounts_routes import router as accounts_router
from copyhunt.inbox.auth import SESSION_COOKIE, csrf_token_for
from copyhunt.inbox.api_images import router as images_router
from copyhunt.inbox.images import RenderedImages
from copyhunt.inbox.library_routes import router as library_router
from copyhunt.inbox.ratelimit import FailureLimiter
from copyhunt.inbox.sites_routes import router as sites_router
from copyhunt.inbox.views import (
    ACTION_LABELS,
    DONE_MESSAGES,
    STATUS_LABELS,
    breakdown_rows,
    format_when,
    licence_check_rows,
    page_state,
    parse_region,
    query_string,
    shorten,
)

__all__ = ["create_app", "csrf_token_for"]

HERE = Path(__file__).parent
SIGNIN_COOKIE = auth.FORM_COOKIE  # double-submit nonce of the sign-in form (login CSRF)
PAGE_SIZE = 50
# What the inbox's bulk bar offers: a person's decisions about many uses at once.
BULK_ACTIONS = ("claim", "licensed", "not_mine")
BULK_DONE = {"claim": "claimed", "licensed": "marked licensed", "not_mine": "marked not yours"}
TOKEN_FIELD_MAX = auth.TOKEN_FIELD_MAX
SIGNIN_NOTICES = {
    "confirmed": "Your e-mail address is confirmed. Sign in with it and your password.",
    "reset": "Your password is changed, and every session signed out. Sign in with the new password.",
    "out": "Signed out everywhere.",
}
MAX_HIT_ID = 2**63 - 1  # bigint: larger ids would be a database error, not a 404
# Failed token checks per client address: enough for a customer mistyping or pasting the wrong
# token a few times, far too few to guess anything (tokens carry 256 random bits).
SIGNIN_FAILURES_MAX = 10
SIGNIN_WINDOW_SECONDS = 300
CSP = (
    "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

HitId = Annotated[int, PathParam(ge=1, le=MAX_HIT_ID)]


# ---- JSON API models ---------------------------------------------------------------------------
class HitOut(BaseModel):
    """A hit as the API returns it. Web text (titles, URLs, names) is data here, not markup."""

    id: int
    customer_id: str
    image_id: str
    page_url: str
    image_url: str
    page_title: str | None
    domain: str | None
    registrable_domain: str | None
    operator_name: str | None
    operator_source: str | None
    operator_address: str | None
    operator_email: str | None
    operator_phone: str | None
    operator_role: str | None = Field(description="site-operator, marketplace-seller or unknown.")
    published_at: dt.date | None
    published_source: str | None
    first_seen: dt.date
    last_seen: dt.date
    usage_since: dt.date | None = Field(description="Start of the use: the publication date or the first sighting.")
    usage_since_source: str | None
    usage_days: int | None = Field(description="Days the image has been in use, as of last_seen.")
    online: bool = Field(description="Found again by the newest run.")
    page_status: int | None = Field(description="HTTP status of the page in the newest crawl.")
    page_online: bool | None = Field(description="Whether that status means the page is up (2xx/3xx).")
    attribution_found: bool | None = Field(description="Whether the page credits the author.")
    attribution_evidence: str | None = Field(description="The credit found, or what was looked for.")
    score: float
    licensed: bool
    licence_id: str | None
    licence_match: Any = Field(description="The licence check (JSON): the licence that matched, or why none did.")
    license_value_cents: int
    currency: str
    value_breakdown: Any = Field(description="Itemised licence value (JSON).")
    region: Any = Field(description='Matched region, relative coordinates: {"query": [x0,y0,x1,y1], "reference": [...]}.')
    status: str = Field(description="Workflow status: " + ", ".join(workflow.STATUSES))
    image_sha256: str | None
    html_sha256: str | None = Field(description="SHA-256 of the page's HTML snapshot (evidence).")
    fetched_at: dt.datetime | None = Field(description="When the evidence snapshot was fetched (UTC).")


class HitList(BaseModel):
    total: int
    limit: int
    offset: int
    hits: list[HitOut]


class ActionIn(BaseModel):
    action: Literal["claim", "licensed", "not_mine", "approve", "reopen"]
    note: str | None = Field(default=None, max_length=workflow.NOTE_MAX)


def _json_or_none(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def hit_out(row: dict[str, Any]) -> HitOut:
    fetched = row.get("fetched_at")
    if fetched is not None and fetched.tzinfo is None:
        fetched = fetched.replace(tzinfo=dt.timezone.utc)  # SQLite returns the stored UTC without zone
    data = {k: row.get(k) for k in HitOut.model_fields}
    data.update(
        value_breakdown=_json_or_none(row.get("value_breakdown")),
        region=_json_or_none(row.get("region")),
        licence_match=_json_or_none(row.get("licence_match")),
        fetched_at=fetched,
        online=bool(row["online"]),
        licensed=bool(row["licensed"]),
    )
    return HitOut(**data)


# ---- the application ---------------------------------------------------------------------------
def create_app(settings: Settings, engine: Engine | None = None, failures: FailureLimiter | None = None) -> FastAPI:
    """The inbox for the hits database of ``settings`` (or the given engine, which the caller owns).

    The schema must exist (``copyhunt serve`` runs ``create_schema`` first). ``failures`` limits
    failed token checks per client address (default: SIGNIN_FAILURES_MAX per SIGNIN_WINDOW_SECONDS).
    """
    limiter = failures or FailureLimiter(SIGNIN_FAILURES_MAX, SIGNIN_WINDOW_SECONDS)
    own_engine = engine is None
    db: Engine = engine if engine is not None else make_engine(settings.database_url)
    images = RenderedImages(settings.blob_root, settings.max_image_pixels)
    secure_cookies = settings.inbox_url.lower().startswith("https://")

    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template is HTML: escape every value
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(money=format_money, when=format_when, short=shorten)
    env.globals.update(status_label=lambda s: STATUS_LABELS.get(s, s), safe_href=safe_href, password_min=accounts.PASSWORD_MIN)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if own_engine:
            db.dispose()

    app = FastAPI(
        title="copyhunt inbox",
        version="1",
        description="A customer's hits: where their registered images were found on the web.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # Swagger UI loads scripts from a CDN; the schema itself is at openapi_url
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.engine = db
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"  # page links must not leak inbox URLs
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    auth.install(app, db, env, limiter, secure_cookies)
    app.state.settings = settings
    app.include_router(accounts_router)
    app.include_router(images_router)
    app.include_router(sites_router)  # before the library's: /library/import is not an image id
    app.include_router(library_router)
    render, error, base, to_signin, set_cookie = auth.render, auth.error_page, auth.base_path, auth.to_signin, auth.set_cookie
    session = auth.page_session
    Signed = Annotated[auth.PageSession, Depends(auth.current_session)]
    Form_ = Annotated[auth.PageSession, Depends(auth.check_csrf)]

    def caller_hit(request: Request, hit_id: int) -> tuple[tokens.Identity, dict[str, Any] | None]:
        """For the image routes: the caller (401 if nobody) and their hit ``hit_id`` (None if not theirs)."""
        who = auth.any_identity(request)
        if who is None:
            raise HTTPException(401, "sign in first", headers={"WWW-Authenticate": "Bearer"})
        return who, workflow.get_hit(db, who.customer_id, hit_id)

    # ---- sign-in ---------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        return RedirectResponse(f"{base(request)}/hits", status_code=303)

    def signin_page(request: Request, status: int = 200, message: str | None = None, **ctx: Any) -> HTMLResponse:
        ctx.setdefault("unconfirmed_email", None)
        ctx.setdefault("email", "")
        ctx.setdefault("notice", None)
        return auth.form_page(request, "signin.html", status=status, message=message, **ctx)

    @app.get("/signin", include_in_schema=False)
    def signin_form(request: Request, done: Annotated[str, Query(max_length=20)] = "") -> Response:
        if session(request).who is not None:
            return RedirectResponse(f"{base(request)}/hits", status_code=303)
        return signin_page(request, notice=SIGNIN_NOTICES.get(done))

    @app.post("/signin", include_in_schema=False)
    def signin(
        request: Request,
        token: Annotated[str, Form(max_length=TOKEN_FIELD_MAX)] = "",
        email: Annotated[str, Form(max_length=EMAIL_FIELD_MAX)] = "",
        password: Annotated[str, Form(max_length=PASSWORD_FIELD_MAX)] = "",
        nonce: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        """Sign in with e-mail and password, or with a token; both give the same session."""
        wait = auth.token_wait(request)
        if wait is not None:
            minutes = -(-wait // 60)
            response = signin_page(request, 429, f"Too many failed sign-ins from your address. "
                                                 f"Try again in {minutes} minute{'s' if minutes > 1 else ''}.")
            response.headers["Retry-After"] = str(wait)
            return response
        if not auth.nonce_ok(request, nonce):
            return signin_page(request, 403, "The sign-in form expired. Please try again.")
        if token.strip():
            identity = auth.counted_identity(request, token.strip())
            if identity is None:
                return signin_page(request, 401, "That token is not valid.")
        else:
            result = accounts.authenticate(db, email, password)
            if result.unconfirmed:
                return signin_page(request, 403, "Please confirm your e-mail address first: open the link we "
                                   "sent you. No mail? We can send it again.", unconfirmed_email=email.strip())
            if result.identity is None:
                auth.record_failure(request)
                return signin_page(request, 401, "That e-mail address and password do not match an account.",
                                   email=email.strip())
            identity = result.identity
        sid = tokens.start_session(db, identity)
        response = RedirectResponse(f"{base(request)}/hits", status_code=303)
        set_cookie(response, request, SESSION_COOKIE, sid, int(tokens.SESSION_LIFETIME.total_seconds()), "lax")
        response.delete_cookie(auth.FORM_COOKIE, path=base(request) or "/")
        return response

    @app.post("/signout", include_in_schema=False)
    def signout(request: Request, csrf_token: Annotated[str, Form(max_length=auth.CSRF_FIELD_MAX)] = "") -> Response:
        # The cookie and the server-side session must agree: a refused sign-out (no or a wrong
        # CSRF token) changes neither, a good one ends both. Without a live session there is
        # nothing to end and the stale cookie goes.
        sess = session(request)
        if sess.who is not None and sess.sid:
            if not auth.same(csrf_token_for(sess.sid), csrf_token):
                return error(request, 403, auth.EXPIRED_FORM, sess)
            tokens.end_session(db, sess.sid)
        response = to_signin(request)
        response.delete_cookie(SESSION_COOKIE, path=base(request) or "/")
        return response

    # ---- inbox -----------------------------------------------------------------------------
    def hit_query(status: str, domain: str, min_score: str, since: str, sort: str, page: int = 1) -> workflow.HitQuery:
        """The inbox's filters as typed in the form; ValueError with a sentence a person reads."""
        try:
            score = float(min_score) if min_score.strip() else None
        except ValueError:
            raise ValueError("The minimum score must be a number between 0 and 1.") from None
        try:
            since_date = dt.date.fromisoformat(since.strip()) if since.strip() else None
        except ValueError:
            raise ValueError("'New since' must be a date (YYYY-MM-DD).") from None
        try:
            return workflow.HitQuery(
                status=status or None, domain=domain.strip() or None, min_score=score,
                new_since=since_date, sort=sort or "value", limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE,
            )
        except ValueError as exc:
            raise ValueError(f"Invalid filter: {exc}.") from None

    @app.get("/hits", include_in_schema=False)
    def inbox(
        request: Request,
        sess: Signed,
        status: str = "",
        domain: Annotated[str, Query(max_length=253)] = "",
        min_score: Annotated[str, Query(max_length=20)] = "",
        since: Annotated[str, Query(max_length=20)] = "",
        sort: Annotated[str, Query(max_length=10)] = "value",
        page: Annotated[int, Query(ge=1, le=100_000)] = 1,
        done: Annotated[str, Query(max_length=20)] = "",
        changed: Annotated[int, Query(ge=0)] = 0,
    ) -> Response:
        who = sess.who
        try:
            query = hit_query(status, domain, min_score, since, sort, page)
        except ValueError as exc:
            return error(request, 422, str(exc), sess)
        result = workflow.find_hits(db, who.customer_id, query)
        params = {"status": status, "domain": domain.strip(), "min_score": min_score.strip(), "since": since.strip(), "sort": sort}
        pages = max(1, -(-result.total // PAGE_SIZE))
        return render(
            request, "hits.html", session=sess,
            hits=[{**h, "found_available": images.available(h["image_sha256"])} for h in result.hits],
            total=result.total,
            claimable=[format_money(c, cur) for cur, c in result.claimable_cents.items()] or [format_money(0)],
            filters=params, statuses=workflow.STATUSES, sorts=workflow.SORTS,
            domains=workflow.customer_domains(db, who.customer_id),
            page=page, pages=pages,
            prev_link=query_string(params, page=page - 1) if page > 1 else None,
            next_link=query_string(params, page=page + 1) if page < pages else None,
            bulk_actions=[(a, ACTION_LABELS[a]) for a in workflow.ACTIONS if a in BULK_ACTIONS],
            bulk_done=BULK_DONE.get(done), changed=changed,
        )

    @app.post("/hits/bulk", include_in_schema=False)
    def bulk_action(
        request: Request,
        sess: Form_,
        action: Annotated[str, Form(max_length=20)] = "",
        scope: Annotated[str, Form(pattern="^(selected|filter)$")] = "selected",
        hit_id: Annotated[list[int], Form(max_length=workflow.BULK_MAX)] = [],  # noqa: B006 (FastAPI copies it)
        status: Annotated[str, Form(max_length=20)] = "",
        domain: Annotated[str, Form(max_length=253)] = "",
        min_score: Annotated[str, Form(max_length=20)] = "",
        since: Annotated[str, Form(max_length=20)] = "",
        sort: Annotated[str, Form(max_length=10)] = "value",
    ) -> Response:
        """One action on the ticked hits, or on every hit the filter shows (all its pages)."""
        who = sess.who
        if action not in BULK_ACTIONS:
            return error(request, 422, "Choose what to do with the hits: claim, licensed or not mine.", sess)
        try:
            query = hit_query(status, domain, min_score, since, sort)
        except ValueError as exc:
            return error(request, 422, str(exc), sess)
        if scope == "selected" and not hit_id:
            return error(request, 422, "Tick the hits to change first, or choose all that the filter shows.", sess)
        try:
            if scope == "filter":
                result = workflow.apply_bulk(db, who.customer_id, action, who.actor, query=query)
            else:
                result = workflow.apply_bulk(db, who.customer_id, action, who.actor, hit_ids=hit_id)
        except ValueError as exc:
            return error(request, 422, f"{exc}.", sess)
        params = {"status": status, "domain": domain.strip(), "min_score": min_score.strip(), "since": since.strip(), "sort": sort}
        return RedirectResponse(f"{base(request)}/hits{query_string(params, done=action, changed=result.changed)}", status_code=303)

    @app.get("/hits/{hit_id}", include_in_schema=False)
    def hit_page(request: Request, sess: Signed, hit_id: HitId, done: Annotated[str, Query(max_length=20)] = "") -> Response:
        who = sess.who
        hit = workflow.get_hit(db, who.customer_id, hit_id)
        if hit is None:
            return error(request, 404, "There is no such hit in your inbox.", sess)
        image = workflow.get_image(db, who.customer_id, hit["image_id"]) or {}
        licence_check = licence_check_rows(hit["licence_match"])
        site_domain = hit["registrable_domain"] or hit["domain"]
        listed = {s["domain"] for s in coverage.list_own_sites(db, who.customer_id)}
        return render(
            request, "hit.html", session=sess,
            hit=hit,
            image_title=image.get("title") or hit["image_id"],
            found_available=images.available(hit["image_sha256"]),
            registered_available=images.available(image.get("sha256")),
            region=parse_region(hit["region"]),
            page_href=safe_href(hit["page_url"]),
            image_href=safe_href(hit["image_url"]),
            breakdown=breakdown_rows(hit["value_breakdown"], hit["currency"], licence_shown=bool(licence_check)),
            licence_check=licence_check,
            page_state=page_state(hit["page_status"], hit["page_online"]),
            history=workflow.hit_history(db, who.customer_id, hit_id),
            actions=[(a, ACTION_LABELS[a]) for a in workflow.ACTIONS if workflow.ACTIONS[a] != hit["status"]],
            done=DONE_MESSAGES.get(done),
            site_domain=site_domain,
            site_listed=any(site_domain == d or (site_domain or "").endswith("." + d) for d in listed),
        )

    @app.post("/hits/{hit_id}/action", include_in_schema=False)
    def hit_action(
        request: Request,
        sess: Form_,
        hit_id: HitId,
        action: Annotated[str, Form(max_length=20)] = "",
        note: Annotated[str, Form(max_length=5000)] = "",
        own_site: Annotated[str, Form(max_length=5)] = "",
    ) -> Response:
        who = sess.who
        if action not in workflow.ACTIONS:
            return error(request, 422, "Unknown action.", sess)
        result = workflow.apply_action(db, who.customer_id, hit_id, action, who.actor, note or None)
        if result is None:
            return error(request, 404, "There is no such hit in your inbox.", sess)
        done = action if result.recorded else "unchanged"
        if action == "approve" and own_site == "on":
            hit = workflow.get_hit(db, who.customer_id, hit_id) or {}
            try:
                coverage.add_own_site(db, who.customer_id, hit.get("registrable_domain") or hit.get("domain") or "", "approve", who.actor)
            except ValueError as exc:
                return error(request, 422, f"The page's domain cannot be an own site: {exc}.", sess)
            done = "approve_site"
        return RedirectResponse(f"{base(request)}/hits/{hit_id}?done={done}", status_code=303)

    def image_response(data: bytes | None) -> Response:
        if data is None:
            raise HTTPException(404, "image not available")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=600"})

    @app.get("/hits/{hit_id}/found.jpg", include_in_schema=False)
    def found_image(request: Request, hit_id: HitId, size: Literal["thumb", "full"] = "full") -> Response:
        hit = caller_hit(request, hit_id)[1]
        return image_response(images.jpeg(hit["image_sha256"], size) if hit else None)

    @app.get("/hits/{hit_id}/registered.jpg", include_in_schema=False)
    def registered_image(request: Request, hit_id: HitId, size: Literal["thumb", "full"] = "full") -> Response:
        who, hit = caller_hit(request, hit_id)
        image = workflow.get_image(db, who.customer_id, hit["image_id"]) if hit else None
        return image_response(images.jpeg(image["sha256"], size) if image else None)

    # ---- settings --------------------------------------------------------------------------
    @app.post("/settings", include_in_schema=False)
    def save_settings(
        request: Request,
        sess: Form_,
        digest: Annotated[str, Form(max_length=10)] = "",
    ) -> Response:
        who = sess.who
        workflow.set_digest_opt_out(db, who.customer_id, opt_out=digest != "on")
        return RedirectResponse(f"{base(request)}/settings?saved=1", status_code=303)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    # ---- JSON API --------------------------------------------------------------------------
    Caller = Annotated[tokens.Identity, Depends(auth.api_customer)]

    @app.get("/api/hits", response_model=HitList, tags=["hits"], summary="The caller's hits")
    def api_hits(
        who: Caller,
        status: Annotated[Literal["new", "claimed", "licensed", "not_mine"] | None, Query()] = None,
        domain: Annotated[str | None, Query(max_length=253, description="Host or registrable domain")] = None,
        min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
        since: Annotated[dt.date | None, Query(description="First seen on or after this date")] = None,
        sort: Literal["value", "date", "score"] = "value",
        limit: Annotated[int, Query(ge=1, le=workflow.MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> HitList:
        """Hits of the customer the token belongs to, most valuable (or newest) first."""
        query = workflow.HitQuery(status=status, domain=domain or None, min_score=min_score, new_since=since,
                                  sort=sort, limit=limit, offset=offset)
        result = workflow.find_hits(db, who.customer_id, query)
        return HitList(total=result.total, limit=limit, offset=offset, hits=[hit_out(h) for h in result.hits])

    @app.get("/api/hits/{hit_id}", response_model=HitOut, tags=["hits"], summary="One of the caller's hits",
             responses={404: {"description": "No such hit for this customer"}})
    def api_hit(who: Caller, hit_id: HitId) -> HitOut:
        hit = workflow.get_hit(db, who.customer_id, hit_id)
        if hit is None:
            raise HTTPException(404, "no such hit")
        return hit_out(hit)

    @app.post("/api/hits/{hit_id}/action", response_model=HitOut, tags=["hits"],
              summary="Mark a hit: claim, licensed, not_mine or reopen (recorded in its history)",
              responses={404: {"description": "No such hit for this customer"}})
    def api_hit_action(who: Caller, hit_id: HitId, body: ActionIn) -> HitOut:
        if workflow.apply_action(db, who.customer_id, hit_id, body.action, who.actor, body.note) is None:
            raise HTTPException(404, "no such hit")
        hit = workflow.get_hit(db, who.customer_id, hit_id)
        assert hit is not None
        return hit_out(hit)

    return app
