"""The fingerprint stage: window hashes of every distinct image the day's crawl downloaded, into
``image_fingerprints`` and ``fingerprint_errors``.

The hashes themselves are ``copyhunt.fingerprint``; here are the process pool that feeds it
blobs, and the reuse of an earlier day's rows for images crawled again (same bytes, same key).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from copyhunt.blobs import LocalBlobStore
from copyhunt.config import Settings
from copyhunt.fingerprint import FINGERPRINT_BATCH, FINGERPRINT_COLUMNS, compile_kernels, fingerprint_images, fingerprint_key
from copyhunt.imaging import BadImage
from copyhunt.lake import Lake, to_table

Progress = Callable[..., Iterable]


def _plain(items: Iterable, **_: object) -> Iterable:
    return items


def fingerprint_batch(args: tuple[str, list[str], int]) -> list[tuple[str, list[dict], str | None]]:
    """(sha256, rows, reason) of each blob of a batch (``fingerprint_images``): a pool task."""
    blob_root, shas, max_pixels = args
    store = LocalBlobStore(blob_root)

    def blobs() -> Iterator[tuple[str, bytes | BadImage]]:  # read as the batch decodes them
        for sha in shas:
            try:
                yield sha, store.get(sha)
            except KeyError:
                yield sha, BadImage("missing-blob")

    return [(sha, rows, error) for sha, (rows, error) in zip(shas, fingerprint_images(blobs(), max_pixels))]


# Images fingerprinted per chunk: the rows of one chunk are held, sorted and written at a time, so
# a day of millions of images (~20 rows each) never sits in memory whole.
FINGERPRINT_CHUNK = 4096
FINGERPRINT_SCHEMA = pa.schema([(c, pa.string() if c in ("image_sha256", "window") else pa.int64() if c == "phash" else pa.float64())
                                for c in FINGERPRINT_COLUMNS])
FINGERPRINT_SORT = ["image_sha256", "window"]


# In an image_fingerprints partition: the key its rows were made under (fingerprint_key).
FINGERPRINT_KEY_FILE = "_FINGERPRINT_KEY"


@dataclass
class EarlierFingerprints:
    """The fingerprints of an earlier day, made under the same key: an image crawled again (the
    same bytes, so the same sha256) gets the rows or the reason it had then, not a new decode.
    A daily crawl revisits the same pages, so most of its images are repeats."""

    path: Path  # that day's image_fingerprints file, sorted by image
    errors: dict[str, str]  # that day's fingerprint_errors
    reused: int = 0

    def known(self, chunk: list[str]) -> dict[str, tuple[list[dict], str | None]]:
        """(rows, reason) of the images of ``chunk`` (sorted) that day had; its file is sorted,
        so only the row groups spanning the chunk are read."""
        table = pq.read_table(self.path, filters=[("image_sha256", ">=", chunk[0]), ("image_sha256", "<=", chunk[-1])])
        wanted = set(chunk)
        out: dict[str, tuple[list[dict], str | None]] = {}
        for row in table.to_pylist():
            if row["image_sha256"] in wanted:
                out.setdefault(row["image_sha256"], ([], None))[0].append(row)
        for sha in chunk:
            # A blob missing then may be stored now; every other reason follows from the bytes.
            if sha in self.errors and self.errors[sha] != "missing-blob":
                out[sha] = ([], self.errors[sha])
        self.reused += len(out)
        return out


def earlier_fingerprints(lake: Lake, run_date: dt.date, key: str) -> EarlierFingerprints | None:
    """The latest day before ``run_date`` whose fingerprints were made under ``key``."""
    for day in reversed(lake.run_dates("image_fingerprints")):
        marker = lake.partition_dir("image_fingerprints", day) / FINGERPRINT_KEY_FILE
        if day < run_date and marker.exists() and marker.read_text() == key and lake.has_partition("fingerprint_errors", day):
            errors = lake.read_frame("fingerprint_errors", day)
            return EarlierFingerprints(lake.verified_file("image_fingerprints", day), dict(zip(errors["image_sha256"], errors["reason"])))
    return None


def fingerprint_chunks(blob_root: str, shas: list[str], max_pixels: int, workers: int | None = None, progress: Progress = _plain,
                       description: str = "fingerprint images", earlier: EarlierFingerprints | None = None
                       ) -> Iterator[tuple[pa.Table, dict[str, str]]]:
    """Fingerprint the blobs ``shas`` (sorted) in a process pool (default: a worker per core):
    per chunk of FINGERPRINT_CHUNK images, their rows as a sorted table, and the reason for each
    that could not be used. Concatenated, the tables are the rows of all ``shas`` sorted by
    FINGERPRINT_SORT. Images ``earlier`` knows are taken from there."""
    from concurrent.futures import ProcessPoolExecutor

    workers = workers or min(len(shas), os.cpu_count() or 1) or 1

    def results():
        compiled = False
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(shas), FINGERPRINT_CHUNK):
                chunk = shas[start:start + FINGERPRINT_CHUNK]
                known = earlier.known(chunk) if earlier is not None else {}
                todo = [sha for sha in chunk if sha not in known]
                if todo and not compiled:
                    # Here, before the pool's first task forks its workers: they inherit the
                    # kernels instead of each compiling them. A day taken whole from an earlier
                    # one needs none.
                    compile_kernels()
                    compiled = True
                batches = [(blob_root, todo[at:at + FINGERPRINT_BATCH], max_pixels) for at in range(0, len(todo), FINGERPRINT_BATCH)]
                computed = (result for batch in pool.map(fingerprint_batch, batches) for result in batch)
                for sha in chunk:
                    yield (sha, *known[sha]) if sha in known else next(computed)

    rows: list[dict] = []
    errors: dict[str, str] = {}
    for done, (sha, found, error) in enumerate(progress(results(), total=len(shas), description=description), 1):
        rows.extend(found)
        if error:
            errors[sha] = error
        if done % FINGERPRINT_CHUNK == 0 or done == len(shas):
            yield to_table(pd.DataFrame(rows, columns=FINGERPRINT_COLUMNS), FINGERPRINT_SORT, FINGERPRINT_SCHEMA), errors
            rows, errors = [], {}


def fingerprint(settings: Settings, run_date: dt.date, progress: Progress = _plain, workers: int | None = None) -> dict:
    """Window hashes of every distinct image downloaded by the crawl (each blob hashed once; an
    image an earlier day already fingerprinted under the same key is not decoded again)."""
    lake = Lake(settings.lake)
    images = lake.read_frame("images", run_date, columns=["blob_sha256"])
    shas = sorted(set(images["blob_sha256"].dropna()))
    key = fingerprint_key(settings.max_image_pixels)
    earlier = earlier_fingerprints(lake, run_date, key)
    errors: list[dict] = []
    windows = 0

    def tables() -> Iterator[pa.Table]:
        nonlocal windows
        for table, bad in fingerprint_chunks(str(settings.blob_root), shas, settings.max_image_pixels, workers, progress, earlier=earlier):
            windows += table.num_rows
            errors.extend({"image_sha256": sha, "reason": reason} for sha, reason in bad.items())
            yield table

    lake.write_partition_chunks("image_fingerprints", run_date, tables(), FINGERPRINT_SCHEMA, extra_files={FINGERPRINT_KEY_FILE: key.encode()})
    lake.write_partition("fingerprint_errors", run_date, pd.DataFrame(errors, columns=["image_sha256", "reason"]), sort_by=["image_sha256"])
    lake.record_reads(run_date, "fingerprint")
    return {"images": len(shas), "windows": windows, "errors": len(errors), "reused": earlier.reused if earlier else 0}
