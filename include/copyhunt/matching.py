"""Per-batch matching logic run inside Spark executors (see ``copyhunt.jobs.match``).

Kept in the library, not in the job file, so executors import it by name, and tests and
benchmarks call it without Spark:

* ``match_batches``: mapInPandas body over fingerprint rows that arrive grouped by found image;
  each Python worker opens the memory-mapped shards once, looks up every window hash of a batch
  in one call (``search_frame``), then verifies each found image of the batch;
* ``verify_image``: one found image with its candidate references; the image is decoded once,
  each reference's features come from the index's feature store. A reference reached by a
  single distant window pair (nearly always chance) goes to ORB only if a ``second_opinion``
  from its other windows, hashed where the pair puts them, agrees.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from copyhunt.fingerprint import PART_WINDOW, RECTIFIED_WINDOW, TILT_WINDOW

SPECULATIVE_WINDOW = PART_WINDOW + "-"  # blob windows of a tilt view, a pasted-picture rectangle or a collage cell

# A candidate: a found image's window, a reference window within max_distance bits, and both boxes.
CANDIDATE_COLUMNS = ["image_sha256", "window", "qx0", "qy0", "qx1", "qy1", "trim_x0", "trim_y0", "trim_x1", "trim_y1",
                     "customer_id", "image_id", "ref_sha256", "ref_window", "mirrored", "rx0", "ry0", "rx1", "ry1", "distance", "shard", "annoy_id"]
MATCH_SCHEMA = (
    "image_sha256 string, customer_id string, image_id string, ref_sha256 string, "
    "query_window string, ref_window string, mirrored boolean, distance int, inliers int, "
    "score double, query_x0 double, query_y0 double, query_x1 double, query_y1 double, "
    "ref_x0 double, ref_y0 double, ref_x1 double, ref_y1 double, query_overlap double, ref_overlap double, "
    "prediction_error double"
)
MATCH_COLUMNS = [part.split()[0] for part in MATCH_SCHEMA.split(",")]
PAIR_KEY = ["image_sha256", "customer_id", "image_id", "ref_sha256"]
# The order of a (found image, reference)'s window pairs: closest first, ties broken by names, so
# the pairs tried never depend on partitioning (best_pairs and verify_query).
PAIR_ORDER = ["distance", "mirrored", "window", "ref_window"]


@dataclass(frozen=True)
class MatchParams:
    index_dir: str
    index_version: str | None
    query_blobs: str
    ref_blobs: str
    k: int = 8
    # Hash candidates within this many bits go to verification. Copies sit at 0-10 bits from
    # their best reference window; unrelated photos mostly at 14+ (robustness suite), and the
    # verifier rejects the rest.
    max_distance: int = 10
    # Blob windows searched on speculation, in a view or a part of the found image (a tilt view,
    # a pasted-picture rectangle, a collage cell: names "blob-..."), pair within this many bits:
    # a third of the unrelated stream's chance candidates at 100k references came through them,
    # nearly all at 10 bits; of the tuning part's 588 copies one (a cell of a 5x5 collage) was
    # found through one at 10 bits, against the suite's own 14 references, and none against 100k.
    speculative_max_distance: int = 8
    # Window pairs tried per (found image, reference), best first, until one verifies.
    pairs_per_reference: int = 3
    # A reference reached by one window pair this many bits apart or more is a weak candidate:
    # nearly every chance candidate, and a few heavy crops. Before ORB (~5 ms) it needs a second
    # opinion (``second_opinion``, ~0.2 ms): another of the reference's windows, mapped into the
    # found image where the pair puts it, within ``second_opinion_bits``. Throughput suite
    # against 100k references (fingerprint version 2, hashing size): the closest mapped window
    # of 511 copy pairs is 0-12 bits for 94%, over 16 for 3% (copies rarely rest on one weak
    # pair); of 166 chance pairs, 20 bits at the least, 24 or more for 92%.
    weak_distance: int = 8
    second_opinion_bits: int = 16
    search_k: int | None = None  # None: index.SEARCH_K
    # The default operating point (see verify.DEFAULT_MIN_SCORE).
    min_score: float = 0.5
    max_image_pixels: int = 64_000_000

    @property
    def features_dir(self) -> Path:
        return Path(self.index_dir) / "features"


@lru_cache(maxsize=4)
def _searcher(index_dir: str, version: str | None, search_k: int | None):
    # One searcher per Python worker: the Annoy files are mmapped once and shared by batches.
    from copyhunt.index import ShardSearcher

    return ShardSearcher(Path(index_dir), version, search_k)


def search_frame(fingerprints: pd.DataFrame, params: MatchParams) -> pd.DataFrame:
    """Candidates (one row per query window x reference window within the distance) of a frame
    of fingerprint rows."""
    if fingerprints.empty:
        return pd.DataFrame(columns=CANDIDATE_COLUMNS)
    searcher = _searcher(params.index_dir, params.index_version, params.search_k)
    found = searcher.query(fingerprints["phash"].tolist(), params.k, params.max_distance)
    if found.empty:
        return pd.DataFrame(columns=CANDIDATE_COLUMNS)
    q = fingerprints.reset_index(drop=True).iloc[found["query_row"].to_numpy()].reset_index(drop=True)
    keep = same_kind(q["window"], found["window"])
    if params.speculative_max_distance < params.max_distance:
        keep &= ~(q["window"].str.startswith(SPECULATIVE_WINDOW).to_numpy(bool) & (found["distance"].to_numpy() > params.speculative_max_distance))
    if not keep.all():
        q, found = q[keep].reset_index(drop=True), found[keep].reset_index(drop=True)
    return pd.DataFrame({
        "image_sha256": q["image_sha256"], "window": q["window"],
        "qx0": q["x0"], "qy0": q["y0"], "qx1": q["x1"], "qy1": q["y1"],
        "trim_x0": q["trim_x0"], "trim_y0": q["trim_y0"], "trim_x1": q["trim_x1"], "trim_y1": q["trim_y1"],
        "customer_id": found["customer_id"], "image_id": found["image_id"], "ref_sha256": found["ref_sha256"],
        "ref_window": found["window"], "mirrored": found["mirrored"].astype(bool),
        "rx0": found["x0"], "ry0": found["y0"], "rx1": found["x1"], "ry1": found["y1"],
        "distance": found["distance"].astype("int32"), "shard": found["shard"], "annoy_id": found["annoy_id"].astype("int64"),
    })


def in_view(window: str) -> bool:
    """Whether a found image's window has its box in a view of the image (``fingerprint.found_image_view``)."""
    return window == RECTIFIED_WINDOW or window.startswith(TILT_WINDOW)


def same_kind(query_window: pd.Series, ref_window: pd.Series) -> np.ndarray:
    """Which window pairs can show a copy: a blob window (a part of a picture) against a blob
    window, a window that may hold a whole picture (the found image, a collage cell, a pasted or
    de-tilted picture) against the whole reference in one of its orientations.

    The other pairs are chance: matching the robustness suite (seed 20261122) against the 100k
    throughput index, none of the 1,534 window pairs of copies were of another kind; each chance
    pair costs an ORB verification.
    """
    query_part = query_window.str.startswith(PART_WINDOW).to_numpy(bool)
    ref_part = ref_window.str.startswith(PART_WINDOW).to_numpy(bool)
    return query_part == ref_part


def match_batches(batches: Iterable[pd.DataFrame], params: MatchParams) -> Iterator[pd.DataFrame]:
    """mapInPandas body: verified matches of the found images in a stream of fingerprint batches.

    The rows of one found image must be consecutive (the job partitions by image and sorts
    within partitions). A batch ends anywhere, so its last image waits for the next batch: every
    image is searched and verified once, with all of its windows.
    """
    from copyhunt.allocator import tune_allocator

    tune_allocator()  # on the Spark worker: verification's image arrays reuse freed heap memory
    waiting = None
    for pdf in batches:
        if waiting is not None:
            pdf = pd.concat([waiting, pdf], ignore_index=True)
        if pdf.empty:
            continue
        shas = pdf["image_sha256"].to_numpy()
        last = shas == shas[-1]
        waiting = pdf[last]
        out = match_frame(pdf[~last], params)
        if not out.empty:
            yield out
    if waiting is not None:
        out = match_frame(waiting, params)
        if not out.empty:
            yield out


def best_pairs(candidates: pd.DataFrame, per_reference: int) -> pd.DataFrame:
    """The ``per_reference`` closest window pairs of each (found image, reference), in a fixed
    order (distance, then names), so the choice never depends on partitioning."""
    if candidates.empty:
        return candidates
    ordered = candidates.sort_values([*PAIR_KEY, *PAIR_ORDER], kind="mergesort")
    return ordered.groupby(PAIR_KEY, sort=False).head(per_reference).reset_index(drop=True)


class _Verifier:
    """Per-worker state: the feature store and a small cache of reference features."""

    def __init__(self, params: MatchParams):
        from copyhunt.blobs import LocalBlobStore
        from copyhunt.verify import FeatureStore

        self.params = params
        self.store = FeatureStore(params.features_dir)
        self.ref_blobs = LocalBlobStore(params.ref_blobs)
        self.query_blobs = LocalBlobStore(params.query_blobs)
        self.cache: dict[str, object] = {}

    def reference(self, ref_sha256: str):
        from copyhunt.imaging import load_gray
        from copyhunt.verify import VERIFY_WORKING_SIZE, reference_features

        if ref_sha256 not in self.cache:
            if len(self.cache) > 256:
                self.cache.clear()
            try:
                self.cache[ref_sha256] = self.store.get(ref_sha256)
            except KeyError:  # an index built before features were stored: describe it now
                gray, _ = load_gray(self.ref_blobs.get(ref_sha256), self.params.max_image_pixels, VERIFY_WORKING_SIZE)
                self.cache[ref_sha256] = reference_features(gray)
        return self.cache[ref_sha256]


@lru_cache(maxsize=4)
def _verifier(params: MatchParams) -> _Verifier:
    return _Verifier(params)


class QueryImage:
    """A found image's bytes, decoded at each working size at most once, and only when needed:
    most images with candidates are settled by a second opinion on the small hashing copy, and
    never pay for the larger decode ORB needs."""

    def __init__(self, data: bytes, max_pixels: int):
        self.data = data
        self.max_pixels = max_pixels
        self._gray: dict[int, object] = {}

    def gray(self, working_size: int):
        """The grey working copy (``imaging.load_gray``); raises BadImage."""
        from copyhunt.imaging import load_gray

        if working_size not in self._gray:
            self._gray[working_size] = load_gray(self.data, self.max_pixels, working_size)[0]
        return self._gray[working_size]


def verify_image(pdf: pd.DataFrame, params: MatchParams) -> pd.DataFrame:
    """The candidates of one found image -> verified matches, one row per reference at most (its
    best verified window pair)."""
    from copyhunt.imaging import BadImage

    if pdf.empty:
        return _no_matches()
    state = _verifier(params)
    try:
        query = QueryImage(state.query_blobs.get(pdf["image_sha256"].iloc[0]), params.max_image_pixels)
        return verify_query(query, pdf, params)
    except (BadImage, KeyError):
        return _no_matches()


def _pairs_to_verify(pdf: pd.DataFrame, per_reference: int) -> list[tuple]:
    """``best_pairs`` of one found image's candidates as plain tuples, grouped by reference in
    key order: a few dozen rows per image, where pandas' sort and groupby cost more than ORB."""
    # One conversion of the frame: a column lookup per column costs ten times as much.
    values = pdf.to_numpy(dtype=object)[:, [pdf.columns.get_loc(c) for c in _VERIFY_INPUT]]
    rows = sorted(map(tuple, values.tolist()), key=_pair_order)
    kept, last, taken = [], None, 0
    for row in rows:
        key = row[:4]
        taken = taken + 1 if key == last else 1
        last = key
        if taken <= per_reference:
            kept.append(row)
    return kept


# Candidate columns in the order verify_query reads them: PAIR_KEY, PAIR_ORDER, then the rest.
_VERIFY_INPUT = [*PAIR_KEY, *PAIR_ORDER, "qx0", "qy0", "qx1", "qy1",
                 "rx0", "ry0", "rx1", "ry1", "trim_x0", "trim_y0", "trim_x1", "trim_y1", "shard", "annoy_id"]


def _pair_order(row: tuple) -> tuple:
    return (row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[7])


def verify_query(query: QueryImage, pdf: pd.DataFrame, params: MatchParams) -> pd.DataFrame:
    """Verify the candidates of one found image. Raises BadImage if it does not decode."""
    from copyhunt.fingerprint import HASH_WORKING_SIZE
    from copyhunt.imaging import BadImage
    from copyhunt.fingerprint import found_image_view, pair_orientation, window_tilt
    from copyhunt.verify import (QUERY_VERIFY_SIZE, HashCandidate, ref_box_from_view, reference_in_tilt_view, similarity_score,
                                 verify_candidate, verify_in_view)

    state = _verifier(params)
    out = []
    done_key = None  # a reference is reported once: its best verified pair
    rows = _pairs_to_verify(pdf, params.pairs_per_reference)
    pairs_of = Counter(row[1:4] for row in rows)
    for (sha, customer_id, image_id, ref_sha256, distance, mirrored, window, ref_window,
         qx0, qy0, qx1, qy1, rx0, ry0, rx1, ry1, tx0, ty0, tx1, ty1, shard, annoy_id) in rows:
        key = (customer_id, image_id, ref_sha256)
        if key == done_key:
            continue
        copy_mirrored, copy_turns = pair_orientation(window, ref_window, bool(mirrored))
        if pairs_of[key] == 1 and distance >= params.weak_distance and isinstance(shard, str):
            searcher = _searcher(params.index_dir, params.index_version, params.search_k)
            opinion = second_opinion(query.gray(HASH_WORKING_SIZE), searcher.image_entries(shard, int(annoy_id)), (qx0, qy0, qx1, qy1),
                                     (rx0, ry0, rx1, ry1), copy_mirrored, copy_turns, ref_window, window, params.second_opinion_bits)
            if opinion is False:
                done_key = key
                continue
        try:
            reference = state.reference(ref_sha256)
        except (BadImage, KeyError):
            done_key = key
            continue
        candidate = HashCandidate((qx0, qy0, qx1, qy1), (rx0, ry0, rx1, ry1), copy_mirrored, copy_turns)
        gray = query.gray(QUERY_VERIFY_SIZE)
        ref_tilt = window_tilt(ref_window)
        features, to_ref = (reference, None) if ref_tilt is None else reference_in_tilt_view(reference, ref_tilt)
        if in_view(window):
            view = found_image_view(gray, window)
            v = verify_in_view(*view, gray.shape, features, candidate) if view is not None else None
        else:
            v = verify_candidate(gray, features, candidate)
        if v is None or not v.ok:
            continue
        if to_ref is not None:
            v = ref_box_from_view(v, to_ref, (features.width, features.height), (reference.width, reference.height))
        done_key = key
        score = similarity_score(int(distance), v.inliers, v.prediction_error)
        if score < params.min_score:
            continue
        # Boxes are relative to the trimmed image: map them back onto the image as served.
        tw, th = tx1 - tx0, ty1 - ty0
        qb = v.query_box
        out.append({
            "image_sha256": sha, "customer_id": customer_id, "image_id": image_id, "ref_sha256": ref_sha256,
            "query_window": window, "ref_window": ref_window, "mirrored": copy_mirrored,
            "distance": int(distance), "inliers": v.inliers, "score": score,
            "query_x0": round(tx0 + qb[0] * tw, 4), "query_y0": round(ty0 + qb[1] * th, 4),
            "query_x1": round(tx0 + qb[2] * tw, 4), "query_y1": round(ty0 + qb[3] * th, 4),
            "ref_x0": v.ref_box[0], "ref_y0": v.ref_box[1], "ref_x1": v.ref_box[2], "ref_y1": v.ref_box[3],
            "query_overlap": v.query_overlap, "ref_overlap": v.ref_overlap, "prediction_error": v.prediction_error,
        })
    return pd.DataFrame(out, columns=MATCH_COLUMNS) if out else _no_matches()


def _no_matches() -> pd.DataFrame:
    """An empty frame of matches. Most found images with candidates verify none, and building a
    frame of 21 columns from nothing costs as much as a second opinion: the empty one is made
    once and copied."""
    global _NO_MATCHES
    if _NO_MATCHES is None:
        _NO_MATCHES = pd.DataFrame(columns=MATCH_COLUMNS)
    return _NO_MATCHES.copy()


_NO_MATCHES: pd.DataFrame | None = None


def second_opinion(query, entries: dict, query_box, ref_box, mirrored: bool, turns: int, ref_window: str, query_window: str,
                   max_bits: int) -> bool | None:
    """Do the reference's other windows, mapped into the found image where the window pair puts
    them, hash like the reference there? True if one is within ``max_bits``, False if none is,
    None when it cannot tell (no other window lands inside the found image): then ORB decides.
    ``mirrored`` and ``turns`` take the reference to the copy (``fingerprint.pair_orientation``)."""
    from copyhunt.fingerprint import found_image_view
    if in_view(query_window):  # its box is relative to a view of the image: look there
        view = found_image_view(query, query_window)
        if view is None:
            return None
        query = view[0]
    distance = mapped_window_distance(query, entries, query_box, ref_box, mirrored, turns, ref_window)
    return None if distance is None else distance <= max_bits


def mapped_window_distance(query, entries: dict, query_box, ref_box, mirrored: bool, turns: int, ref_window: str) -> int | None:
    """The smallest Hamming distance between the reference's other blob windows and the found
    image's pixels where the window pair puts them, or None when none lands inside it.

    ``query`` is the found image's grey working copy at the hashing size (the pixels its own
    hashes were made from); boxes are relative (0..1). The found image is first turned back to
    the reference's orientation (``mirrored`` and ``turns`` take the reference to the copy), so
    the mapped windows are where the reference's boxes say; each is then hashed in the
    orientation its entry was (``fingerprint.canonical_orientations``).
    """
    from copyhunt.fingerprint import MIN_WINDOW_PX, ORIENTATIONS, dct_blocks, hamming_many, hashes_from_blocks, window_orientation
    from copyhunt.verify import oriented

    qx0, qy0, qx1, qy1 = query_box
    rx0, ry0, rx1, ry1 = ref_box
    if rx1 <= rx0 or ry1 <= ry0 or qx1 <= qx0 or qy1 <= qy0:
        return None
    if mirrored or turns:
        query = oriented(query, mirrored, turns)
        if mirrored:
            qx0, qx1 = 1 - qx1, 1 - qx0
        for _ in range(turns):  # np.rot90 turns counter-clockwise: (x, y) -> (y, 1 - x)
            qx0, qy0, qx1, qy1 = qy0, 1 - qx1, qy1, 1 - qx0
    sx, sy = (qx1 - qx0) / (rx1 - rx0), (qy1 - qy0) / (ry1 - ry0)
    names = entries["window"].astype(str)
    bases = np.array([name.split("-rot")[0].split("-mirror")[0] for name in names.tolist()])
    matched_base = ref_window.split("-rot")[0].split("-mirror")[0]
    # The reference's windows in the matched window's frame: the reference, or its tilt view.
    in_tilt_view = np.char.startswith(names, TILT_WINDOW + "@")
    others = np.char.startswith(names, PART_WINDOW) & (bases != matched_base) & (in_tilt_view == ref_window.startswith(TILT_WINDOW + "@"))
    if not others.any():
        return None
    h, w = query.shape
    boxes = np.stack([np.round((qx0 + (entries["x0"][others] - rx0) * sx) * w), np.round((qy0 + (entries["y0"][others] - ry0) * sy) * h),
                      np.round((qx0 + (entries["x1"][others] - rx0) * sx) * w), np.round((qy0 + (entries["y1"][others] - ry0) * sy) * h)],
                     axis=1).astype(np.int64)
    inside = (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= w) & (boxes[:, 3] <= h) & \
             (boxes[:, 2] - boxes[:, 0] >= MIN_WINDOW_PX) & (boxes[:, 3] - boxes[:, 1] >= MIN_WINDOW_PX)
    if not inside.any():
        return None
    blocks, _ = dct_blocks(query, boxes[inside])
    # Each entry's orientation, as an index into ORIENTATIONS (their suffix and mirrored flag).
    index_of = {(("", "-rot90", "-rot180", "-rot270").index(suffix), m): k for k, (suffix, m, _) in enumerate(ORIENTATIONS)}
    kinds = [index_of[(window_orientation(n)[0], bool(m))] for n, m in zip(names[others][inside].tolist(), entries["mirrored"][others][inside].tolist())]
    hashes = np.empty(len(kinds), np.int64)
    for k in set(kinds):
        rows = [i for i, kind in enumerate(kinds) if kind == k]
        hashes[rows] = hashes_from_blocks(np.ascontiguousarray(ORIENTATIONS[k][2](blocks[rows])))
    return int(hamming_many(hashes, entries["phash"][others][inside]).min())


def arrow_match_schema():
    import pyarrow as pa

    types = {"string": pa.string(), "boolean": pa.bool_(), "int": pa.int32(), "double": pa.float64()}
    fields = []
    for part in MATCH_SCHEMA.split(","):
        name, kind = part.split()
        fields.append(pa.field(name, types[kind]))
    return pa.schema(fields)


def match_frame(fingerprints: pd.DataFrame, params: MatchParams) -> pd.DataFrame:
    """Verified matches of the found images in a frame of fingerprint rows (every window of each
    image): what the Spark job runs on each batch, and tests and benchmarks run without Spark."""
    if fingerprints.empty:
        return pd.DataFrame(columns=MATCH_COLUMNS)
    candidates = search_frame(fingerprints, params)
    if candidates.empty:
        return pd.DataFrame(columns=MATCH_COLUMNS)
    parts = [verify_image(group, params) for _, group in candidates.groupby("image_sha256", sort=True)]
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=MATCH_COLUMNS)
