"""Per-batch matching logic run inside Spark executors (see ``jobs/match.py``).

Kept in the library, not in the job file, so executors import it by name and tests call it
without Spark.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

CANDIDATE_SCHEMA = (
    "image_sha256 string, window string, qx0 double, qy0 double, qx1 double, qy1 double, "
    "trim_x0 double, trim_y0 double, trim_x1 double, trim_y1 double, "
    "customer_id string, image_id string, ref_sha256 string, ref_window string, mirrored boolean, distance int"
)
MATCH_SCHEMA = (
    "image_sha256 string, customer_id string, image_id string, ref_sha256 string, "
    "query_window string, ref_window string, mirrored boolean, distance int, inliers int, "
    "score double, query_x0 double, query_y0 double, query_x1 double, query_y1 double, "
    "ref_x0 double, ref_y0 double, ref_x1 double, ref_y1 double, query_overlap double, ref_overlap double"
)


@dataclass(frozen=True)
class MatchParams:
    index_dir: str
    index_version: str | None
    query_blobs: str
    ref_blobs: str
    k: int = 8
    # Hash candidates within this many bits go to verification; unrelated photos sit at 14+ bits
    # from every window, copies at 0-10 (measured on the demo and the robustness suite).
    max_distance: int = 12
    max_image_pixels: int = 64_000_000


@lru_cache(maxsize=4)
def _searcher(index_dir: str, version: str | None):
    # One searcher per Python worker: the Annoy files are mmapped once and shared by batches.
    from copyhunt.index import ShardSearcher

    return ShardSearcher(Path(index_dir), version)


def search_batches(batches, params: MatchParams):
    """mapInPandas body: ANN candidates for every window hash in each batch."""
    searcher = _searcher(params.index_dir, params.index_version)
    for pdf in batches:
        if pdf.empty:
            continue
        found = searcher.query(pdf["phash"].tolist(), params.k, params.max_distance)
        if found.empty:
            continue
        q = pdf.reset_index(drop=True).iloc[found["query_row"].to_numpy()].reset_index(drop=True)
        yield pd.DataFrame({
            "image_sha256": q["image_sha256"], "window": q["window"],
            "qx0": q["x0"], "qy0": q["y0"], "qx1": q["x1"], "qy1": q["y1"],
            "trim_x0": q["trim_x0"], "trim_y0": q["trim_y0"], "trim_x1": q["trim_x1"], "trim_y1": q["trim_y1"],
            "customer_id": found["customer_id"], "image_id": found["image_id"], "ref_sha256": found["ref_sha256"],
            "ref_window": found["window"], "mirrored": found["mirrored"].astype(bool), "distance": found["distance"].astype("int32"),
        })


def verify_batches(batches, params: MatchParams):
    """mapInPandas body: SIFT + RANSAC on the best candidate of each (found image, reference)."""
    from copyhunt.blobs import LocalBlobStore
    from copyhunt.imaging import BadImage, load_normalised
    from copyhunt.verify import similarity_score, verify_pair

    qstore, rstore = LocalBlobStore(params.query_blobs), LocalBlobStore(params.ref_blobs)
    ref_cache: dict[str, object] = {}
    for pdf in batches:
        out = []
        for row in pdf.itertuples(index=False):
            try:
                query = load_normalised(qstore.get(row.image_sha256), params.max_image_pixels)
                if row.ref_sha256 not in ref_cache:
                    ref_cache[row.ref_sha256] = load_normalised(rstore.get(row.ref_sha256), params.max_image_pixels)
                ref = ref_cache[row.ref_sha256]
            except (BadImage, KeyError):
                continue
            mirrored = bool(row.mirrored)
            v = verify_pair(query, ref, mirrored)
            if not v.ok:  # the hash may have picked the wrong orientation; features decide
                mirrored = not mirrored
                v = verify_pair(query, ref, mirrored)
            if not v.ok:
                continue
            # Boxes are relative to the trimmed image: map them back onto the image as served.
            tx0, ty0, tw, th = row.trim_x0, row.trim_y0, row.trim_x1 - row.trim_x0, row.trim_y1 - row.trim_y0
            qb = v.query_box
            out.append({
                "image_sha256": row.image_sha256, "customer_id": row.customer_id, "image_id": row.image_id,
                "ref_sha256": row.ref_sha256, "query_window": row.window, "ref_window": row.ref_window,
                "mirrored": mirrored, "distance": int(row.distance), "inliers": v.inliers,
                "score": similarity_score(int(row.distance), v.inliers),
                "query_x0": round(tx0 + qb[0] * tw, 4), "query_y0": round(ty0 + qb[1] * th, 4),
                "query_x1": round(tx0 + qb[2] * tw, 4), "query_y1": round(ty0 + qb[3] * th, 4),
                "ref_x0": v.ref_box[0], "ref_y0": v.ref_box[1], "ref_x1": v.ref_box[2], "ref_y1": v.ref_box[3],
                "query_overlap": v.query_overlap, "ref_overlap": v.ref_overlap,
            })
        if out:
            yield pd.DataFrame(out)


def arrow_match_schema():
    import pyarrow as pa

    types = {"string": pa.string(), "boolean": pa.bool_(), "int": pa.int32(), "double": pa.float64()}
    fields = []
    for part in MATCH_SCHEMA.split(","):
        name, kind = part.split()
        fields.append(pa.field(name, types[kind]))
    return pa.schema(fields)
