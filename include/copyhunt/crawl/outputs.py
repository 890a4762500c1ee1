"""The crawl's output tables: names, Arrow schemas, sort keys, and their atomic writer/reader.

A crawl writes three Parquet files into its output directory:

* ``pages.parquet``  one row per HTML page fetched with a 2xx status, with the spider that
  fetched it and, for marketplace product pages, the seller named by the structured data;
* ``images.parquet`` one row per (page, image) pair; ``blob_sha256`` is null if the image was
  not stored (failed, refused, or never fetched before the crawl stopped); ``etag`` and
  ``last_modified`` are the validators for the next day's conditional request, and
  ``not_modified`` is true when this run got a 304 and reused the blob stored earlier;
* ``errors.parquet`` one row per URL that failed or was refused, with a short machine reason.

Rows are sorted and written with :data:`copyhunt.lake.WRITER_OPTIONS`, so the same crawl results
give byte-identical files; each file is written to a temp file and renamed into place. Only
pyarrow is imported here, so reading results back does not load Scrapy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from copyhunt.lake import to_table, write_parquet_atomically

PAGES_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("final_url", pa.string()),
        ("status", pa.int32()),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
        ("domain", pa.string()),
        ("title", pa.string()),
        ("language", pa.string()),
        ("html_sha256", pa.string()),
        ("content_type", pa.string()),
        ("last_modified", pa.string()),
        ("date_candidates", pa.string()),  # JSON list of raw date strings
        ("depth", pa.int32()),
        ("spider", pa.string()),  # "site" or "marketplace"
        ("page_kind", pa.string()),  # marketplace only: "product", "listing" or null
        ("seller_name", pa.string()),  # from JSON-LD Offer.seller, else microdata
        ("seller_url", pa.string()),
        ("seller_source", pa.string()),  # "json-ld" or "microdata"
    ]
)
IMAGES_SCHEMA = pa.schema(
    [
        ("image_url", pa.string()),
        ("page_url", pa.string()),  # = pages.url
        ("final_url", pa.string()),  # the image's URL after redirects (null if not fetched)
        ("blob_sha256", pa.string()),
        ("bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),  # jpeg, png, gif, webp, bmp, tiff (from magic bytes)
        ("alt", pa.string()),
        ("discovered_via", pa.string()),
        ("etag", pa.string()),
        ("last_modified", pa.string()),
        ("not_modified", pa.bool_()),
    ]
)
ERRORS_SCHEMA = pa.schema([("url", pa.string()), ("reason", pa.string()), ("detail", pa.string())])

TABLES: dict[str, tuple[pa.Schema, tuple[str, ...]]] = {
    "pages": (PAGES_SCHEMA, ("url",)),
    "images": (IMAGES_SCHEMA, ("page_url", "image_url")),
    "errors": (ERRORS_SCHEMA, ("url", "reason", "detail")),
}


def output_path(out_dir: Path, name: str) -> Path:
    if name not in TABLES:
        raise ValueError(f"unknown crawl table {name!r}")
    return Path(out_dir) / f"{name}.parquet"


def write_table(out_dir: Path, name: str, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write one output table deterministically and atomically; returns its path."""
    schema, keys = TABLES[name]
    table = to_table(pa.Table.from_pylist(list(rows), schema=schema), sort_by=keys)
    return write_parquet_atomically(table, output_path(out_dir, name))


def remove_outputs(out_dir: Path) -> None:
    """Delete a previous crawl's tables, so files present after a run were written by that run."""
    for name in TABLES:
        output_path(out_dir, name).unlink(missing_ok=True)


def outputs_complete(out_dir: Path) -> bool:
    return all(output_path(out_dir, name).exists() for name in TABLES)


def row_count(out_dir: Path, name: str) -> int:
    return pq.ParquetFile(output_path(out_dir, name)).metadata.num_rows
