"""The inbox's account pages: sign-up, e-mail confirmation, password reset, and in settings the
API tokens (create, shown once; list; revoke) and "sign out everywhere". The settings page also
lists the own sites, whose forms are ``copyhunt.inbox.sites_routes``.

A router included by ``copyhunt.inbox.app.create_app``; the work is done by
``copyhunt.hitsdb.accounts`` and ``copyhunt.hitsdb.tokens``, who is calling by
``copyhunt.inbox.auth``. Forms before sign-in carry the double-submit nonce (``auth.nonce_ok``),
forms after it the session's CSRF token (``auth.check_csrf``).

No page tells whether an address has an account: sign-up, "send the link again" and "forgot my
password" answer the same "check your mail" page whatever the address, and the mail itself says
what applies. Mails per client address are limited (``auth.mail_wait``).
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at runtime.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from copyhunt import coverage
from copyhunt.config import Settings
from copyhunt.hitsdb import accounts, tokens
from copyhunt.hitsdb.models import NAME_MAX
from copyhunt.inbox import auth

__all__ = ["router"]

EMAIL_FIELD_MAX = 320  # longer than any address: accounts.check_email refuses past 254 with a clear message
PASSWORD_FIELD_MAX = 1000  # longer than accounts.PASSWORD_MAX, for the same reason
LINK_FIELD_MAX = 100  # a link secret is 43 characters
LABEL_MAX = 100  # a token's name in settings

router = APIRouter(include_in_schema=False)
Signed = Annotated[auth.PageSession, Depends(auth.current_session)]
Posted = Annotated[auth.PageSession, Depends(auth.check_csrf)]
Email = Annotated[str, Form(max_length=EMAIL_FIELD_MAX)]
Password = Annotated[str, Form(max_length=PASSWORD_FIELD_MAX)]
Nonce = Annotated[str, Form(max_length=100)]
LinkSecret = Annotated[str, Query(max_length=LINK_FIELD_MAX)]
KeyId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{12}$")]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _expired(request: Request, template: str, **ctx: Any) -> Response:
    return auth.form_page(request, template, status=403, message="This form expired. Please try again.", **ctx)


def _mail_refused(request: Request, wait: int) -> Response:
    minutes = -(-wait // 60)
    response = auth.error_page(request, 429, f"Too many mails asked for from your address. Try again in {minutes} minutes.")
    response.headers["Retry-After"] = str(wait)
    return response


def _check_your_mail(request: Request, address: str) -> Response:
    return auth.render(request, "check_mail.html", email=address)


# ---- sign-up and confirmation ----------------------------------------------------------------------
@router.get("/signup")
def signup_form(request: Request) -> Response:
    return auth.form_page(request, "signup.html", message=None, email="", name="")


@router.post("/signup")
def signup(
    request: Request,
    email: Email = "",
    password: Password = "",
    name: Annotated[str, Form(max_length=NAME_MAX)] = "",
    nonce: Nonce = "",
) -> Response:
    again = {"email": email.strip(), "name": name.strip()}
    if not auth.nonce_ok(request, nonce):
        return _expired(request, "signup.html", **again)
    try:
        accounts.check_email(email), accounts.check_password(password)
    except accounts.AccountError as exc:
        return auth.form_page(request, "signup.html", status=422, message=str(exc), **again)
    wait = auth.mail_wait(request)  # before anything is created: no account without its mail
    if wait is not None:
        return _mail_refused(request, wait)
    done = accounts.sign_up(auth.engine_of(request), email, password, name)
    if done.confirm_secret is not None:
        accounts.mail_link(_settings(request), done.email, "confirm", done.confirm_secret)
    else:
        accounts.mail_link(_settings(request), done.email, "exists")
    return _check_your_mail(request, done.email)


@router.post("/signup/resend")
def resend_confirmation(request: Request, email: Email = "", nonce: Nonce = "") -> Response:
    if not auth.nonce_ok(request, nonce):
        return auth.error_page(request, 403, "This form expired. Go back to the sign-in page and try again.")
    wait = auth.mail_wait(request)
    if wait is not None:
        return _mail_refused(request, wait)
    secret = accounts.new_confirmation(auth.engine_of(request), email)
    if secret is not None:
        accounts.mail_link(_settings(request), email.strip().lower(), "confirm", secret)
    return _check_your_mail(request, email.strip())


@router.get("/signup/confirm")
def confirm_form(request: Request, token: LinkSecret = "") -> Response:
    # A button, not a state change on GET: mail scanners open links, people press buttons.
    return auth.form_page(request, "confirm.html", token=token, message=None)


@router.post("/signup/confirm")
def confirm(request: Request, token: Annotated[str, Form(max_length=LINK_FIELD_MAX)] = "", nonce: Nonce = "") -> Response:
    if not auth.nonce_ok(request, nonce):
        return _expired(request, "confirm.html", token=token)
    if not accounts.confirm(auth.engine_of(request), token):
        return auth.form_page(request, "confirm.html", status=400, token="",
                              message="This confirmation link is not valid any more. Sign in to have a new one sent.")
    return RedirectResponse(f"{auth.base_path(request)}/signin?done=confirmed", status_code=303)


# ---- password reset ------------------------------------------------------------------------------
@router.get("/password/forgot")
def forgot_form(request: Request) -> Response:
    return auth.form_page(request, "forgot.html", message=None)


@router.post("/password/forgot")
def forgot(request: Request, email: Email = "", nonce: Nonce = "") -> Response:
    if not auth.nonce_ok(request, nonce):
        return _expired(request, "forgot.html")
    wait = auth.mail_wait(request)
    if wait is not None:
        return _mail_refused(request, wait)
    secret = accounts.start_reset(auth.engine_of(request), email)
    if secret is not None:
        accounts.mail_link(_settings(request), email.strip().lower(), "reset", secret)
    return _check_your_mail(request, email.strip())


@router.get("/password/reset")
def reset_form(request: Request, token: LinkSecret = "") -> Response:
    return auth.form_page(request, "reset.html", token=token, message=None)


@router.post("/password/reset")
def reset(
    request: Request,
    token: Annotated[str, Form(max_length=LINK_FIELD_MAX)] = "",
    password: Password = "",
    nonce: Nonce = "",
) -> Response:
    if not auth.nonce_ok(request, nonce):
        return _expired(request, "reset.html", token=token)
    try:
        changed = accounts.reset_password(auth.engine_of(request), token, password)
    except accounts.AccountError as exc:
        return auth.form_page(request, "reset.html", status=422, token=token, message=str(exc))
    if not changed:
        return auth.form_page(request, "reset.html", status=400, token="",
                              message="This reset link is not valid any more. Ask for a new one.")
    response = RedirectResponse(f"{auth.base_path(request)}/signin?done=reset", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path=auth.base_path(request) or "/")
    return response


# ---- settings: tokens and sessions ---------------------------------------------------------------
def settings_page(request: Request, sess: auth.PageSession, status: int = 200, **ctx: Any) -> Response:
    assert sess.who is not None
    ctx.setdefault("saved", False)
    ctx.setdefault("new_token", None)
    ctx.setdefault("message", None)
    ctx.setdefault("site_message", None)
    ctx.setdefault("site_error", False)
    return auth.render(
        request, "settings.html", status=status, session=sess,
        key_id=sess.who.key_id, api_tokens=tokens.list_tokens(auth.engine_of(request), sess.who.customer_id),
        own_sites=coverage.list_own_sites(auth.engine_of(request), sess.who.customer_id), **ctx,
    )


@router.get("/settings")
def settings(request: Request, sess: Signed, saved: Annotated[str, Query(max_length=5)] = "") -> Response:
    return settings_page(request, sess, saved=saved == "1")


@router.post("/settings/tokens")
def create_token(request: Request, sess: Posted, label: Annotated[str, Form(max_length=LABEL_MAX)] = "") -> Response:
    """Make an API token; the page shows it this once (a page, not a redirect: no secret in a URL)."""
    assert sess.who is not None
    name = " ".join(label.split())
    if not name:
        return settings_page(request, sess, status=422, message="Give the token a name, such as the app that will use it.")
    token = tokens.issue_token(auth.engine_of(request), sess.who.customer_id, name)
    return settings_page(request, sess, new_token=token)


@router.post("/settings/tokens/{key_id}/revoke")
def revoke_token(request: Request, sess: Posted, key_id: KeyId) -> Response:
    assert sess.who is not None
    if not tokens.revoke_token(auth.engine_of(request), key_id, customer_id=sess.who.customer_id):
        return auth.error_page(request, 404, "There is no such token in your settings.", sess)
    # Revoking the token this browser signed in with ends this session too; the page follows.
    return RedirectResponse(f"{auth.base_path(request)}/settings", status_code=303)


@router.post("/settings/signout-everywhere")
def signout_everywhere(request: Request, sess: Posted) -> Response:
    assert sess.who is not None
    tokens.end_all_sessions(auth.engine_of(request), sess.who.customer_id)
    response = RedirectResponse(f"{auth.base_path(request)}/signin?done=out", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path=auth.base_path(request) or "/")
    return response
