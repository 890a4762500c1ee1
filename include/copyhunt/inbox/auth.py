"""Who is calling the inbox, as FastAPI dependencies any router can use.

``install(app, ...)`` (called by ``copyhunt.inbox.app.create_app``) puts the database, templates
and failure limiter on ``app.state`` and registers the handlers below; a router in another file
then declares what it needs::

    @router.get("/library")
    def library(request: Request, sess: Annotated[PageSession, Depends(current_session)]) -> Response:
        return render(request, "library.html", session=sess, images=...)  # header, CSRF token

    @router.post("/library/withdraw")
    def withdraw(request: Request, sess: Annotated[PageSession, Depends(check_csrf)]) -> Response: ...

    @router.get("/api/images")
    def api_images(who: Annotated[Identity, Depends(api_customer)]) -> ...: ...

* pages: ``current_session`` / ``current_customer`` read the session cookie; nobody signed in
  becomes a 303 to ``/signin`` (``SignInRequired``);
* forms: ``check_csrf`` also checks the ``csrf_token`` form field against the session in constant
  time; a missing or wrong one is a 403 page (``FormExpired``), and the session is left as it is;
* JSON: ``api_customer`` reads ``Authorization: Bearer <token>``; 401 without a valid one, 429 once
  the client address has failed too often (``copyhunt.inbox.ratelimit``).
"""

# No "from __future__ import annotations": FastAPI reads these signatures at runtime.
import hmac
import secrets
from typing import Annotated, Any, NamedTuple

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jinja2 import Environment
from sqlalchemy import Engine

from copyhunt.hitsdb import tokens, workflow
from copyhunt.inbox.ratelimit import FailureLimiter

__all__ = [
    "FormExpired",
    "PageSession",
    "SESSION_COOKIE",
    "SignInRequired",
    "api_customer",
    "base_path",
    "check_csrf",
    "csrf_token_for",
    "form_page",
    "nonce_ok",
    "current_customer",
    "current_session",
    "error_page",
    "install",
    "page_session",
    "render",
    "same",
]

SESSION_COOKIE = "copyhunt_session"
# Double-submit nonce of the forms shown before a session exists (sign-in, sign-up, password
# reset): login CSRF. A SameSite=Strict cookie that only our own pages set.
FORM_COOKIE = "copyhunt_signin"
TOKEN_FIELD_MAX = 200  # a token is ~60 characters; anything longer is not one
CSRF_FIELD_MAX = 100
# Mails (confirmation, reset) one client address may ask for per window: enough to retry a lost
# mail, too few to use the inbox to flood somebody's mailbox.
MAIL_REQUESTS_MAX = 5
MAIL_WINDOW_SECONDS = 3600
EXPIRED_FORM = "This form has expired. Go back, reload the page and try again."


class PageSession(NamedTuple):
    """The session cookie's id and whose session it is (both None when nobody is signed in)."""

    sid: str | None
    who: tokens.Identity | None


NO_SESSION = PageSession(None, None)


class SignInRequired(Exception):
    """Raised by a page dependency when nobody is signed in: answered with a 303 to /signin."""


class FormExpired(Exception):
    """Raised by check_csrf on a missing or wrong CSRF token: answered with a 403 page."""

    def __init__(self, session: PageSession):
        super().__init__(EXPIRED_FORM)
        self.session = session


def csrf_token_for(session_id: str) -> str:
    """The CSRF token of a session's forms: derived from the secret session id, so only a page
    rendered for that session can know it (the synchroniser-token pattern, nothing stored)."""
    return hmac.new(b"copyhunt-inbox-csrf", session_id.encode("ascii"), "sha256").hexdigest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two strings (False when either is missing)."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# ---- state on the app ----------------------------------------------------------------------------
def install(app: FastAPI, engine: Engine, env: Environment, limiter: FailureLimiter, secure_cookies: bool) -> None:
    """Give the app what these dependencies read, and the handlers of their exceptions."""
    app.state.engine = engine
    app.state.templates = env
    app.state.failures = limiter
    app.state.mail_requests = FailureLimiter(MAIL_REQUESTS_MAX, MAIL_WINDOW_SECONDS)
    app.state.secure_cookies = secure_cookies

    @app.exception_handler(SignInRequired)
    async def _signin_required(request: Request, _exc: SignInRequired) -> Response:
        return to_signin(request)

    @app.exception_handler(FormExpired)
    async def _form_expired(request: Request, exc: FormExpired) -> Response:
        return error_page(request, 403, EXPIRED_FORM, exc.session)


def engine_of(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def base_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def to_signin(request: Request) -> RedirectResponse:
    return RedirectResponse(f"{base_path(request)}/signin", status_code=303)


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int, samesite: str) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=base_path(request) or "/", httponly=True,
        secure=request.app.state.secure_cookies or request.url.scheme == "https",
        samesite=samesite,  # type: ignore[arg-type]
    )


# ---- pages ---------------------------------------------------------------------------------------
def page_session(request: Request) -> PageSession:
    """The session of the cookie, or NO_SESSION-like (sid, None) when it is missing, ended or expired."""
    sid = request.cookies.get(SESSION_COOKIE)
    return PageSession(sid, tokens.session_identity(engine_of(request), sid))


def current_session(request: Request) -> PageSession:
    """Dependency: the signed-in session (SignInRequired when there is none)."""
    sess = page_session(request)
    if sess.who is None or not sess.sid:
        raise SignInRequired()
    return sess


def current_customer(sess: Annotated[PageSession, Depends(current_session)]) -> tokens.Identity:
    """Dependency: who is signed in on this page (SignInRequired when nobody is)."""
    assert sess.who is not None
    return sess.who


def check_csrf(
    request: Request,
    csrf_token: Annotated[str, Form(max_length=CSRF_FIELD_MAX)] = "",
) -> PageSession:
    """Dependency of every form post: the signed-in session, whose CSRF token the form must carry."""
    sess = current_session(request)
    assert sess.sid is not None
    if not same(csrf_token_for(sess.sid), csrf_token):
        raise FormExpired(sess)
    return sess


def render(request: Request, template: str, status: int = 200, session: PageSession = NO_SESSION, **ctx: Any) -> HTMLResponse:
    """A template of the inbox, with the signed-in customer (for the header) and the CSRF token."""
    sid, who = session
    customer = workflow.get_customer(engine_of(request), who.customer_id) if who else None
    page = request.app.state.templates.get_template(template).render(
        base=base_path(request),
        customer=customer,
        csrf=csrf_token_for(sid) if sid and who else "",
        **ctx,
    )
    return HTMLResponse(page, status_code=status)


def error_page(request: Request, status: int, message: str, session: PageSession = NO_SESSION) -> HTMLResponse:
    return render(request, "error.html", status=status, session=session, message=message, status_code=status)


# ---- forms before sign-in -------------------------------------------------------------------------
def form_page(request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    """A page with a pre-sign-in form: a fresh nonce in the form and in a Strict cookie."""
    nonce = secrets.token_urlsafe(24)
    response = render(request, template, status=status, nonce=nonce, **ctx)
    set_cookie(response, request, FORM_COOKIE, nonce, 3600, "strict")
    return response


def nonce_ok(request: Request, nonce: str) -> bool:
    """Whether a pre-sign-in form was posted from a page we rendered for this browser."""
    return same(request.cookies.get(FORM_COOKIE), nonce)


# ---- tokens: the rate limit on failures ------------------------------------------------------------
def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def failures(request: Request) -> FailureLimiter:
    return request.app.state.failures  # type: ignore[no-any-return]


def token_wait(request: Request) -> int | None:
    """Seconds this client must wait before its next secret check, None if it may check now."""
    return failures(request).retry_after(client_address(request))


def record_failure(request: Request) -> None:
    failures(request).record_failure(client_address(request))


def mail_wait(request: Request) -> int | None:
    """None when this client may have one more mail sent (and counts it), else seconds to wait."""
    limiter: FailureLimiter = request.app.state.mail_requests
    wait = limiter.retry_after(client_address(request))
    if wait is None:
        limiter.record_failure(client_address(request))
    return wait


def too_many(wait: int) -> HTTPException:
    return HTTPException(429, "too many failed token checks from this address; try again later",
                         headers={"Retry-After": str(wait)})


def counted_identity(request: Request, token: str) -> tokens.Identity | None:
    """verify_token, with a wrong token counted against the client's address."""
    identity = tokens.verify_token(engine_of(request), token)
    if identity is None:
        record_failure(request)
    return identity


def bearer_identity(request: Request, token: str) -> tokens.Identity | None:
    wait = token_wait(request)
    if wait is not None:
        raise too_many(wait)
    return counted_identity(request, token[:TOKEN_FIELD_MAX])


def any_identity(request: Request) -> tokens.Identity | None:
    """Session cookie (pages) or Bearer token (API clients): for routes both may call, like images."""
    who = page_session(request).who
    if who is None:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            who = bearer_identity(request, credentials.strip())
    return who


# ---- JSON API --------------------------------------------------------------------------------------
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="customer token",
    description="An API token made in the inbox's settings (or by `copyhunt customers token CUSTOMER_ID`).",
)


def api_customer(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> tokens.Identity:
    """Dependency of every API route: the customer whose Bearer token this is (401 without one)."""
    identity = bearer_identity(request, credentials.credentials) if credentials else None
    if identity is None:
        raise HTTPException(401, "a valid customer token is required", headers={"WWW-Authenticate": "Bearer"})
    return identity
