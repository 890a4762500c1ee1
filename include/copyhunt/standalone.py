"""Folder-in, Parquet-out matching: the stable command-line contract used by evaluations.

    copyhunt index build --images DIR --out INDEX_DIR
    copyhunt match --index INDEX_DIR --images DIR --out FILE.parquet

The same fingerprints, Annoy shards and Spark job as the daily pipeline, without a lake: the index
directory keeps its own blob store of reference images for verification.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from copyhunt.blobs import LocalBlobStore, sha256_bytes
from copyhunt.config import Settings
from copyhunt.imaging import BadImage
from copyhunt.index import ENTRY_COLUMNS, build_index, check_index
from copyhunt.lake import to_table, write_parquet_atomically
from copyhunt.references import describe_reference, features_store

LOCAL_CUSTOMER = "local"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


class NoImages(ValueError):
    """A folder given as input holds no image files (refused unless empty input is allowed)."""


def _image_files(folder: Path, allow_empty: bool = False) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files and not allow_empty:
        raise NoImages(f"{folder} holds no image files (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def build_index_from_folder(images: Path, out: Path, shard_size: int, settings: Settings, progress: Callable[..., Iterable],
                            allow_empty: bool = False) -> dict:
    """Fingerprint the folder's images as references and build (or extend) the index in ``out``;
    returns the version and counts. NoImages for a folder without images unless ``allow_empty``."""
    files = _image_files(images, allow_empty)
    out = Path(out)
    blobs = LocalBlobStore(out / "blobs")
    features = features_store(out)
    rows, refs = [], []
    ids = [f.stem for f in files]
    duplicates = {i for i in ids if ids.count(i) > 1}
    for f in progress(files, description="fingerprint references"):
        ref = {"reference_id": f.stem, "file": f.name, "ref_sha256": None, "error": None}
        if f.stem in duplicates:
            ref["error"] = "duplicate-reference-id"
            refs.append(ref)
            continue
        try:
            data = f.read_bytes()
            sha = sha256_bytes(data)
            found = describe_reference(data, sha, settings.max_image_pixels, features)
            if not found:
                raise BadImage("no-detail", "uniformly flat: nothing a copy could be recognised by")
            blobs.put(data)
            ref["ref_sha256"] = sha
            for wh in found:
                rows.append({"customer_id": LOCAL_CUSTOMER, "image_id": f.stem, "ref_sha256": sha, "window": wh.window, "mirrored": wh.mirrored,
                             "x0": wh.x0, "y0": wh.y0, "x1": wh.x1, "y1": wh.y1, "phash": wh.phash})
        except BadImage as exc:
            ref["error"] = str(exc)
        refs.append(ref)
    entries = pd.DataFrame(rows, columns=ENTRY_COLUMNS).astype({"phash": "int64", "mirrored": "bool"})
    result = build_index(entries, out, shard_size)
    _write_parquet(out / "references.parquet", pd.DataFrame(refs, columns=["reference_id", "file", "ref_sha256", "error"]), ["reference_id"])
    return {"version": result.version, "references": len(refs), "errors": sum(1 for r in refs if r["error"]),
            "shards": len(result.shards), "built": len(result.built), "reused": len(result.reused)}


def _write_parquet(path: Path, frame: pd.DataFrame, keys: list[str]) -> None:
    write_parquet_atomically(to_table(frame, keys), path)


def fingerprint_folder(files: list[Path], blobs: LocalBlobStore, settings: Settings, progress: Callable[..., Iterable],
                       workers: int | None = None) -> tuple[list[tuple[str, str]], pd.DataFrame, dict[str, str]]:
    """Store each file as a blob and fingerprint each distinct blob once, in a process pool.

    Returns (file name, sha256) pairs, the fingerprint rows, and the reason per unusable blob.
    """
    names = store_files(files, blobs)
    rows, errors = fingerprint_blobs(blobs, sorted({sha for _, sha in names}), settings, progress, workers)
    return names, rows.to_pandas(), errors


def store_files(files: list[Path], blobs: LocalBlobStore) -> list[tuple[str, str]]:
    """(file name, sha256) of each file, stored as a blob (a second copy of the same bytes is free)."""
    return [(f.name, blobs.put(f.read_bytes())) for f in files]


def fingerprint_blobs(blobs: LocalBlobStore, shas: list[str], settings: Settings, progress: Callable[..., Iterable],
                      workers: int | None = None) -> tuple[pa.Table, dict[str, str]]:
    """The fingerprint rows of the stored blobs ``shas`` (sorted), as the fingerprint task makes
    them, and the reason per unusable blob."""
    from copyhunt.stages.fingerprint import FINGERPRINT_SCHEMA, fingerprint_chunks

    tables, errors = [], {}
    for table, bad in fingerprint_chunks(str(blobs.root), shas, settings.max_image_pixels, workers, progress, "fingerprint queries"):
        tables.append(table)
        errors.update(bad)
    return pa.concat_tables(tables) if tables else FINGERPRINT_SCHEMA.empty_table(), errors


def match_folder(index: Path, images: Path, out: Path, settings: Settings, progress: Callable[..., Iterable],
                 allow_empty: bool = False) -> tuple[int, dict[str, int]]:
    """Write one row per verified match: query, reference_id, score and the matched region.
    Returns the number of matches and how many files could not be used, per reason.

    Files that cannot be used are listed, with the reason, in ``<out>.errors.parquet``. A folder
    without images is refused (NoImages) unless ``allow_empty``, which writes an empty result.
    """
    from copyhunt.matching import arrow_match_schema
    from copyhunt.sparkjob import run_job

    # Both checks come before fingerprinting and the Spark start-up, which take most of a minute.
    check_index(index)
    files = _image_files(images, allow_empty)
    names: list[tuple[str, str]] = []
    bad: dict[str, str] = {}
    matches = arrow_match_schema().empty_table().to_pandas()  # nothing to search: no Spark job
    if files:
        with tempfile.TemporaryDirectory(prefix="copyhunt-match-") as tmp:
            tmpdir = Path(tmp)
            blobs = LocalBlobStore(tmpdir / "blobs")
            # The rows go to the Spark job as Arrow, as fingerprint_blobs makes them (no pandas detour).
            names = store_files(files, blobs)
            fingerprints, bad = fingerprint_blobs(blobs, sorted({sha for _, sha in names}), settings, progress)
            fp = tmpdir / "fingerprints.parquet"
            pq.write_table(fingerprints, fp)
            raw = tmpdir / "matches.parquet"
            run_job(settings, "match", ["--fingerprints", str(fp), "--index-dir", str(index), "--query-blobs", str(blobs.root),
                                     "--ref-blobs", str(Path(index) / "blobs"), "--out", str(raw)])
            matches = pq.read_table(raw).to_pandas()
    queries = pd.DataFrame(names, columns=["query", "image_sha256"])
    result = queries.merge(matches, on="image_sha256", how="inner").rename(columns={"image_id": "reference_id"})
    result = result.drop(columns=["customer_id"])
    result = result.sort_values(["query", "score", "reference_id"], ascending=[True, False, True])
    _write_parquet(Path(out), result, ["query", "reference_id"])
    errors = pd.DataFrame([(name, bad[sha]) for name, sha in names if sha in bad], columns=["query", "reason"])
    errors_path = Path(out).with_suffix(".errors.parquet")
    if len(errors):
        _write_parquet(errors_path, errors, ["query"])
    elif errors_path.exists():
        errors_path.unlink()  # a re-run over fixed inputs must not leave the old errors behind
    return len(result), errors["reason"].value_counts().sort_index().to_dict()
