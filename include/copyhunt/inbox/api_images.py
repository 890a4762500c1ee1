"""The image API: customers upload, list and withdraw their registered images.

``POST /api/images`` takes a multipart body with a ``file`` field (an image or a ZIP of images)
and an optional ``title``. The body is parsed as it streams (python-multipart's push parser): the
file goes to a spool file on disk, refused once it passes ``max_upload_bytes``, so an upload's
size never shows in the server's memory. Answers: 201 with the new ``image_id``; 200 with the
existing one for the same bytes again; 422 with a reason a person reads for anything unusable; a
ZIP gets 200 and one result per member. Another customer's image id is 404, never 403.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at runtime.
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import Engine

from copyhunt import registry
from copyhunt.config import Settings
from copyhunt.hitsdb import tokens
from copyhunt.inbox import auth

router = APIRouter(prefix="/api/images", tags=["images"])
Customer = Annotated[tokens.Identity, Depends(auth.api_customer)]
ImageId = Annotated[str, PathParam(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]
FIELD_MAX = 2_000  # the title, and any other small field
# Past the limit the rest of the body is read and dropped, so the client gets its answer instead
# of a broken pipe; past this many times the limit the connection is simply refused.
DRAIN_FACTOR = 8


class ImageOut(BaseModel):
    image_id: str
    title: str | None = None
    width: int | None = None
    height: int | None = None
    source: str | None = None  # upload, import or seed
    source_url: str | None = None  # the page an imported image was found on
    uploaded_at: str | None = None
    withdrawn: bool = False
    near_duplicate_of: str | None = None


class UploadResult(BaseModel):
    filename: str
    status: str  # created, existing or rejected
    image_id: str | None = None
    reason: str | None = None
    near_duplicate_of: str | None = None


class UploadResults(BaseModel):
    results: list[UploadResult]


MAX_FILES = 200  # file parts in one request (the inbox's form may carry many); later ones are refused


@dataclass
class SpooledFile:
    """One file part of a multipart body, on disk; ``too_large`` once it passed the size limit
    (its bytes are dropped from then on and its spool file removed)."""

    filename: str
    path: Path | None
    too_large: bool = False
    size: int = 0


class Upload:
    """The state of one streamed multipart body: every ``file`` part spooled to disk (at most
    MAX_FILES, each refused past ``limit`` bytes), small fields kept (at most FIELD_MAX characters).

    Shared by the JSON API (which reads the first file) and the inbox's upload form (all of them)."""

    def __init__(self, spool_dir: Path, limit: int, may_spool: Callable[[dict[str, str]], bool] | None = None):
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.spool_dir, self.limit = spool_dir, limit
        # Asked with the fields read so far at each file part: False drops the part unwritten (the
        # inbox's form must show its CSRF token, which comes first, before a byte goes to disk).
        self.may_spool = may_spool
        self.refused = False
        self.fields: dict[str, str] = {}
        self.files: list[SpooledFile] = []
        self.refused_files: list[str] = []  # names of file parts past MAX_FILES
        self._headers: dict[bytes, bytes] = {}
        self._field, self._value, self._name = b"", b"", None
        self._current: SpooledFile | None = None
        self._out: Any = None
        self._small = bytearray()

    # The first file, for the API's single-file contract.
    @property
    def file(self) -> Path | None:
        return self.files[0].path if self.files else None

    @property
    def filename(self) -> str | None:
        return self.files[0].filename if self.files else None

    @property
    def too_large(self) -> bool:
        return bool(self.files) and self.files[0].too_large

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self._begin, "on_header_field": self._header_field, "on_header_value": self._header_value,
                "on_header_end": self._header_end, "on_headers_finished": self._headers_done, "on_part_data": self._data,
                "on_part_end": self._end}

    def _begin(self) -> None:
        self._headers, self._name, self._current, self._out, self._small = {}, None, None, None, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name != "file":
            return
        filename = Path(options.get(b"filename", b"upload").decode("utf-8", "replace").replace("\\", "/")).name[:200] or "upload"
        if b"filename" in options and not options[b"filename"]:
            self._name = None  # a browser's empty file input: no file was chosen
            return
        if self.may_spool is not None and not self.may_spool(self.fields):
            self.refused = True
            self._name = None
            return
        if len(self.files) >= MAX_FILES:
            self.refused_files.append(filename)
            self._name = None
            return
        fd, name = tempfile.mkstemp(dir=self.spool_dir, prefix="upload-")
        self._current = SpooledFile(filename, Path(name))
        self._out = os.fdopen(fd, "wb")
        self.files.append(self._current)

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        if part is not None:
            if part.too_large:
                return
            part.size += end - start
            if part.size > self.limit:
                part.too_large = True
                self._close()
                if part.path is not None:
                    part.path.unlink(missing_ok=True)
                part.path = None
                return
            self._out.write(data[start:end])
        elif self._name and self._name != "file" and len(self._small) <= FIELD_MAX:
            self._small += data[start:end]

    def _close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def _end(self) -> None:
        if self._current is not None:
            self._close()
            self._current = None
        elif self._name and self._name != "file":
            self.fields[self._name] = bytes(self._small[:FIELD_MAX]).decode("utf-8", "replace")

    def discard(self) -> None:
        self._close()
        for part in self.files:
            if part.path is not None:
                part.path.unlink(missing_ok=True)


async def read_upload(request: Request, settings: Settings, single_file: bool = True,
                      may_spool: Callable[[dict[str, str]], bool] | None = None) -> Upload:
    """The request's multipart body, parsed as it streams: 415 if it is not multipart, 413 once the
    whole body passes DRAIN_FACTOR times the per-file limit (per file part, for the inbox's form),
    400 if it is malformed. With ``single_file`` (the API) the rest of the body is drained unparsed
    once the first file is too large; ``may_spool`` see Upload. The caller must ``discard()`` the result."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise HTTPException(415, "send the image as multipart/form-data with a field named 'file'")
    upload = Upload(settings.blob_root / ".incoming", settings.max_upload_bytes, may_spool)
    parser = MultipartParser(options[b"boundary"], upload.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > DRAIN_FACTOR * settings.max_upload_bytes * max(1, len(upload.files)):
                raise HTTPException(413, f"the request is far larger than the upload limit of {settings.max_upload_bytes / 1e6:g} MB")
            if not (single_file and upload.too_large):
                parser.write(chunk)
        if not (single_file and upload.too_large):
            parser.finalize()
    except HTTPException:
        upload.discard()
        raise
    except Exception:  # a malformed body: python-multipart raises its own error types
        upload.discard()
        raise HTTPException(400, "the multipart body is malformed") from None
    return upload


def too_large_result(settings: Settings, filename: str) -> registry.ImageResult:
    return registry.ImageResult(filename, "rejected", reason=f"the file is larger than the limit of {settings.max_upload_bytes / 1e6:g} MB")


def register_file(engine: Engine, settings: Settings, customer_id: str, part: SpooledFile, title: str | None = None) -> list[registry.ImageResult]:
    """The results of one spooled file: one for an image, one per member for a ZIP (blocking: run
    it in a thread pool)."""
    if part.too_large or part.path is None:
        return [too_large_result(settings, part.filename)]
    with part.path.open("rb") as head:
        is_zip = head.read(4) == b"PK\x03\x04"
    if is_zip:
        return registry.add_zip(engine, settings, customer_id, part.path)
    with part.path.open("rb") as stream:
        return [registry.add_image(engine, settings, customer_id, stream, part.filename, title or None)]


def _result(r: registry.ImageResult) -> UploadResult:
    return UploadResult(filename=r.filename, status=r.status, image_id=r.image_id, reason=r.reason, near_duplicate_of=r.near_duplicate_of)


@router.post("", summary="Upload an image (or a ZIP of images)",
             responses={200: {"description": "The same bytes were uploaded before (the existing image_id), or a ZIP's results"},
                        201: {"description": "A new image"}, 422: {"description": "Unusable: the reason says why"}})
async def upload_image(request: Request, who: Customer) -> JSONResponse:
    settings = request.app.state.settings
    engine = auth.engine_of(request)
    upload = await read_upload(request, settings)
    try:
        if not upload.files:
            raise HTTPException(422, "the body has no field named 'file'")
        first = upload.files[0]
        if first.too_large:
            return JSONResponse(_result(too_large_result(settings, first.filename)).model_dump(), 422)
        with first.path.open("rb") as head:  # type: ignore[union-attr]
            is_zip = head.read(4) == b"PK\x03\x04"
        results = await run_in_threadpool(register_file, engine, settings, who.customer_id, first, upload.fields.get("title"))
        if is_zip:
            return JSONResponse(UploadResults(results=[_result(r) for r in results]).model_dump(), 200)
        result = results[0]
        status = {"created": 201, "existing": 200}.get(result.status, 422)
        return JSONResponse(_result(result).model_dump(), status)
    finally:
        upload.discard()


def _out(row: dict) -> ImageOut:
    return ImageOut(image_id=row["image_id"], title=row["title"], width=row["width"], height=row["height"], source=row["source_kind"],
                    source_url=row["source_url"], uploaded_at=row["uploaded_at"].isoformat() if row["uploaded_at"] else None, withdrawn=row["withdrawn_at"] is not None,
                    near_duplicate_of=row["near_duplicate_of"])


@router.get("", response_model=list[ImageOut], summary="The caller's images")
def list_images(request: Request, who: Customer) -> list[ImageOut]:
    return [_out(r) for r in registry.list_images(auth.engine_of(request), who.customer_id)]


@router.get("/{image_id}", response_model=ImageOut, summary="One of the caller's images")
def get_image(request: Request, who: Customer, image_id: ImageId) -> ImageOut:
    row = registry.get_image(auth.engine_of(request), who.customer_id, image_id)
    if row is None:
        raise HTTPException(404, "no such image")
    return _out(row)


@router.delete("/{image_id}", response_model=ImageOut, summary="Withdraw an image: not searched from the next index build on; its hits stay")
def withdraw_image(request: Request, who: Customer, image_id: ImageId) -> ImageOut:
    engine = auth.engine_of(request)
    if not registry.withdraw_image(engine, who.customer_id, image_id):
        raise HTTPException(404, "no such image")
    return _out(registry.get_image(engine, who.customer_id, image_id))
