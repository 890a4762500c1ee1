"""The customer's image library in the inbox: the grid of their images, one image's page (its
facts, licences and hits), upload (a form that works without scripts, enhanced by
``static/upload.js``), withdrawal, and licences (record, edit, end).

A router included by ``copyhunt.inbox.app.create_app``. Every route takes the customer from the
session and puts it into every query: another customer's image or licence is "not found" (404).
Forms carry the session's CSRF token; the upload, whose body is streamed rather than parsed by
FastAPI, takes it from the ``X-CSRF-Token`` header (the script) or the ``csrf_token`` field,
which the form puts before its files: without it no byte of a file is written to disk. Uploads
share the API's streamed parser and its limits (``copyhunt.inbox.api_images``). Images reach the
browser only re-encoded: the thumbnail made at upload (``copyhunt.thumbnails``) and a preview
rendered by ``copyhunt.inbox.images``.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at runtime.
import datetime as dt
import re
import secrets
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select

from copyhunt import registry
from copyhunt.config import Settings
from copyhunt.hitsdb.models import DOMAIN_MAX, NAME_MAX, Hit
from copyhunt.inbox import auth
from copyhunt.inbox.api_images import ImageId, read_upload, register_file
from copyhunt.inbox.images import RenderedImages
from copyhunt.thumbnails import Thumbnails

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Signed = Annotated[auth.PageSession, Depends(auth.current_session)]
Posted = Annotated[auth.PageSession, Depends(auth.check_csrf)]
LicenceId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
PAGE_SIZE = 48
HITS_SHOWN = 50  # on an image's page; the inbox lists them all
# A thumbnail changes only when its image's bytes do, and the image id names those bytes for good.
THUMB_CACHE = "private, max-age=86400"
DATE_FIELD_MAX = 10
SEARCH_MAX = 200  # a title search
HOST_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$")
STATUS_WORDS = {"created": "new", "existing": "already in your library", "rejected": "refused"}


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _thumbnails(request: Request) -> Thumbnails:
    settings = _settings(request)
    return Thumbnails(settings.blob_root, settings.max_image_pixels)


def _previews(request: Request) -> RenderedImages:
    state = request.app.state
    if getattr(state, "library_previews", None) is None:  # one cache per app
        state.library_previews = RenderedImages(_settings(request).blob_root, _settings(request).max_image_pixels)
    return state.library_previews  # type: ignore[no-any-return]


def _customer(sess: auth.PageSession) -> str:
    assert sess.who is not None
    return sess.who.customer_id


def _not_found(request: Request, sess: auth.PageSession) -> Response:
    return auth.error_page(request, 404, "There is no such image in your library.", sess)


# ---- the grid ------------------------------------------------------------------------------------
def _hit_counts(request: Request, customer_id: str, image_ids: list[str]) -> dict[str, int]:
    hits = Hit.__table__
    if not image_ids:
        return {}
    with auth.engine_of(request).connect() as conn:
        rows = conn.execute(select(hits.c.image_id, func.count()).where(hits.c.customer_id == customer_id, hits.c.image_id.in_(image_ids))
                            .group_by(hits.c.image_id)).all()
    return {image_id: int(n) for image_id, n in rows}


@router.get("/library")
def library(request: Request, sess: Signed, page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
            q: Annotated[str, Query(max_length=SEARCH_MAX)] = "") -> Response:
    customer_id, search = _customer(sess), " ".join(q.split())
    total, images = registry.page_of_images(auth.engine_of(request), customer_id, PAGE_SIZE, (page - 1) * PAGE_SIZE, search or None)
    pages = max(1, -(-total // PAGE_SIZE))
    return auth.render(request, "library.html", session=sess, images=images, total=total, page=page, pages=pages, q=search,
                       query=f"&q={quote(search, safe='')}" if search else "", hit_counts=_hit_counts(request, customer_id, [i["image_id"] for i in images]),
                       first=(page - 1) * PAGE_SIZE + 1, last=min(total, page * PAGE_SIZE))


# ---- upload --------------------------------------------------------------------------------------
def result_rows(results: list[registry.ImageResult], complete: bool = False) -> list[dict[str, Any]]:
    """Each result with its status in words; ``complete`` keeps the empty fields (for templates)."""
    return [{**(dict(r.__dict__) if complete else r.as_dict()), "words": STATUS_WORDS.get(r.status, r.status)} for r in results]


@router.post("/library/upload")
async def upload(request: Request, sess: Signed) -> Response:
    """One or many files (or ZIPs) from the form; a result per file. The script sends one file per
    request and asks for JSON; without it the browser posts them all and gets a page of results."""
    settings, engine, customer_id = _settings(request), auth.engine_of(request), _customer(sess)
    assert sess.sid is not None
    wants_json = "application/json" in request.headers.get("accept", "")
    expected = auth.csrf_token_for(sess.sid)
    header_ok = auth.same(expected, request.headers.get("x-csrf-token"))
    if request.headers.get("x-csrf-token") is not None and not header_ok:
        return _refused(request, sess, wants_json)  # a wrong header is refused before the body is read
    def token_shown(fields: dict[str, str]) -> bool:
        return header_ok or auth.same(expected, fields.get("csrf_token"))

    parsed = await read_upload(request, settings, single_file=False, may_spool=token_shown)
    try:
        if parsed.refused or not token_shown(parsed.fields):
            return _refused(request, sess, wants_json)
        results: list[registry.ImageResult] = []
        for part in parsed.files:
            results += await run_in_threadpool(register_file, engine, settings, customer_id, part, None)
        results += [registry.ImageResult(name, "rejected", reason=f"more than {len(parsed.files)} files in one upload; send the rest again")
                    for name in parsed.refused_files]
    finally:
        parsed.discard()
    if wants_json:
        return JSONResponse({"results": result_rows(results)})
    status = 200 if results else 422
    return auth.render(request, "library_upload.html", status=status, session=sess, results=result_rows(results, complete=True))


def _refused(request: Request, sess: auth.PageSession, wants_json: bool) -> Response:
    if wants_json:
        return JSONResponse({"detail": auth.EXPIRED_FORM}, 403)
    return auth.error_page(request, 403, auth.EXPIRED_FORM, sess)


# ---- one image -----------------------------------------------------------------------------------
def _hits_of(request: Request, customer_id: str, image_id: str) -> tuple[int, list[dict[str, Any]]]:
    hits = Hit.__table__
    mine = (hits.c.customer_id == customer_id) & (hits.c.image_id == image_id)
    with auth.engine_of(request).connect() as conn:
        total = conn.execute(select(func.count()).select_from(hits).where(mine)).scalar_one()
        rows = conn.execute(select(hits.c.id, hits.c.page_url, hits.c.domain, hits.c.status, hits.c.first_seen)
                            .where(mine).order_by(hits.c.first_seen.desc(), hits.c.id).limit(HITS_SHOWN)).all()
    return int(total), [dict(r._mapping) for r in rows]


def image_page(request: Request, sess: auth.PageSession, image: dict[str, Any], status: int = 200,
               message: str | None = None, form: dict[str, str] | None = None, done: str | None = None,
               covered: int = 0) -> Response:
    customer_id = _customer(sess)
    licences = registry.list_licences(auth.engine_of(request), customer_id, image["image_id"])
    hit_total, hits = _hits_of(request, customer_id, image["image_id"])
    return auth.render(request, "library_image.html", status=status, session=sess, image=image, licences=licences,
                       hits=hits, hit_total=hit_total, message=message, done=done, covered=covered,
                       today=dt.date.today().isoformat(), form=form or {"licence_id": "", "licensee_domain": "", "licensee_operator": "", "valid_from": "",
                                     "valid_to": "", "scope": "this"})


@router.get("/library/{image_id}")
def image_detail(request: Request, sess: Signed, image_id: ImageId, edit: Annotated[str, Query(max_length=100)] = "",
                 done: Annotated[str, Query(max_length=20)] = "", covered: Annotated[int, Query(ge=0)] = 0) -> Response:
    image = registry.get_image(auth.engine_of(request), _customer(sess), image_id)
    if image is None:
        return _not_found(request, sess)
    form = None
    if edit:
        licence = next((lic for lic in registry.list_licences(auth.engine_of(request), _customer(sess), image_id) if lic["id"] == edit), None)
        if licence is None:
            return auth.error_page(request, 404, "There is no such licence for this image.", sess)
        form = {"licence_id": licence["id"], "licensee_domain": licence["licensee_domain"] or "",
                "licensee_operator": licence["licensee_operator"] or "",
                "valid_from": licence["valid_from"].isoformat() if licence["valid_from"] else "",
                "valid_to": licence["valid_to"].isoformat() if licence["valid_to"] else "",
                "scope": "all" if "*" in licence["image_ids"] else "this"}
    return image_page(request, sess, image, form=form, done={"licence": "licence", "ended": "ended"}.get(done), covered=covered)


def _image_bytes_response(request: Request, body: bytes, etag: str) -> Response:
    headers = {"Cache-Control": THUMB_CACHE, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="image/jpeg", headers=headers)


@router.get("/library/{image_id}/thumb")
def thumbnail(request: Request, sess: Signed, image_id: ImageId) -> Response:
    """The thumbnail made at upload (or now, for an image registered before); only the owner's."""
    image = registry.get_image(auth.engine_of(request), _customer(sess), image_id)
    sha = image["sha256"] if image else None
    path = _thumbnails(request).ensure(sha) if isinstance(sha, str) and len(sha) == 64 else None
    if path is None:
        return Response("no such image", status_code=404, media_type="text/plain")
    return _image_bytes_response(request, path.read_bytes(), f'"t-{sha}"')


@router.get("/library/{image_id}/preview")
def preview(request: Request, sess: Signed, image_id: ImageId) -> Response:
    image = registry.get_image(auth.engine_of(request), _customer(sess), image_id)
    body = _previews(request).jpeg(image["sha256"], "full") if image else None
    if body is None:
        return Response("no such image", status_code=404, media_type="text/plain")
    return _image_bytes_response(request, body, f'"p-{image["sha256"]}"')


# ---- withdrawal ----------------------------------------------------------------------------------
@router.get("/library/{image_id}/withdraw")
def withdraw_confirm(request: Request, sess: Signed, image_id: ImageId) -> Response:
    image = registry.get_image(auth.engine_of(request), _customer(sess), image_id)
    if image is None:
        return _not_found(request, sess)
    return auth.render(request, "library_withdraw.html", session=sess, image=image)


@router.post("/library/{image_id}/withdraw")
def withdraw(request: Request, sess: Posted, image_id: ImageId) -> Response:
    if not registry.withdraw_image(auth.engine_of(request), _customer(sess), image_id):
        return _not_found(request, sess)
    return RedirectResponse(f"{auth.base_path(request)}/library/{image_id}", status_code=303)


# ---- licences ------------------------------------------------------------------------------------
class LicenceInvalid(ValueError):
    pass


def _date(text: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise LicenceInvalid(f"Give the {what} date as YYYY-MM-DD.") from None


def _host(text: str) -> str:
    host = text.strip().lower().rstrip(".")
    if host.startswith(("http://", "https://")):  # a pasted address: its host is what is meant
        host = host.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]
    if host.startswith("www."):
        host = host[4:]
    if host and not HOST_RE.match(host):
        raise LicenceInvalid("The licensee's domain is not a domain name (such as example.com).")
    return host


def _licence_values(form: dict[str, str]) -> tuple[str, str | None, dt.date, dt.date]:
    domain = _host(form["licensee_domain"])
    operator = " ".join(form["licensee_operator"].split()) or None
    if not domain and not operator:
        raise LicenceInvalid("Name the licensee: their domain, their name as the site's operator, or both.")
    valid_from, valid_to = _date(form["valid_from"], "start"), _date(form["valid_to"], "end")
    if valid_to < valid_from:
        raise LicenceInvalid("The licence ends before it starts.")
    return domain, operator, valid_from, valid_to


@router.post("/library/{image_id}/licences")
def record_licence(
    request: Request,
    sess: Posted,
    image_id: ImageId,
    licence_id: Annotated[str, Form(max_length=100)] = "",
    licensee_domain: Annotated[str, Form(max_length=DOMAIN_MAX + 20)] = "",
    licensee_operator: Annotated[str, Form(max_length=NAME_MAX)] = "",
    valid_from: Annotated[str, Form(max_length=DATE_FIELD_MAX)] = "",
    valid_to: Annotated[str, Form(max_length=DATE_FIELD_MAX)] = "",
    scope: Annotated[str, Form(pattern="^(this|all)$")] = "this",
) -> Response:
    """Record a licence of this image (or of all the customer's images), or change one of its licences."""
    engine, customer_id = auth.engine_of(request), _customer(sess)
    image = registry.get_image(engine, customer_id, image_id)
    if image is None:
        return _not_found(request, sess)
    form = {"licence_id": licence_id, "licensee_domain": licensee_domain, "licensee_operator": licensee_operator,
            "valid_from": valid_from, "valid_to": valid_to, "scope": scope}
    existing = None
    if licence_id:
        existing = next((lic for lic in registry.list_licences(engine, customer_id, image_id) if lic["id"] == licence_id), None)
        if existing is None:
            return auth.error_page(request, 404, "There is no such licence for this image.", sess)
    try:
        domain, operator, start, end = _licence_values(form)
    except LicenceInvalid as exc:
        return image_page(request, sess, image, status=422, message=str(exc), form=form)
    if scope == "all":
        image_ids = ["*"]
    elif existing is not None and "*" not in existing["image_ids"]:
        image_ids = sorted(set(existing["image_ids"]) | {image_id})  # an edit keeps the other images it covers
    else:
        image_ids = [image_id]
    new_id = licence_id or f"lic-{secrets.token_hex(8)}"
    covered = registry.put_licence(engine, customer_id, new_id, image_ids, start, end, domain, operator, actor=sess.who.actor)
    return RedirectResponse(f"{auth.base_path(request)}/library/{image_id}?done=licence&covered={covered}#licences", status_code=303)


@router.post("/library/{image_id}/licences/{licence_id}/end")
def end_licence(request: Request, sess: Posted, image_id: ImageId, licence_id: LicenceId) -> Response:
    """End a licence today: uses from tomorrow on are no longer covered by it."""
    engine, customer_id = auth.engine_of(request), _customer(sess)
    image = registry.get_image(engine, customer_id, image_id)
    licence = next((lic for lic in registry.list_licences(engine, customer_id, image_id) if lic["id"] == licence_id), None) if image else None
    if image is None or licence is None:
        return auth.error_page(request, 404, "There is no such licence for this image.", sess)
    today = dt.date.today()
    start = licence["valid_from"] or today
    if start > today:
        return image_page(request, sess, image, status=422,
                          message="This licence has not started yet: change its dates instead of ending it.")
    if licence["valid_to"] is None or licence["valid_to"] > today:
        registry.put_licence(engine, customer_id, licence_id, licence["image_ids"], start, today,
                             licence["licensee_domain"] or "", licence["licensee_operator"], actor=sess.who.actor)
    return RedirectResponse(f"{auth.base_path(request)}/library/{image_id}?done=ended#licences", status_code=303)
