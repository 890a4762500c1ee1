"""Validators of images stored by earlier crawls, for conditional requests on later days.

A crawl keeps each image's ``ETag`` and ``Last-Modified`` in ``images.parquet``. The next day's
crawl is handed those validators (:func:`validators_from_lake` writes them, from the latest earlier
``images`` partition of the lake, into a small Parquet file); for an image URL it has validators
for, it sends ``If-None-Match`` / ``If-Modified-Since``, and a ``304 Not Modified`` reuses the
stored blob instead of downloading the image again. Validators whose blob is no longer in the blob
store are dropped, so a 304 can always be served from storage.

Only pyarrow here (no Scrapy), so the Airflow task can call it cheaply.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from copyhunt.blobs import LocalBlobStore
from copyhunt.lake import Lake, to_table, write_parquet_atomically

VALIDATORS_SCHEMA = pa.schema(
    [
        ("image_url", pa.string()),
        ("blob_sha256", pa.string()),
        ("bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("etag", pa.string()),
        ("last_modified", pa.string()),
    ]
)


@dataclass(frozen=True)
class Validator:
    """What an earlier crawl stored for one image URL, and how to ask whether it changed."""

    image_url: str
    blob_sha256: str
    bytes: int
    width: int
    height: int
    format: str
    etag: str | None
    last_modified: str | None

    def conditional_headers(self) -> dict[str, str]:
        """The headers that ask the server whether the image changed since it was stored."""
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


def validators_table(images: pa.Table) -> pa.Table:
    """Validators from an ``images`` table: stored images that have an ETag or Last-Modified,
    one row per image URL (an image shown on many pages has one download)."""
    if not {"etag", "last_modified"} <= set(images.column_names):  # written before validators were kept
        return VALIDATORS_SCHEMA.empty_table()
    t = images.select(VALIDATORS_SCHEMA.names).cast(VALIDATORS_SCHEMA)
    keep = pc.and_(pc.is_valid(t["blob_sha256"]), pc.or_(pc.is_valid(t["etag"]), pc.is_valid(t["last_modified"])))
    t = t.filter(keep)
    if t.num_rows == 0:
        return VALIDATORS_SCHEMA.empty_table()
    t = to_table(t, sort_by=["image_url"])
    first = pc.not_equal(t["image_url"].slice(1), t["image_url"].slice(0, t.num_rows - 1))
    mask = pa.concat_arrays([pa.array([True]), first.combine_chunks()])
    return t.filter(mask)


def write_validators(table: pa.Table, path: Path) -> Path:
    return write_parquet_atomically(to_table(table.cast(VALIDATORS_SCHEMA), sort_by=["image_url"]), path)


def validators_from_lake(lake_root: Path, run_date: dt.date, path: Path) -> Path | None:
    """Write the validators of the latest ``images`` partition before ``run_date`` to ``path``.

    Returns ``path``, or None when there is no earlier partition (the first day) or it holds no
    validators.
    """
    lake = Lake(lake_root)
    earlier = [d for d in lake.run_dates("images") if d < run_date]
    if not earlier:
        return None
    table = validators_table(lake.read_table("images", earlier[-1]))
    if table.num_rows == 0:
        return None
    return write_validators(table, path)


# Validators are echoed back verbatim in later requests; a header longer than this is not one.
MAX_VALIDATOR_LENGTH = 256


def clean_validator(value: str | bytes | None) -> str | None:
    """An ``ETag`` / ``Last-Modified`` header value fit to store and send back, or None.

    Text from the web: bounded, and never anything that could split a header when echoed.
    """
    if value is None:
        return None
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
    return text if text and len(text) <= MAX_VALIDATOR_LENGTH and "\n" not in text and "\r" not in text else None


def read_image_rows(path: Path, schema: pa.Schema) -> list[dict[str, Any]]:
    """Rows of a per-image Parquet file (validators, the image fetcher's results), read with
    ``schema``'s columns and cast to it, so a file written by an older version reads the same."""
    return pq.read_table(path, columns=schema.names).cast(schema).to_pylist()


def read_validators(path: Path, blob_root: Path) -> dict[str, Validator]:
    """image_url -> Validator from a validators file, keeping only those whose blob is stored."""
    blobs = LocalBlobStore(blob_root)
    out: dict[str, Validator] = {}
    for row in read_image_rows(path, VALIDATORS_SCHEMA):
        sha = row["blob_sha256"]
        if not row["image_url"] or not sha or not (row["etag"] or row["last_modified"]):
            continue
        if any(row[k] is None for k in ("bytes", "width", "height", "format")):
            continue
        try:
            if not blobs.exists(sha):
                continue
        except ValueError:  # not a sha256: a damaged file, not a reason to fail the crawl
            continue
        out[row["image_url"]] = Validator(**row)
    return out
