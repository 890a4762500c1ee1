"""``copyhunt bench robustness --held-out``: recall on photos and edits the matcher was not tuned on.

The photos (``bench.photos``) are split once, by a hash of their names, into a tuning part and a
held-out part. Every query is made from one part's photos only: a reference of the part, edited
by one class of ``bench.edits`` with parameters drawn at random per query, per seed, and where the
edit needs other pictures (grid neighbours, embed backgrounds) the part's unregistered photos.
Distractors are the part's unregistered photos under the same edits. All references of both parts
are registered in one index, so a held-out copy found as a tuning reference counts as false.

The report gives, per class, held-out recall with a Wilson 95% interval, tuning recall, and
whole-image pHash recall from the same run (its threshold chosen on the tuning part), then each
part's precision. The thresholds of fingerprint version 6 (collage seams, canonical orientation
margins, tilt and plain-background views, the spread of inliers) were chosen on the tuning part
only; the score's calibration and the other verification thresholds are older, set on photos now
in both parts.

``scale_refs``/``scale_queries`` add precision at scale: the suite's references planted among
synthetic references (``throughput.synthetic_entries``) and that many unregistered queries,
reported as false hits per 10,000 unrelated images with an interval.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from copyhunt.bench import edits
from copyhunt.bench.photos import PARTS, Photo, photos_of
from copyhunt.config import Settings
from copyhunt.lake import atomic_write_bytes

HELD_OUT_SEEDS = (101, 202, 303)
TARGET_RECALL = 0.95
TARGET_CHAIN_RECALL = 0.90
TARGET_PRECISION = 0.99
TARGET_FALSE_PER_10K = 1.0
JPEG_QUALITY = 90
THRESHOLD_NOTE = ("fingerprint version 6's thresholds were chosen on the tuning part only; the score's calibration, the operating point "
                  "and the older verification thresholds were set before the split existed, on photos now in both parts")


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% at the default z)."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class HeldOutQuery:
    file: str
    transform: str
    reference_id: str | None  # None for distractors
    part: str
    seed: int
    photos: tuple[str, ...]  # every photo the query shows: the subject first, then neighbours/backgrounds
    params: dict = field(default_factory=dict, hash=False, compare=False)
    query_box: tuple | None = None
    ref_box: tuple | None = None


@dataclass(frozen=True)
class HeldOutSuite:
    references: Path
    queries: Path
    truth: list[HeldOutQuery]

    def classes(self) -> list[str]:
        return [c for c in edits.CLASSES if any(q.transform == c for q in self.truth)]


def _load(assets: Path, photo: Photo):
    from copyhunt.bench.suite import _distractor_photo, open_upright

    return open_upright(assets / photo.path) if photo.role == "reference" else _distractor_photo(assets / photo.path)


def _encode(im) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def build_heldout_suite(assets: Path, out: Path, seeds: Iterable[int] = HELD_OUT_SEEDS, variants: int = 1, distractor_variants: int = 1,
                        classes: Iterable[str] | None = None, parts: Iterable[str] = PARTS) -> HeldOutSuite:
    """Write every part's references, and the queries of ``parts``, under ``out``; return the
    ground truth. The references of both parts are always written (one index holds them all), so
    a tuning-only suite (``parts=["tuning"]``, what thresholds are chosen on) meets the same
    chance matches as the whole one."""
    assets, out = Path(assets), Path(out)
    refs_dir, queries_dir = out / "references", out / "queries"
    refs_dir.mkdir(parents=True, exist_ok=True)
    queries_dir.mkdir(parents=True, exist_ok=True)
    wanted = list(classes or edits.CLASSES)
    parts = list(parts)
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; the parts are {list(PARTS)}")
    truth: list[HeldOutQuery] = []
    for part in PARTS:
        references, distractors = photos_of(assets, part, "reference"), photos_of(assets, part, "distractor")
        for photo in references:
            src = assets / photo.path
            atomic_write_bytes(refs_dir / f"{photo.name}{src.suffix.lower()}", src.read_bytes())
        if part not in parts:
            continue
        pool = edits.Pool([_load(assets, p) for p in distractors], [p.name for p in distractors])
        loaded = {p.name: _load(assets, p) for p in references + distractors}
        for name in wanted:
            for seed in seeds:
                for kind, photos, n in (("copy", references, variants), ("distractor", distractors, distractor_variants)):
                    for photo in photos:
                        for v in range(n):
                            rng = random.Random(f"{seed}:{name}:{photo.name}:{v}")
                            params = edits.draw(name, rng)
                            made, used = edits.apply(name, loaded[photo.name], params, pool)
                            file = f"{part}-{_slug(name)}-{photo.name}-s{seed}-{v}.jpg"
                            atomic_write_bytes(queries_dir / file, _encode(made.image))
                            copy = kind == "copy"
                            truth.append(HeldOutQuery(file, name, photo.name if copy else None, part, seed, (photo.name, *dict.fromkeys(used)),
                                                      params, made.query_box if copy else None, made.ref_box if copy else None))
    truth.sort(key=lambda q: q.file)
    atomic_write_bytes(out / "truth.json", json.dumps([asdict(q) for q in truth], indent=1).encode())
    return HeldOutSuite(refs_dir, queries_dir, truth)


# ---- the report ----------------------------------------------------------------------------------
@dataclass
class PartRecall:
    copies: int
    found: int
    recall: float
    low: float
    high: float
    phash_recall: float


@dataclass
class ClassRow:
    transform: str
    held_out: PartRecall
    tuning: PartRecall

    def target(self) -> float:
        return TARGET_CHAIN_RECALL if self.transform == edits.CHAIN else TARGET_RECALL


@dataclass
class PartPrecision:
    queries: int
    distractors: int
    true_matches: int
    false_matches: int
    precision: float
    phash_precision: float
    false_examples: list[str]


@dataclass
class HeldOutReport:
    seeds: list[int]
    photos: dict[str, dict[str, list[str]]]  # part -> role -> names
    classes: list[ClassRow]
    precision: dict[str, PartPrecision]
    phash_threshold: int
    seconds: dict[str, float]
    note: str = THRESHOLD_NOTE
    scale: dict | None = None
    # Queries the fingerprint refused (too small, say): a refused copy counts as missed.
    unusable: dict[str, str] = field(default_factory=dict)
    # Every missed copy with its drawn parameters, held-out first: where the matcher's work is.
    misses: list[dict] = field(default_factory=list)

    def meets_targets(self) -> bool:
        ok = all(c.held_out.recall >= c.target() for c in self.classes) and self.precision["held-out"].precision >= TARGET_PRECISION
        return ok and (self.scale is None or self.scale["false_per_10k"] <= TARGET_FALSE_PER_10K)


def score(truth: list[HeldOutQuery], found: dict[str, set[str]]) -> tuple[dict, dict]:
    """Per (part, class): copies and copies found; per part: true and false matches with examples."""
    recall: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    matches: dict[str, list] = {p: [0, 0, []] for p in PARTS}
    for q in truth:
        got = found.get(q.file, set())
        if q.reference_id is not None:
            cell = recall[(q.part, q.transform)]
            cell[0] += 1
            if q.reference_id in got:
                cell[1] += 1
                matches[q.part][0] += 1
        for wrong in sorted(got - {q.reference_id}):
            matches[q.part][1] += 1
            matches[q.part][2].append(f"{q.file} -> {wrong}")
    return dict(recall), matches


def _precision(true: int, false: int) -> float:
    return true / (true + false) if true + false else 1.0


def _phash_found(distances: dict[str, dict[str, int]], threshold: int) -> dict[str, set[str]]:
    return {q: {r for r, d in ds.items() if d <= threshold} for q, ds in distances.items()}


def tuned_phash_threshold(truth: list[HeldOutQuery], distances: dict[str, dict[str, int]]) -> int:
    """The largest whole-image pHash threshold keeping precision >= TARGET_PRECISION on the tuning part only."""
    tuning = [q for q in truth if q.part == "tuning"]
    best = 0
    for bits in range(0, 33):
        _, m = score(tuning, _phash_found(distances, bits))
        if _precision(m["tuning"][0], m["tuning"][1]) >= TARGET_PRECISION:
            best = bits
    return best


def make_report(suite: HeldOutSuite, found: dict[str, set[str]], distances: dict[str, dict[str, int]], seeds: list[int],
                assets: Path, seconds: dict[str, float]) -> HeldOutReport:
    recall, matches = score(suite.truth, found)
    threshold = tuned_phash_threshold(suite.truth, distances)
    p_recall, p_matches = score(suite.truth, _phash_found(distances, threshold))
    rows = []
    for c in suite.classes():
        parts = {}
        for part in PARTS:
            copies, hit = recall.get((part, c), [0, 0])
            low, high = wilson(hit, copies)
            parts[part] = PartRecall(copies, hit, round(hit / copies, 4) if copies else float("nan"), round(low, 4), round(high, 4),
                                     round(p_recall.get((part, c), [0, 0])[1] / copies, 4) if copies else float("nan"))
        rows.append(ClassRow(c, parts["held-out"], parts["tuning"]))
    precision = {}
    for part in PARTS:
        in_part = [q for q in suite.truth if q.part == part]
        t, f, ex = matches[part]
        precision[part] = PartPrecision(len(in_part), sum(1 for q in in_part if q.reference_id is None), t, f, round(_precision(t, f), 4),
                                        round(_precision(p_matches[part][0], p_matches[part][1]), 4), ex[:20])
    photos = {part: {role: [p.name for p in photos_of(assets, part, role)] for role in ("reference", "distractor")} for part in PARTS}
    misses = [{"part": q.part, "transform": q.transform, "file": q.file, "params": q.params}
              for q in sorted(suite.truth, key=lambda q: (PARTS.index(q.part), q.file))
              if q.reference_id is not None and q.reference_id not in found.get(q.file, set())]
    return HeldOutReport(list(seeds), photos, rows, precision, threshold, {k: round(v, 2) for k, v in seconds.items()}, misses=misses)


def run_heldout(settings: Settings, out_dir: Path, assets: Path, seeds: Iterable[int] = HELD_OUT_SEEDS, variants: int = 1,
                distractor_variants: int = 1, workers: int | None = None, classes: Iterable[str] | None = None,
                scale_refs: int = 0, scale_queries: int = 0, progress: Callable[..., Iterable] = lambda items, **_: items,
                parts: Iterable[str] = PARTS) -> HeldOutReport:
    """Build the suite, run engine and baseline, write ``robustness-held-out.json`` and ``.png``.

    With ``parts=["tuning"]`` only the tuning part's queries are made and matched (what a
    threshold is chosen on: the held-out part stays unseen), and the report is written to
    ``robustness-tuning.json`` instead, without a chart."""
    from copyhunt.bench.robustness import run_baseline, run_engine
    from copyhunt.verify import DEFAULT_MIN_SCORE

    seeds, parts = list(seeds), [p for p in PARTS if p in set(parts)]
    workers = workers or min(2, os.cpu_count() or 1)
    only = "" if parts == list(PARTS) else "-" + "-".join(parts)
    work = Path(out_dir) / "work" / f"robustness-held-out-{'-'.join(map(str, seeds))}-v{variants}-d{distractor_variants}{only}"
    t = time.perf_counter()
    suite = build_heldout_suite(assets, work / "suite", seeds, variants, distractor_variants, classes, parts)
    seconds = {"suite": time.perf_counter() - t}
    matches, engine_seconds, info = run_engine(suite, work, settings, workers, progress)
    seconds.update(engine_seconds)
    matches = matches[matches["score"] >= DEFAULT_MIN_SCORE]
    found: dict[str, set[str]] = defaultdict(set)
    for r in matches.itertuples(index=False):
        found[r.query].add(r.image_id)
    distances, seconds["baseline"] = run_baseline(suite)
    report = make_report(suite, found, distances, seeds, assets, seconds)
    report.unusable = dict(sorted(info["unusable"].items()))
    if scale_refs and scale_queries:
        t = time.perf_counter()
        report.scale = precision_at_scale(settings, work, assets, work / "index", scale_refs, scale_queries, workers)
        report.seconds["scale"] = round(time.perf_counter() - t, 2)
    out_dir = Path(out_dir)
    if only:
        atomic_write_bytes(out_dir / f"robustness{only}.json", json.dumps(asdict(report), indent=1, ensure_ascii=False).encode())
        return report
    atomic_write_bytes(out_dir / "robustness-held-out.json", json.dumps(asdict(report), indent=1, ensure_ascii=False).encode())
    write_chart(report, out_dir / "robustness-held-out.png")
    return report


# ---- precision at scale --------------------------------------------------------------------------
SCALE_SEED = 424242


def _unrelated_batch(args: tuple) -> list[str]:
    """Write unrelated queries ``indices``: the unregistered photos of both parts under random edits."""
    assets, folder, indices = args
    distractors = photos_of(Path(assets), "held-out", "distractor") + photos_of(Path(assets), "tuning", "distractor")
    loaded = [_load(Path(assets), p) for p in distractors]
    pool = edits.Pool(loaded, [p.name for p in distractors])
    names = []
    for i in indices:
        photo = i % len(distractors)
        name = edits.CLASSES[(i // len(distractors)) % len(edits.CLASSES)]
        rng = random.Random(f"{SCALE_SEED}:{i}")
        made, _ = edits.apply(name, loaded[photo], edits.draw(name, rng), pool)
        file = f"unrelated-{i:06d}.jpg"
        atomic_write_bytes(Path(folder) / file, _encode(made.image))
        names.append(file)
    return names


def precision_at_scale(settings: Settings, work: Path, assets: Path, real_index: Path, n_refs: int, n_queries: int, workers: int) -> dict:
    """False hits per 10,000 unrelated queries against the suite's references among synthetic ones."""
    from copyhunt import standalone
    from copyhunt.bench.robustness import _match_chunk
    from copyhunt.bench.throughput import benchmark_match_params, build_benchmark_index
    from copyhunt.blobs import LocalBlobStore
    from copyhunt.index import current_shards
    from copyhunt.verify import DEFAULT_MIN_SCORE

    scale = work / f"scale-{n_refs}-{n_queries}"
    folder = scale / "unrelated"
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_unrelated_batch, [(str(assets), str(folder), range(k, n_queries, workers * 8)) for k in range(workers * 8)]))
    real_entries = pd.concat([pd.read_parquet(real_index / "shards" / f"{s}.parquet") for s in current_shards(real_index)]).drop(columns=["annoy_id"])
    index_dir = scale / "index"
    if not (index_dir / "CURRENT").exists():
        build_benchmark_index(real_entries, n_refs, index_dir, settings.shard_size)
    blobs = LocalBlobStore(scale / "query-blobs")
    names, fingerprints, bad = standalone.fingerprint_folder(sorted(folder.iterdir()), blobs, settings, lambda items, **_: items, workers)
    params = benchmark_match_params(index_dir, real_index, blobs.root, settings.max_image_pixels, [fingerprints])
    shas = sorted(fingerprints["image_sha256"].unique())
    chunks = [fingerprints[fingerprints["image_sha256"].isin(set(shas[i::workers * 4]))] for i in range(workers * 4)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_match_chunk, [(c, params) for c in chunks if len(c)]))
    matches = pd.concat([p for p in parts if len(p)] or [pd.DataFrame(columns=["image_sha256", "image_id", "score"])], ignore_index=True)
    matches = matches[matches["score"] >= DEFAULT_MIN_SCORE]
    sha_to_names = defaultdict(list)
    for name, sha in names:
        sha_to_names[sha].append(name)
    false_queries = sorted({n for sha in matches["image_sha256"].unique() for n in sha_to_names[sha]})
    low, high = wilson(len(false_queries), n_queries)
    return {"references": n_refs, "queries": n_queries, "distinct_query_images": len(shas), "unusable": len(bad),
            "queries_with_false_hits": len(false_queries), "false_matches": int(len(matches)),
            "false_per_10k": round(10_000 * len(false_queries) / n_queries, 3), "low_per_10k": round(10_000 * low, 3),
            "high_per_10k": round(10_000 * high, 3), "examples": false_queries[:20],
            "note": "queries are edits of the suite's few unregistered photos, not independent photos: the interval assumes independence"}


# ---- output --------------------------------------------------------------------------------------
def format_table(report: HeldOutReport) -> list[list[str]]:
    rows = [["class", "held-out copies", "held-out recall [95% CI]", "held-out pHash", "tuning copies", "tuning recall [95% CI]", "tuning pHash"]]
    for c in report.classes:
        h, t = c.held_out, c.tuning
        mark = "" if h.recall >= c.target() else "  <"
        held_out = [f"{h.recall:.3f} [{h.low:.2f}, {h.high:.2f}]{mark}", f"{h.phash_recall:.3f}"] if h.copies else ["-", "-"]
        tuning = [f"{t.recall:.3f} [{t.low:.2f}, {t.high:.2f}]", f"{t.phash_recall:.3f}"] if t.copies else ["-", "-"]
        rows.append([c.transform, str(h.copies), *held_out, str(t.copies), *tuning])
    for part in PARTS:
        p = report.precision[part]
        if not p.queries:  # a run of the other part only
            continue
        rows.append([f"precision, {part} ({p.distractors} distractors)", str(p.queries), f"{p.precision:.4f} ({p.false_matches} false)",
                     f"{p.phash_precision:.4f}", "", "", ""])
    if report.scale:
        s = report.scale
        rows.append([f"false hits per 10k unrelated, {s['references']} refs", str(s["queries"]),
                     f"{s['false_per_10k']:.2f} [{s['low_per_10k']:.2f}, {s['high_per_10k']:.2f}]", "", "", "", ""])
    return rows


def figures(report: HeldOutReport) -> list:
    """Held-out rows for docs/performance.md (bench name "robustness held-out")."""
    from copyhunt.bench.docs import Figure

    rows = [Figure(f"held-out recall: {c.transform} ({c.held_out.copies} copies)", f"{c.held_out.recall:.3f} [{c.held_out.low:.2f}, {c.held_out.high:.2f}]",
                   f"tuning {c.tuning.recall:.3f}; pHash {c.held_out.phash_recall:.3f}", f">= {c.target()}") for c in report.classes]
    for part in PARTS:
        p = report.precision[part]
        rows.append(Figure(f"precision, {part} part ({p.queries} queries)", f"{p.precision:.4f}", f"pHash {p.phash_precision:.4f}",
                           f">= {TARGET_PRECISION}" if part == "held-out" else ""))
    if report.scale:
        s = report.scale
        rows.append(Figure(f"false hits per 10,000 unrelated images, {s['references']} refs, {s['queries']} queries",
                           f"{s['false_per_10k']:.2f} [{s['low_per_10k']:.2f}, {s['high_per_10k']:.2f}]", "", f"<= {TARGET_FALSE_PER_10K}"))
    return rows


def write_chart(report: HeldOutReport, path: Path) -> Path:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [c.transform for c in report.classes]
    y = np.arange(len(names))
    h = np.array([c.held_out.recall for c in report.classes])
    err = np.array([[c.held_out.recall - c.held_out.low for c in report.classes], [c.held_out.high - c.held_out.recall for c in report.classes]])
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(names) + 2.4), dpi=110)
    ax.barh(y - 0.27, h, height=0.27, xerr=err, capsize=2, label=f"held-out (precision {report.precision['held-out'].precision:.3f}), 95% CI",
            color="#2b6cb0")
    ax.barh(y, [c.tuning.recall for c in report.classes], height=0.27, label="tuning", color="#90cdf4")
    ax.barh(y + 0.27, [c.held_out.phash_recall for c in report.classes], height=0.27,
            label=f"held-out, whole-image pHash <= {report.phash_threshold} bits", color="#c0c0c0")
    ax.axvline(TARGET_RECALL, color="#c53030", linestyle="--", linewidth=1, label=f"target {TARGET_RECALL}")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_title(f"Held-out robustness suite, seeds {', '.join(map(str, report.seeds))}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.4, -0.07), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
