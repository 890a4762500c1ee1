"""Import from my website: crawl a customer's portfolio or shop and register the images on it.

The crawl is the daily crawler itself (``copyhunt.crawl.runner.run_crawl``, in a subprocess), so
its rules hold here too: robots.txt, the refusal of private and loopback addresses (SSRF), the
size and page limits, timeouts, traps. Each image found is registered through the upload path
(``copyhunt.registry.add_image``, ``source_kind="import"``, the page it was on as its source) with
the usual per-file result, and the site's domain goes on the customer's own sites, so the uses on
it are never reported as infringements.

Nothing here trusts the site: the address is checked before the crawl, the image bytes pass the
same checks as an upload, and the crawl's own failures are reported, not raised.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pyarrow.parquet as pq
from sqlalchemy import Engine

from copyhunt.blobs import LocalBlobStore
from copyhunt.config import Settings
from copyhunt.coverage import OwnSiteAdded, add_own_site, domain_of
from copyhunt.registry import ImageResult, add_image

__all__ = ["ImportFailed", "SiteImport", "import_site"]

URL_MAX = 2000
# Why a seed page could not be read, as a person reads it (the crawl's reason codes).
SEED_REASONS = {
    "blocked:private-address": "the address is not on the public internet",
    "robots": "the site's robots.txt does not allow copyhunt to read that page",
    "timeout": "the site did not answer in time",
    "dns-error": "the site's name does not resolve",
    "connection-refused": "the site refused the connection",
}


class ImportFailed(ValueError):
    """The site could not be imported at all (bad address, unreachable, nothing on it)."""


@dataclass(frozen=True)
class SiteImport:
    url: str
    domain: str
    pages: int  # pages read
    results: list[ImageResult] = field(default_factory=list)  # one per distinct image found
    own_site: OwnSiteAdded | None = None

    def counts(self) -> dict[str, int]:
        out = {"created": 0, "existing": 0, "rejected": 0}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out


def check_address(url: str) -> tuple[str, str]:
    """The address and its domain, or ImportFailed with a sentence a person understands."""
    url = (url or "").strip()
    if len(url) > URL_MAX:
        raise ImportFailed("that address is too long")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImportFailed("give the address of your site, such as https://example.com/portfolio")
    try:
        domain = domain_of(parts.hostname)
    except ValueError:
        raise ImportFailed("give your site's address by its name (such as example.com), not a number or a local name") from None
    return url, domain


def _filename(image_url: str) -> str:
    name = PurePosixPath(urlsplit(image_url).path).name
    return name[:200] or "image"


def import_site(engine: Engine, settings: Settings, customer_id: str, url: str, actor: str | None = None,
                max_pages: int | None = None) -> SiteImport:
    """Crawl ``url``'s site, register every distinct image on it for the customer, and list the
    site's domain as their own. Idempotent: a second import finds the images "existing"."""
    from copyhunt.crawl.runner import CrawlError, run_crawl

    url, domain = check_address(url)
    staging = Path(tempfile.mkdtemp(prefix="import-", dir=_staging_root(settings)))
    try:
        try:
            summary = run_crawl([url], staging, settings, max_pages=max_pages or settings.import_max_pages,
                                timeout_s=settings.import_timeout_seconds)
        except CrawlError as exc:
            raise ImportFailed("the site could not be read; try again later") from exc
        if summary.pages == 0:
            errors = pq.read_table(summary.errors_path, columns=["reason"]).column("reason").to_pylist()
            why = next((SEED_REASONS[r] for r in errors if r in SEED_REASONS), None)
            raise ImportFailed(f"no page of {domain} could be read" + (f": {why}" if why else ""))
        rows = pq.read_table(summary.images_path, columns=["page_url", "image_url", "blob_sha256", "alt"]).to_pylist()
        blobs = LocalBlobStore(settings.blob_root)
        results: list[ImageResult] = []
        seen: set[str] = set()
        for row in sorted(rows, key=lambda r: (r["page_url"], r["image_url"])):
            sha = row["blob_sha256"]
            if not sha or sha in seen:
                continue  # not downloaded (its failure is in the crawl's errors) or already registered
            seen.add(sha)
            with blobs.path(sha).open("rb") as stream:
                title = " ".join((row["alt"] or "").split())[:200] or None
                results.append(add_image(engine, settings, customer_id, stream, _filename(row["image_url"]), title,
                                         source_kind="import", source_url=row["page_url"]))
        own = add_own_site(engine, customer_id, domain, "import", actor, note=f"imported from {url[:200]}")
        return SiteImport(url, domain, summary.pages, results, own)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _staging_root(settings: Settings) -> Path:
    root = settings.blob_root / ".import-staging"
    root.mkdir(parents=True, exist_ok=True)
    return root
