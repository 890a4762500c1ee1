"""The inbox's own sites (add and remove, in settings) and "import from my website" (in the library).

A router included by ``copyhunt.inbox.app.create_app``; the work is done by ``copyhunt.coverage``
and ``copyhunt.site_import``. Every form carries the session's CSRF token (``auth.check_csrf``), and
the customer id comes from the session, never from the form.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at runtime.
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from copyhunt import coverage
from copyhunt.config import Settings
from copyhunt.hitsdb.models import DOMAIN_MAX
from copyhunt.inbox import auth
from copyhunt.inbox.accounts_routes import settings_page
from copyhunt.inbox.library_routes import result_rows
from copyhunt.site_import import URL_MAX, ImportFailed, import_site

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Signed = Annotated[auth.PageSession, Depends(auth.current_session)]
Posted = Annotated[auth.PageSession, Depends(auth.check_csrf)]
DomainField = Annotated[str, Form(max_length=DOMAIN_MAX + 100)]  # room for a pasted address


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _site_page(request: Request, sess: auth.PageSession, message: str, error: bool = False) -> Response:
    return settings_page(request, sess, status=422 if error else 200, site_message=message, site_error=error)


@router.post("/settings/sites")
def add_site(request: Request, sess: Posted, domain: DomainField = "",
             note: Annotated[str, Form(max_length=200)] = "") -> Response:
    assert sess.who is not None
    try:
        added = coverage.add_own_site(auth.engine_of(request), sess.who.customer_id, domain, "settings", sess.who.actor, note)
    except ValueError as exc:
        return _site_page(request, sess, f"{domain.strip()[:100] or 'That'} cannot be an own site: {exc}.", error=True)
    said = f"{added.domain} is one of your own sites." if added.added else f"{added.domain} was one of your own sites already."
    n = added.hits_authorised
    if n:
        said += " 1 hit on it is now an approved use." if n == 1 else f" {n} hits on it are now approved uses."
    return _site_page(request, sess, said)


@router.post("/settings/sites/remove")
def remove_site(request: Request, sess: Posted, domain: DomainField = "") -> Response:
    assert sess.who is not None
    if not coverage.remove_own_site(auth.engine_of(request), sess.who.customer_id, domain.strip().lower()):
        return auth.error_page(request, 404, "There is no such own site in your settings.", sess)
    return _site_page(request, sess, f"{domain.strip()} is no longer one of your own sites. Hits approved because of it stay approved; reopen any you want to pursue.")


@router.get("/library/import")
def import_form(request: Request, sess: Signed) -> Response:
    return auth.render(request, "library_import.html", session=sess, url="", outcome=None, message=None)


@router.post("/library/import")
async def import_from_site(request: Request, sess: Posted, url: Annotated[str, Form(max_length=URL_MAX)] = "") -> Response:
    """Crawl the customer's site (in a subprocess, bounded by the import limits) and register its
    images; a page with one result per image, or a sentence saying why nothing could be read."""
    assert sess.who is not None
    try:
        outcome = await run_in_threadpool(import_site, auth.engine_of(request), _settings(request), sess.who.customer_id, url, sess.who.actor)
    except ImportFailed as exc:
        return auth.render(request, "library_import.html", status=422, session=sess, url=url, outcome=None,
                           message=f"Nothing was imported: {exc}.")
    return auth.render(request, "library_import.html", session=sess, url=outcome.url, outcome=outcome, message=None,
                       results=result_rows(outcome.results, complete=True), counts=outcome.counts())
