"""Folder-in, Parquet-out matching: the stable command-line contract used by evaluations.

    copyhunt index build --images DIR --out INDEX_DIR
    copyhunt match --index INDEX_DIR --images DIR --out FILE.parquet

The same fingerprints, Annoy shards and Spark job as the daily pipeline, without a lake: the index
directory keeps its own blob store of reference images for verification.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from copyhunt.blobs import LocalBlobStore
from copyhunt.config import Settings
from copyhunt.fingerprint import reference_hashes
from copyhunt.imaging import BadImage, load_normalised
from copyhunt.index import ENTRY_COLUMNS, build_index
from copyhunt.lake import WRITER_OPTIONS, atomic_write_bytes, to_table

LOCAL_CUSTOMER = "local"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def build_index_from_folder(images: Path, out: Path, shard_size: int, settings: Settings, progress: Callable[..., Iterable]) -> dict:
    out = Path(out)
    blobs = LocalBlobStore(out / "blobs")
    rows, refs = [], []
    files = _image_files(images)
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
            image = load_normalised(data, settings.max_image_pixels)
            sha = blobs.put(data)
            ref["ref_sha256"] = sha
            for wh in reference_hashes(image):
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
    buf = io.BytesIO()
    pq.write_table(to_table(frame, keys), buf, **WRITER_OPTIONS)
    atomic_write_bytes(path, buf.getvalue())


def match_folder(index: Path, images: Path, out: Path, settings: Settings, progress: Callable[..., Iterable]) -> int:
    """Write one row per verified match: query, reference_id, score and the matched region."""
    from copyhunt.hunt import FINGERPRINT_COLUMNS, fingerprint_one, run_spark_job

    files = _image_files(images)
    with tempfile.TemporaryDirectory(prefix="copyhunt-match-") as tmp:
        tmpdir = Path(tmp)
        blobs = LocalBlobStore(tmpdir / "blobs")
        names: list[tuple[str, str]] = []
        rows: list[dict] = []
        errors: list[dict] = []
        done: set[str] = set()
        for f in progress(files, description="fingerprint queries"):
            sha = blobs.put(f.read_bytes())
            names.append((f.name, sha))
            if sha in done:
                continue
            done.add(sha)
            _, found, error = fingerprint_one((str(blobs.root), sha, settings.max_image_pixels))
            rows.extend(found)
            if error:
                errors.append({"query": f.name, "reason": error})
        fp = tmpdir / "fingerprints.parquet"
        pq.write_table(pa.Table.from_pandas(pd.DataFrame(rows, columns=FINGERPRINT_COLUMNS).astype({"phash": "int64"}), preserve_index=False), fp)
        raw = tmpdir / "matches.parquet"
        run_spark_job(settings, ["--fingerprints", str(fp), "--index-dir", str(index), "--query-blobs", str(blobs.root),
                                 "--ref-blobs", str(Path(index) / "blobs"), "--out", str(raw)])
        matches = pq.read_table(raw).to_pandas()
    queries = pd.DataFrame(names, columns=["query", "image_sha256"])
    result = queries.merge(matches, on="image_sha256", how="inner").rename(columns={"image_id": "reference_id"})
    result = result.drop(columns=["customer_id"])
    result = result.sort_values(["query", "score", "reference_id"], ascending=[True, False, True])
    _write_parquet(Path(out), result, ["query", "reference_id"])
    if errors:
        _write_parquet(Path(out).with_suffix(".errors.parquet"), pd.DataFrame(errors), ["query"])
    return len(result)
