"""The customer registry: who the customers are, their images and their licences.

The hits database is the registry of truth (tables ``customers``, ``images``, ``licences``).
Images come in through one path, ``add_image``, whether a customer uploads them (the inbox API),
the data team adds them (``copyhunt images add``) or the demo seeds them from its customers file
(``seed_from_file``): the bytes are read with the size limit enforced as they arrive, probed and
decoded, kept in the content-addressed blob store, and recorded with a result a person can read.

The stages never read the database directly. The customer_index ``register`` stage takes a
snapshot of the registry into the lake (``write_snapshot``: datasets ``registry_customers``,
``registry_images``, ``registry_licences``, in that day's manifest like any partition), and every
later stage reads the snapshot of the index it matches against (``copyhunt.stages.registry_snapshot.run_customers``), so a
replay of a past day uses the registry as it was that day.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import pandas as pd
from sqlalchemy import Engine, func, select, update

from copyhunt.blobs import LocalBlobStore
from copyhunt.config import Settings
from copyhunt.coverage import apply_licence
from copyhunt.demo.customers import CustomerRecord, LicenceTerms, RegisteredImage, load_customers
from copyhunt.lake import Lake
from copyhunt.thumbnails import Thumbnails

REPO_ROOT = Path(__file__).resolve().parents[2]
CHUNK_BYTES = 1 << 20
# Two whole-image pHashes this close (of 64 bits) are the same picture at another size or with a
# light edit: the matcher's own whole-window radius is wider, but a flag must not cry wolf.
NEAR_DUPLICATE_BITS = 8
ZIP_SUFFIXES = {".zip"}
IMAGE_ID_RE = re.compile(r"[^A-Za-z0-9._-]+")
SNAPSHOT_DATASETS = ("registry_customers", "registry_images", "registry_licences")

# BadImage reasons (copyhunt.imaging) as a person reads them.
REASONS = {
    "not-an-image": "not an image (the file's bytes match no supported format: JPEG, PNG, GIF, WebP, BMP, TIFF)",
    "corrupt-image": "the image is damaged or truncated and cannot be decoded",
    "decompression-bomb": "the image has too many pixels to be processed safely",
    "too-small": "the image is too small to be recognised in copies",
    "extreme-aspect": "the image is too long and thin to be recognised in copies",
    "no-detail": "the image is a flat area with nothing a copy could be recognised by",
}


@dataclass(frozen=True)
class ImageResult:
    """What became of one uploaded file."""

    filename: str
    status: str  # "created", "existing" or "rejected"
    image_id: str | None = None
    reason: str | None = None  # for "rejected": why, in words
    near_duplicate_of: str | None = None  # "looks like your image X"

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Rejected(ValueError):
    pass


class QuotaExceeded(Rejected):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _tables():
    from copyhunt.hitsdb.models import Customer as CustomerRow
    from copyhunt.hitsdb.models import Image as ImageRow
    from copyhunt.hitsdb.models import Licence as LicenceRow

    return CustomerRow.__table__, ImageRow.__table__, LicenceRow.__table__


# ---- customers -----------------------------------------------------------------------------------
def add_customer(engine: Engine, customer_id: str, email: str, name: str | None = None, rate_card: dict | None = None) -> bool:
    """Create a customer, or update its name, e-mail and rate card; True if it was new."""
    from copyhunt.hitsdb.store import NAME_MAX, bound_text, check_customer_id

    cid = check_customer_id(customer_id)
    email = (email or "").strip()
    if "@" not in email or len(email) > NAME_MAX:
        raise ValueError(f"{email!r} is not an e-mail address")
    customers, _, _ = _tables()
    values = {"name": bound_text(name, NAME_MAX) or cid, "email": email,
              "rate_card": json.dumps(rate_card, sort_keys=True) if rate_card else None}
    with engine.begin() as conn:
        existing = conn.execute(select(customers.c.name, customers.c.email, customers.c.rate_card).where(customers.c.id == cid)).first()
        if existing is None:
            conn.execute(customers.insert().values(id=cid, **values))
            return True
        if tuple(existing) != (values["name"], values["email"], values["rate_card"]):
            conn.execute(update(customers).where(customers.c.id == cid).values(**values))
    return False


def list_customers(engine: Engine) -> list[dict]:
    customers, images, _ = _tables()
    counts = (select(images.c.customer_id, func.count().label("n")).where(images.c.withdrawn_at.is_(None))
              .group_by(images.c.customer_id).subquery())
    stmt = (select(customers.c.id, customers.c.name, customers.c.email, func.coalesce(counts.c.n, 0).label("images"))
            .outerjoin(counts, counts.c.customer_id == customers.c.id).order_by(customers.c.id))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def _require_customer(conn, customer_id: str) -> None:
    customers, _, _ = _tables()
    if conn.execute(select(customers.c.id).where(customers.c.id == customer_id)).first() is None:
        raise LookupError(f"no customer {customer_id!r} (add one with 'copyhunt customers add')")


# ---- images --------------------------------------------------------------------------------------
def read_bounded(stream: BinaryIO, limit: int, spool_dir: Path) -> tuple[Path, str, int]:
    """Copy ``stream`` to a temporary file under ``spool_dir``, refusing it past ``limit`` bytes
    as the bytes arrive (a huge upload never sits in memory). Returns (file, sha256, size)."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=spool_dir, prefix="upload-")
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise Rejected(f"the file is larger than the limit of {_megabytes(limit)}")
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name), digest.hexdigest(), size


def _megabytes(n: int) -> str:
    return f"{n / 1e6:g} MB"


def _examine(data: bytes, max_pixels: int) -> tuple[int, int, int | None]:
    """(width, height, upright whole-image pHash) of a usable image; Rejected with a reason otherwise.
    The whole-image hash is None for a picture whose whole is too even to hash, though its windows are not."""
    from copyhunt.fingerprint import HASH_WORKING_SIZE, reference_hashes
    from copyhunt.imaging import BadImage, check_shape, load_gray, probe

    try:
        info = probe(data, max_pixels)
        check_shape(info.width, info.height)
        hashes = reference_hashes(load_gray(data, max_pixels, HASH_WORKING_SIZE)[0])
    except BadImage as exc:
        raise Rejected(REASONS.get(exc.reason, exc.reason)) from None
    if not hashes:
        raise Rejected(REASONS["no-detail"])
    whole = [h.phash for h in hashes if h.window == "full" and not h.mirrored]
    return info.width, info.height, int(whole[0]) if whole else None


def _hamming(a: int, b: int) -> int:
    return bin((a ^ b) & (2**64 - 1)).count("1")


def _image_id_for(filename: str, taken: set[str]) -> str:
    stem = IMAGE_ID_RE.sub("-", Path(filename).stem).strip("-._")[:60] or "image"
    candidate, n = stem, 2
    while candidate in taken:
        candidate, n = f"{stem}-{n}", n + 1
    return candidate


def add_image(engine: Engine, settings: Settings, customer_id: str, stream: BinaryIO, filename: str, title: str | None = None,
              source_kind: str = "upload", source_url: str | None = None, image_id: str | None = None) -> ImageResult:
    """Register one image for a customer; never raises for a bad file (the result says why)."""
    from copyhunt.hitsdb.store import TITLE_MAX, URL_MAX_BYTES, bound_text, bound_url

    _, images, _ = _tables()
    blobs = LocalBlobStore(settings.blob_root)
    try:
        spooled, sha, _size = read_bounded(stream, settings.max_upload_bytes, settings.blob_root / ".incoming")
    except Rejected as exc:
        return ImageResult(filename, "rejected", reason=str(exc))
    try:
        with engine.connect() as conn:
            _require_customer(conn, customer_id)
            mine = conn.execute(select(images.c.image_id, images.c.sha256, images.c.whole_phash, images.c.withdrawn_at)
                                .where(images.c.customer_id == customer_id)).all()
        same = [r for r in mine if r.sha256 == sha]
        if same:  # the same bytes again: the image the customer already has
            return ImageResult(filename, "existing", image_id=same[0].image_id)
        if image_id is not None and any(r.image_id == image_id for r in mine):
            return ImageResult(filename, "rejected", image_id=image_id,
                               reason=f"image id {image_id!r} is already used for other bytes")
        active = sum(1 for r in mine if r.withdrawn_at is None)
        if active >= settings.customer_image_quota:
            return ImageResult(filename, "rejected", reason=f"the account's quota of {settings.customer_image_quota} images is full")
        data = spooled.read_bytes()  # bounded by max_upload_bytes
        try:
            width, height, whole = _examine(data, settings.max_image_pixels)
        except Rejected as exc:
            return ImageResult(filename, "rejected", reason=str(exc))
        near = next((r.image_id for r in mine if whole is not None and r.whole_phash is not None and r.withdrawn_at is None
                     and _hamming(r.whole_phash, whole) <= NEAR_DUPLICATE_BITS), None)
        blobs.put(data)
        # The library shows the thumbnail at once; a failure here (disk full) must not lose the upload,
        # and the library makes a missing one when it is first asked for (Thumbnails.ensure).
        try:
            Thumbnails(settings.blob_root, settings.max_image_pixels).make(sha, data)
        except OSError:
            pass
        new_id = image_id or _image_id_for(filename, {r.image_id for r in mine})
        with engine.begin() as conn:
            conn.execute(images.insert().values(
                customer_id=customer_id, image_id=new_id, title=bound_text(title or Path(filename).stem, TITLE_MAX), sha256=sha,
                path=None, source_kind=source_kind, source_url=bound_url(source_url, URL_MAX_BYTES) if source_url else None,
                uploaded_at=_now(), width=width, height=height, whole_phash=None if whole is None else _signed64(whole),
                near_duplicate_of=near))
        return ImageResult(filename, "created", image_id=new_id, near_duplicate_of=near)
    finally:
        spooled.unlink(missing_ok=True)


def _signed64(value: int) -> int:
    # BIGINT is signed; a pHash is 64 unsigned bits.
    return value - 2**64 if value >= 2**63 else value


def add_zip(engine: Engine, settings: Settings, customer_id: str, archive: Path, source_kind: str = "upload") -> list[ImageResult]:
    """One result per member of a ZIP of images (folders flattened; members over the size limit
    refused by their declared and their actual size, so a zip bomb stops at the limit)."""
    results = []
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and not Path(m.filename).name.startswith(".")]
            for member in members[: settings.customer_image_quota]:
                name = Path(member.filename).name  # never a path from inside the archive
                if member.file_size > settings.max_upload_bytes:
                    results.append(ImageResult(name, "rejected", reason=f"the file is larger than the limit of {_megabytes(settings.max_upload_bytes)}"))
                    continue
                with zf.open(member) as stream:
                    results.append(add_image(engine, settings, customer_id, stream, name, source_kind=source_kind))
    except zipfile.BadZipFile:
        results.append(ImageResult(archive.name, "rejected", reason="the ZIP archive is damaged"))
    return results


def add_files(engine: Engine, settings: Settings, customer_id: str, paths: Iterable[Path], source_kind: str = "upload") -> list[ImageResult]:
    """Files, folders (their files, sorted) and ZIPs, one result per image; LookupError for an
    unknown customer, before any file is read."""
    with engine.connect() as conn:
        _require_customer(conn, customer_id)
    results = []
    for path in _expand(paths):
        if path.suffix.lower() in ZIP_SUFFIXES:
            results.extend(add_zip(engine, settings, customer_id, path, source_kind))
            continue
        try:
            with path.open("rb") as stream:
                results.append(add_image(engine, settings, customer_id, stream, path.name, source_kind=source_kind))
        except OSError as exc:
            results.append(ImageResult(path.name, "rejected", reason=f"cannot read the file: {exc.strerror or exc}"))
    return results


def _expand(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            yield path


def _listed(images) -> tuple:
    """The columns a listing of images shows (the library, the API, the CLI)."""
    c = images.c
    return (c.image_id, c.title, c.sha256, c.source_kind, c.source_url, c.uploaded_at, c.withdrawn_at, c.width, c.height,
            c.near_duplicate_of)


def list_images(engine: Engine, customer_id: str, include_withdrawn: bool = True) -> list[dict]:
    _, images, _ = _tables()
    stmt = select(*_listed(images)).where(images.c.customer_id == customer_id)
    if not include_withdrawn:
        stmt = stmt.where(images.c.withdrawn_at.is_(None))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt.order_by(images.c.image_id))]


def get_image(engine: Engine, customer_id: str, image_id: str) -> dict | None:
    """One image of this customer, or None (another customer's image is None too)."""
    return next((r for r in list_images(engine, customer_id) if r["image_id"] == image_id), None)


def page_of_images(engine: Engine, customer_id: str, limit: int, offset: int, title_contains: str | None = None) -> tuple[int, list[dict]]:
    """(how many images the customer has, one page of them, newest upload first); only those whose
    title or id contains ``title_contains`` (any case) when it is given."""
    _, images, _ = _tables()
    mine = images.c.customer_id == customer_id
    if title_contains:
        pattern = "%" + title_contains.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        mine = mine & (func.lower(images.c.title).like(pattern, escape="\\") | func.lower(images.c.image_id).like(pattern, escape="\\"))
    stmt = (select(*_listed(images)).where(mine).order_by(images.c.uploaded_at.desc().nulls_last(), images.c.image_id).limit(limit).offset(offset))
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(images).where(mine)).scalar_one()
        return int(total), [dict(r._mapping) for r in conn.execute(stmt)]


def backfill_thumbnails(engine: Engine, settings: Settings) -> int:
    """Make the thumbnails of images registered before thumbnails were made at upload; idempotent."""
    _, images, _ = _tables()
    with engine.connect() as conn:
        shas = [r.sha256 for r in conn.execute(select(images.c.sha256).where(images.c.sha256.is_not(None)))]
    return Thumbnails(settings.blob_root, settings.max_image_pixels).backfill(s for s in shas if len(s) == 64)


def withdraw_image(engine: Engine, customer_id: str, image_id: str) -> bool:
    """Stop searching for an image from the next index build on; its hits and their history stay.
    False if the customer has no such image; withdrawing twice keeps the first time."""
    _, images, _ = _tables()
    with engine.begin() as conn:
        row = conn.execute(select(images.c.withdrawn_at).where(images.c.customer_id == customer_id, images.c.image_id == image_id)).first()
        if row is None:
            return False
        if row.withdrawn_at is None:
            conn.execute(update(images).where(images.c.customer_id == customer_id, images.c.image_id == image_id).values(withdrawn_at=_now()))
    return True


# ---- licences ------------------------------------------------------------------------------------
def put_licence(engine: Engine, customer_id: str, licence_id: str, image_ids: Iterable[str], valid_from: dt.date, valid_to: dt.date,
                licensee_domain: str = "", licensee_operator: str | None = None, actor: str | None = None) -> int:
    """Create or change a licence of this customer (a licence id of another customer is refused).

    Open hits the licence covers change to licensed, each with a history entry by ``actor``
    (copyhunt.coverage.apply_licence); returns how many did."""
    _, _, licences = _tables()
    if not licensee_domain and not licensee_operator:
        raise ValueError("a licence names a licensee domain, a licensee operator, or both")
    if valid_to < valid_from:
        raise ValueError(f"licence {licence_id}: valid_to {valid_to} is before valid_from {valid_from}")
    values = {"licensee_domain": licensee_domain.lower().rstrip("."), "licensee_operator": licensee_operator,
              "image_ids": json.dumps(sorted(set(image_ids))), "valid_from": valid_from, "valid_to": valid_to}
    with engine.begin() as conn:
        _require_customer(conn, customer_id)
        owner = conn.execute(select(licences.c.customer_id, *[licences.c[k] for k in values]).where(licences.c.id == licence_id)).first()
        if owner is None:
            conn.execute(licences.insert().values(id=licence_id, customer_id=customer_id, **values))
        elif owner.customer_id != customer_id:
            raise LookupError(f"no licence {licence_id!r} of customer {customer_id!r}")
        elif tuple(owner)[1:] != tuple(values.values()):
            conn.execute(update(licences).where(licences.c.id == licence_id).values(**values))
        else:
            return 0  # unchanged (a second seed): the hits were seen against it already
    return apply_licence(engine, customer_id, licence_id, actor)


def list_licences(engine: Engine, customer_id: str, image_id: str | None = None) -> list[dict]:
    """This customer's licences (with ``image_ids`` as a list), those covering ``image_id`` when
    given (naming it, or every image with "*"), latest start first."""
    _, _, licences = _tables()
    stmt = (select(licences.c.id, licences.c.licensee_domain, licences.c.licensee_operator, licences.c.image_ids,
                   licences.c.valid_from, licences.c.valid_to)
            .where(licences.c.customer_id == customer_id).order_by(licences.c.valid_from.desc(), licences.c.id))
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    for row in rows:
        row["image_ids"] = json.loads(row["image_ids"] or "[]")
    if image_id is None:
        return rows
    return [r for r in rows if image_id in r["image_ids"] or "*" in r["image_ids"]]


# ---- the demo's seed -----------------------------------------------------------------------------
def seed_from_file(engine: Engine, settings: Settings, path: Path | None = None) -> list[ImageResult]:
    """Register the customers file's customers, images and licences through the upload path.

    Idempotent: a second seed finds every image "existing" and changes nothing; an image the
    customer has withdrawn since stays withdrawn."""
    results = []
    for customer in load_customers(path or settings.customers_path, REPO_ROOT):
        add_customer(engine, customer.id, customer.email, customer.name, customer.rate_card)
        for img in customer.images:
            with Path(img.path).open("rb") as stream:
                results.append(add_image(engine, settings, customer.id, stream, Path(img.path).name, img.title, source_kind="seed",
                                         image_id=img.image_id))
        for lic in customer.licences:
            put_licence(engine, customer.id, lic.id, lic.image_ids, lic.valid_from, lic.valid_to, lic.licensee_domain, lic.licensee_operator)
    return results


# ---- the snapshot the stages read ----------------------------------------------------------------
def write_snapshot(engine: Engine, settings: Settings, run_date: dt.date) -> dict[str, Path]:
    """The registry as it is now, into the lake as this run date's registry partitions."""
    customers, images, licences = _tables()
    with engine.connect() as conn:
        frames = {
            "registry_customers": pd.read_sql(select(customers.c.id, customers.c.name, customers.c.email, customers.c.rate_card), conn),
            "registry_images": pd.read_sql(select(images.c.customer_id, images.c.image_id, images.c.title, images.c.sha256,
                                                  images.c.path, images.c.source_kind, images.c.withdrawn_at.is_not(None).label("withdrawn")), conn),
            "registry_licences": pd.read_sql(select(licences.c.id, licences.c.customer_id, licences.c.licensee_domain, licences.c.licensee_operator,
                                                    licences.c.image_ids, licences.c.valid_from.label("valid_from"),
                                                    licences.c.valid_to.label("valid_to")), conn),
        }
    for column in ("valid_from", "valid_to"):
        frames["registry_licences"][column] = frames["registry_licences"][column].map(lambda d: pd.Timestamp(d).date().isoformat() if d is not None and not pd.isna(d) else None)
    keys = {"registry_customers": ["id"], "registry_images": ["customer_id", "image_id"], "registry_licences": ["id"]}
    lake = Lake(settings.lake)
    return {name: lake.write_partition(name, run_date, frame, sort_by=keys[name]) for name, frame in frames.items()}


def customers_from_snapshot(settings: Settings, snapshot_date: dt.date, lake: Lake | None = None,
                            include_withdrawn: bool = False) -> list[CustomerRecord]:
    """The stages' view of the registry as the snapshot of ``snapshot_date`` holds it (read
    through ``lake`` when given, so a stage's lake records the partitions it read)."""
    lake = lake or Lake(settings.lake)
    if not lake.has_partition("registry_customers", snapshot_date):
        raise FileNotFoundError(f"no registry snapshot for {snapshot_date}: run the customer_index DAG (its register task) for that day")
    people = lake.read_frame("registry_customers", snapshot_date)
    images = lake.read_frame("registry_images", snapshot_date)
    licences = lake.read_frame("registry_licences", snapshot_date)
    blobs = LocalBlobStore(settings.blob_root)
    out = []
    for person in people.itertuples(index=False):
        mine = images[images["customer_id"] == person.id]
        if not include_withdrawn:
            mine = mine[~mine["withdrawn"].astype(bool)]
        registered = tuple(RegisteredImage(person.id, r.image_id, _image_path(r, blobs), r.title or "") for r in mine.itertuples(index=False))
        granted = tuple(LicenceTerms(r.id, person.id, r.licensee_domain or "", tuple(json.loads(r.image_ids or "[]")),
                                dt.date.fromisoformat(r.valid_from), dt.date.fromisoformat(r.valid_to), r.licensee_operator or None)
                        for r in licences[licences["customer_id"] == person.id].itertuples(index=False)
                        if r.valid_from and r.valid_to)
        rate_card = json.loads(person.rate_card) if isinstance(person.rate_card, str) and person.rate_card else None
        out.append(CustomerRecord(person.id, person.name, person.email, registered, granted, rate_card))
    return out


def _image_path(row, blobs: LocalBlobStore) -> Path:
    if isinstance(row.sha256, str) and len(row.sha256) == 64:
        return blobs.path(row.sha256)
    return Path(row.path or "")


def customers(settings: Settings) -> list[CustomerRecord]:
    """The customers file as it stands (the seed), for tools that work without a database."""
    return load_customers(settings.customers_path, REPO_ROOT)
