"""``copyhunt bench robustness``: recall per transform class and precision at the default
operating point, side by side with whole-image ``imagehash.phash`` measured in the same run.

The suite (``bench.suite``) is written under the work directory, the references are indexed with
``copyhunt index build``'s code, the queries fingerprinted and matched with the same functions the
Spark job runs (in a process pool here, so the benchmark needs no JVM). The baseline hashes every
query and reference whole, ``imagehash.phash(Image.open(f))``, and matches at the largest Hamming
threshold that keeps its precision at 0.99 or better on this same suite: its best case.

``--fit`` also refits the score's logistic calibration on a suite built with a different seed and
prints the constants to paste into ``verify.py``.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from copyhunt.bench.suite import CALIBRATION_SEED, SUITE_SEED, Suite, SuiteQuery, build_suite
from copyhunt.config import Settings
from copyhunt.lake import atomic_write_bytes

TARGET_PRECISION = 0.99
TARGET_RECALL = 0.95


def _plain(items: Iterable, **_: object) -> Iterable:
    return items


@dataclass
class ClassResult:
    transform: str
    copies: int
    recall: float
    baseline_recall: float
    region_iou: float | None  # median IoU of the reported region with the true one, where known


@dataclass
class RobustnessReport:
    seed: int
    queries: int
    copies: int
    distractors: int
    precision: float
    false_matches: int
    baseline_precision: float
    baseline_false_matches: int
    baseline_threshold: int
    classes: list[ClassResult]
    seconds: dict[str, float]
    false_match_examples: list[str] = field(default_factory=list)
    # Search keys per usable query image (window hashes, paste proposals included): what each
    # found image costs the index lookups. The baseline has one.
    windows_per_query: float = 0.0

    def meets_targets(self) -> bool:
        return self.precision >= TARGET_PRECISION and all(c.recall >= TARGET_RECALL for c in self.classes)


# ---- running the engine --------------------------------------------------------------------------
def _match_chunk(args: tuple) -> pd.DataFrame:
    from copyhunt.matching import match_frame

    fingerprints, params = args
    return match_frame(fingerprints, params)


def run_engine(suite: Suite, work: Path, settings: Settings, workers: int, progress=_plain) -> tuple[pd.DataFrame, dict[str, float], dict]:
    """Index the references, fingerprint and match the queries: one row per reported match."""
    from copyhunt import standalone
    from copyhunt.blobs import LocalBlobStore
    from copyhunt.matching import MatchParams

    seconds = {}
    t = time.perf_counter()
    index = work / "index"
    build = standalone.build_index_from_folder(suite.references, index, settings.shard_size, settings, _plain)
    seconds["index"] = time.perf_counter() - t
    t = time.perf_counter()
    blobs = LocalBlobStore(work / "query-blobs")
    files = sorted(suite.queries.iterdir())
    names, fingerprints, bad = standalone.fingerprint_folder(files, blobs, settings, progress, workers)
    seconds["fingerprint"] = time.perf_counter() - t
    t = time.perf_counter()
    params = MatchParams(index_dir=str(index), index_version=None, query_blobs=str(blobs.root), ref_blobs=str(index / "blobs"),
                         max_image_pixels=settings.max_image_pixels)
    shas = sorted(fingerprints["image_sha256"].unique())
    chunks = [fingerprints[fingerprints["image_sha256"].isin(set(shas[i::workers * 4]))] for i in range(workers * 4)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_match_chunk, [(c, params) for c in chunks if len(c)]))
    matches = pd.concat([p for p in parts if len(p)] or [pd.DataFrame(columns=["image_sha256", "image_id"])], ignore_index=True)
    seconds["match"] = time.perf_counter() - t
    named = pd.DataFrame(names, columns=["query", "image_sha256"]).merge(matches, on="image_sha256", how="inner")
    windows = round(len(fingerprints) / max(1, fingerprints["image_sha256"].nunique()), 2)
    return named, seconds, {"index": build, "unusable": {name: bad[sha] for name, sha in names if sha in bad}, "windows_per_query": windows}


def run_baseline(suite: Suite) -> tuple[dict[str, dict[str, int]], float]:
    """Whole-image imagehash pHash distance of every query to every reference (the naive way)."""
    import imagehash
    from PIL import Image

    t = time.perf_counter()

    def phash(path: Path) -> int | None:
        try:
            with Image.open(path) as im:
                return int(str(imagehash.phash(im)), 16)
        except Exception:  # the naive way has no error handling of its own
            return None

    refs = {p.stem: phash(p) for p in sorted(suite.references.iterdir())}
    distances: dict[str, dict[str, int]] = {}
    for q in suite.truth:
        h = phash(suite.queries / q.file)
        distances[q.file] = {r: (bin(h ^ rh).count("1") if h is not None and rh is not None else 64) for r, rh in refs.items()}
    return distances, time.perf_counter() - t


def _baseline_matches(distances: dict[str, dict[str, int]], threshold: int) -> dict[str, set[str]]:
    return {q: {r for r, d in ds.items() if d <= threshold} for q, ds in distances.items()}


def _score(truth: list[SuiteQuery], found: dict[str, set[str]]) -> tuple[dict[str, float], float, int, list[str], dict[str, int]]:
    hits, copies = defaultdict(int), defaultdict(int)
    true_matches = false_matches = 0
    examples = []
    for q in truth:
        got = found.get(q.file, set())
        if q.reference_id is not None:
            copies[q.transform] += 1
            if q.reference_id in got:
                hits[q.transform] += 1
                true_matches += 1
        for wrong in sorted(got - {q.reference_id}):
            false_matches += 1
            examples.append(f"{q.file} -> {wrong}")
    recall = {t: hits[t] / n for t, n in copies.items()}
    precision = true_matches / (true_matches + false_matches) if true_matches + false_matches else 1.0
    return recall, precision, false_matches, examples, dict(copies)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _region_ious(truth: list[SuiteQuery], matches: pd.DataFrame) -> dict[str, float]:
    """Median IoU, per class, of the reported region against the generator's: the part of the
    query showing the copy (collages, pastes, padding) or the part of the reference kept (crops)."""
    by_pair = {(r.query, r.image_id): r for r in matches.itertuples(index=False)}
    ious = defaultdict(list)
    for q in truth:
        r = by_pair.get((q.file, q.reference_id))
        if r is None:
            continue
        if q.query_box is not None:
            ious[q.transform].append(_iou(q.query_box, (r.query_x0, r.query_y0, r.query_x1, r.query_y1)))
        elif q.ref_box is not None:
            ious[q.transform].append(_iou(q.ref_box, (r.ref_x0, r.ref_y0, r.ref_x1, r.ref_y1)))
    return {t: float(np.median(v)) for t, v in ious.items()}


def run_robustness(settings: Settings, out_dir: Path, assets: Path, seed: int = SUITE_SEED, quick: bool = False,
                   workers: int | None = None, progress: Callable[..., Iterable] = _plain) -> RobustnessReport:
    """Build the suite, run engine and baseline, write ``robustness.json`` and ``robustness.png``."""
    from copyhunt.verify import DEFAULT_MIN_SCORE

    workers = workers or min(2, os.cpu_count() or 1)
    work = Path(out_dir) / "work" / f"robustness-{seed}{'-quick' if quick else ''}"
    t = time.perf_counter()
    suite = build_suite(assets, work / "suite", seed, variants=1 if quick else 3, distractor_variants=1 if quick else 2)
    seconds = {"suite": time.perf_counter() - t}
    matches, engine_seconds, info = run_engine(suite, work, settings, workers, progress)
    seconds.update(engine_seconds)
    matches = matches[matches["score"] >= DEFAULT_MIN_SCORE]
    found: dict[str, set[str]] = defaultdict(set)
    for r in matches.itertuples(index=False):
        found[r.query].add(r.image_id)
    recall, precision, false_matches, examples, copies = _score(suite.truth, found)

    distances, seconds["baseline"] = run_baseline(suite)
    threshold, base = 0, None
    for t_bits in range(0, 33):
        scored = _score(suite.truth, _baseline_matches(distances, t_bits))
        if scored[1] >= TARGET_PRECISION:
            threshold, base = t_bits, scored
    if base is None:
        base = _score(suite.truth, _baseline_matches(distances, 0))
    ious = _region_ious(suite.truth, matches)
    classes = [ClassResult(c, copies[c], round(recall[c], 4), round(base[0][c], 4), round(ious[c], 3) if c in ious else None) for c in suite.classes()]
    report = RobustnessReport(
        seed=seed, queries=len(suite.truth), copies=sum(copies.values()), distractors=sum(1 for q in suite.truth if q.reference_id is None),
        precision=round(precision, 4), false_matches=false_matches, baseline_precision=round(base[1], 4), baseline_false_matches=base[2],
        baseline_threshold=threshold, classes=classes, seconds={k: round(v, 2) for k, v in seconds.items()}, false_match_examples=examples[:20],
        windows_per_query=info["windows_per_query"],
    )
    out_dir = Path(out_dir)
    atomic_write_bytes(out_dir / "robustness.json", json.dumps(asdict(report), indent=1, ensure_ascii=False).encode())
    write_chart(report, out_dir / "robustness.png")
    return report


# ---- output --------------------------------------------------------------------------------------
def write_chart(report: RobustnessReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    names = [c.transform for c in report.classes]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 0.38 * len(names) + 2.4), dpi=110)
    ax.barh(y - 0.2, [c.recall for c in report.classes], height=0.4, label=f"copyhunt (precision {report.precision:.3f})", color="#2b6cb0")
    ax.barh(y + 0.2, [c.baseline_recall for c in report.classes], height=0.4,
            label=f"whole-image pHash, <= {report.baseline_threshold} bits (precision {report.baseline_precision:.3f})", color="#c0c0c0")
    ax.axvline(TARGET_RECALL, color="#c53030", linestyle="--", linewidth=1, label=f"target recall {TARGET_RECALL}")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_title(f"Robustness suite (seed {report.seed}): {report.copies} copies, {report.distractors} distractors")
    ax.legend(loc="upper center", bbox_to_anchor=(0.4, -0.07), ncol=1, fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: same figures, same bytes
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def figures(report: RobustnessReport) -> list:
    """Recall per class and precision as figures for docs/performance.md."""
    from copyhunt.bench.docs import Figure

    rows = [Figure(f"recall: {c.transform} ({c.copies} copies)", f"{c.recall:.3f}", f"pHash {c.baseline_recall:.3f}", f">= {TARGET_RECALL}")
            for c in report.classes]
    rows.append(Figure(f"precision, {report.queries} queries", f"{report.precision:.4f}", f"pHash {report.baseline_precision:.4f}",
                       f">= {TARGET_PRECISION}"))
    rows.append(Figure("false matches", str(report.false_matches), f"pHash {report.baseline_false_matches}"))
    return rows


def format_table(report: RobustnessReport) -> list[list[str]]:
    rows = [["transform", "copies", "copyhunt recall", "pHash recall", "region IoU"]]
    for c in report.classes:
        mark = "" if c.recall >= TARGET_RECALL else "  <"
        rows.append([c.transform, str(c.copies), f"{c.recall:.3f}{mark}", f"{c.baseline_recall:.3f}", "" if c.region_iou is None else f"{c.region_iou:.2f}"])
    rows.append(["precision (all queries)", str(report.queries), f"{report.precision:.4f}", f"{report.baseline_precision:.4f}", ""])
    rows.append(["false matches", "", str(report.false_matches), str(report.baseline_false_matches), ""])
    rows.append(["windows per query image", "", f"{report.windows_per_query:.1f}", "1", ""])
    return rows


# ---- calibration ---------------------------------------------------------------------------------
def calibration_evidence(settings: Settings, out_dir: Path, assets: Path, seed: int = CALIBRATION_SEED, workers: int = 2) -> pd.DataFrame:
    """Evidence of every verified window pair (best pairs per image and reference) with its label."""
    from copyhunt import standalone
    from copyhunt.blobs import LocalBlobStore
    from copyhunt.imaging import BadImage, load_gray
    from copyhunt.matching import MatchParams, _verifier, best_pairs, search_frame
    from copyhunt.fingerprint import pair_orientation
    from copyhunt.verify import QUERY_VERIFY_SIZE, HashCandidate, verify_candidate

    work = Path(out_dir) / "work" / f"calibration-{seed}"
    suite = build_suite(assets, work / "suite", seed)
    index = work / "index"
    standalone.build_index_from_folder(suite.references, index, settings.shard_size, settings, _plain)
    blobs = LocalBlobStore(work / "query-blobs")
    names, fingerprints, _ = standalone.fingerprint_folder(sorted(suite.queries.iterdir()), blobs, settings, _plain, workers)
    # A looser hash radius than the operating one: the suite's small index has few chance
    # candidates within 10 bits, and the fit needs negatives the verifier actually sees at scale.
    params = MatchParams(index_dir=str(index), index_version=None, query_blobs=str(blobs.root), ref_blobs=str(index / "blobs"), max_distance=16)
    pairs = best_pairs(search_frame(fingerprints, params), params.pairs_per_reference)
    truth = {q.file: q.reference_id for q in suite.truth}
    label_of = {sha: truth[name] for name, sha in names}
    name_of = {sha: name for name, sha in names}
    state = _verifier(params)
    rows = []
    for sha, group in pairs.groupby("image_sha256", sort=True):
        try:
            query, _ = load_gray(blobs.get(sha), settings.max_image_pixels, QUERY_VERIFY_SIZE)
        except BadImage:
            continue
        for row in group.itertuples(index=False):
            v = verify_candidate(query, state.reference(row.ref_sha256), HashCandidate(
                (row.qx0, row.qy0, row.qx1, row.qy1), (row.rx0, row.ry0, row.rx1, row.ry1), *pair_orientation(row.window, row.ref_window, bool(row.mirrored))))
            rows.append({"query": name_of[sha], "reference_id": row.image_id, "window": row.window, "ref_window": row.ref_window,
                         "copy": label_of[sha] == row.image_id, "distance": int(row.distance), "inliers": v.inliers,
                         "prediction_error": min(1.0, v.prediction_error), "verified": v.ok})
    return pd.DataFrame(rows)


def _features(evidence: pd.DataFrame) -> np.ndarray:
    from copyhunt.verify import SUPPORT_ERROR_SCALE

    inliers = evidence["inliers"].to_numpy(float)
    error = evidence["prediction_error"].to_numpy(float)
    support = np.log1p(inliers * np.clip(1 - error / SUPPORT_ERROR_SCALE, 0, None))
    return np.column_stack([np.ones(len(evidence)), support, evidence["distance"].to_numpy(float)])


def fit_calibration(evidence: pd.DataFrame, l2: float = 1.0) -> dict[str, float]:
    """L2-regularised logistic regression (Newton's method) of P(copy | evidence), on the
    features ``verify.similarity_score`` uses.

    The suite separates copies from the rest almost perfectly, where an unregularised fit has no
    finite optimum; the penalty keeps the constants finite and the score graded.
    """
    x = _features(evidence)
    y = evidence["copy"].to_numpy(float)
    w = np.zeros(x.shape[1])
    penalty = np.diag([0.0] + [l2] * (x.shape[1] - 1))
    for _ in range(100):
        p = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + penalty @ w
        hess = x.T @ (x * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return {"SCORE_INTERCEPT": round(float(w[0]), 3), "SCORE_LOG_SUPPORT": round(float(w[1]), 3), "SCORE_DISTANCE": round(float(w[2]), 3)}


def logistic(constants: dict[str, float], evidence: pd.DataFrame) -> np.ndarray:
    w = np.array([constants["SCORE_INTERCEPT"], constants["SCORE_LOG_SUPPORT"], constants["SCORE_DISTANCE"]])
    return 1 / (1 + np.exp(-(_features(evidence) @ w)))
