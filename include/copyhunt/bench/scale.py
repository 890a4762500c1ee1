"""``copyhunt bench scale``: how the reference side grows with the number of references.

For each index size it builds an index of synthetic references around the robustness suite's real
ones (as ``copyhunt bench throughput`` makes them: real window layouts, random pHash-shaped
hashes), then matches a stream of found images against it, and reports what a cluster would have
to provision per process:

* build seconds, the cores the build used (CPU seconds over wall seconds) and its peak RSS, in a
  freshly spawned process so the figure is the build's own;
* the index's bytes on disk per reference: shard files (Annoy trees and side tables) and the
  verification features every reference gets at indexing time;
* a matching worker's peak RSS and its matched found images per CPU second on one core (CPU
  time, so that waiting for a busy machine's CPU is not counted), also in a freshly spawned process that opens the index as a Spark worker does; the candidate references
  per image and the share of the suite's copies found (recall must not fall with size);

then a projection to 10 million references. The model is stated with it: a straight line through
the two largest sizes measured, because today every one of these grows with the number of
references (the build holds all entries in memory, a worker maps every shard and its lookups touch
most of its pages, and every lookup visits every shard).

A size whose build would not fit in this machine's memory by that same line is skipped with the
reason, not run into the out-of-memory killer.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from copyhunt.config import Settings
from copyhunt.lake import atomic_write_bytes

SEED = 20261207
STREAM_IMAGES = 300  # found images matched at each size (10% copies of the suite's references)
PROJECT_TO = 10_000_000
MEMORY_HEADROOM = 0.8  # a build may take this share of the memory available when the bench starts


@dataclass
class ScalePoint:
    refs: int
    entries: int
    shards: int
    build_seconds: float
    build_cpu_seconds: float
    build_cores: float
    build_peak_rss_mb: float
    shard_bytes_per_ref: float
    feature_bytes_per_ref: float
    worker_open_rss_mb: float  # after opening the index, before the first query
    worker_peak_rss_mb: float
    worker_anon_rss_mb: float  # at the end of matching: the worker's own memory
    worker_file_rss_mb: float  # at the end of matching: mapped index pages (shared, evictable)
    matched_per_s_per_core: float
    candidate_refs_per_image: float
    copies_found: float
    false_matches: int

    @property
    def index_bytes(self) -> float:
        return self.refs * (self.shard_bytes_per_ref + self.feature_bytes_per_ref)


@dataclass
class ScaleReport:
    points: list[ScalePoint] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)  # refs -> why it was not measured
    projection: dict[str, float] = field(default_factory=dict)
    model: str = ""
    load_average: list[float] = field(default_factory=list)


# ---- the two measured processes ------------------------------------------------------------------
def _match(params, stream_path: str, suite_path: str, truth: dict[str, str | None], sha_to_name: dict[str, str]) -> dict:
    """In a spawned process pinned to one CPU: open the index as a Spark worker does, then match."""
    from copyhunt.bench.throughput import copies_found, measure_matching, peak_rss_mb, status_mb
    from copyhunt.matching import _searcher

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    _searcher(params.index_dir, params.index_version, params.search_k)
    opened = status_mb("VmRSS")
    stream = pd.read_parquet(stream_path)
    cpu0 = time.process_time()
    figures = measure_matching(stream, params, None)
    # Per core is per CPU second of this process (pinned to one CPU): on a shared machine the wall
    # time also counts the waits for the CPU.
    figures["per_cpu_second"] = figures["images"] / (time.process_time() - cpu0)
    found = copies_found(pd.read_parquet(suite_path), params, truth, sha_to_name)
    # Of the resident pages at the end, the file-backed ones are the index's mapped files: shared by
    # the workers of a machine and given back under memory pressure; the anonymous ones are the worker's own.
    return {**figures, **found, "open_rss_mb": opened, "peak_rss_mb": peak_rss_mb(), "anon_rss_mb": status_mb("RssAnon"),
            "file_rss_mb": status_mb("RssFile")}


def _available_memory_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def _bytes_under(folder: Path) -> int:
    """Bytes of the distinct files under ``folder`` (hard links counted once)."""
    seen, total = set(), 0
    for path in folder.rglob("*"):
        if path.is_file():
            st = path.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def line_through(points: list[tuple[float, float]], x: float) -> float:
    """The straight line through the last two (x, y) points, at ``x`` beyond them (one point:
    proportional). Never below the last point's y: on a busy machine a smaller size can measure
    slower than a larger one, and nothing here shrinks as the index grows."""
    if len(points) == 1:
        (x1, y1), = points
        return max(y1, y1 * x / x1)
    (x1, y1), (x2, y2) = points[-2:]
    return max(y2, y2 + (y2 - y1) / (x2 - x1) * (x - x2))


# ---- the run -------------------------------------------------------------------------------------
def too_big_to_build(points: list[ScalePoint], refs: int, memory_mb: float) -> str | None:
    """Why an index of ``refs`` references should not be built here, if its build would not fit
    in memory by the line through the sizes measured before; None when it fits."""
    if not points:
        return None
    expected_mb = line_through([(p.refs, p.build_peak_rss_mb) for p in points], refs)
    if expected_mb <= MEMORY_HEADROOM * memory_mb:
        return None
    return (f"its build would peak at about {expected_mb / 1024:.1f} GiB by the line through the sizes measured, "
            f"more than {MEMORY_HEADROOM:.0%} of the {memory_mb / 1024:.1f} GiB available")


def run_scale(settings: Settings, out_dir: Path, assets: Path, sizes: tuple[int, ...], stream_images: int = STREAM_IMAGES,
              log: Callable[[str], object] = print, suite_classes: list[str] | None = None) -> ScaleReport:
    """Measure each size of ``sizes``; ``suite_classes`` narrows the suite whose copies are
    looked for at every size (all classes by default)."""
    from copyhunt import standalone
    from copyhunt.bench.suite import build_suite
    from copyhunt.bench.throughput import (
        COPY_SHARE, _write_all, benchmark_index_key, benchmark_match_params, build_benchmark_index, in_fresh_process, megapixel_jpegs)
    from copyhunt.blobs import LocalBlobStore
    from copyhunt.index import current_shards

    work = Path(out_dir) / "work" / "scale"
    work.mkdir(parents=True, exist_ok=True)
    report = ScaleReport(load_average=[round(x, 2) for x in os.getloadavg()])
    memory_mb = _available_memory_mb()

    # The stream: unrelated 1-MP JPEGs with 10% copies of the suite's references; and the suite's
    # own queries, whose copies found at each size say whether recall holds as the index grows.
    suite = build_suite(assets, work / "suite", variants=1, distractor_variants=1, classes=suite_classes)
    unrelated = _write_all(work / "unrelated", megapixel_jpegs(assets, round(stream_images * (1 - COPY_SHARE)), SEED, unrelated_only=True))
    copies = [suite.queries / q.file for q in suite.truth if q.reference_id]
    rng = random.Random(SEED)
    stream = unrelated + rng.sample(copies, min(len(copies), stream_images - len(unrelated)))
    plain = lambda items, **_: items  # noqa: E731
    blobs = LocalBlobStore(work / "query-blobs")
    log(f"fingerprinting {len(stream)} found images and {len(list(suite.queries.iterdir()))} suite queries")
    _, stream_fp, _ = standalone.fingerprint_folder(stream, blobs, settings, plain, workers=2)
    names, suite_fp, _ = standalone.fingerprint_folder(sorted(suite.queries.iterdir()), blobs, settings, plain, workers=2)
    stream_path, suite_path = work / "stream-fingerprints.parquet", work / "suite-fingerprints.parquet"
    stream_fp.to_parquet(stream_path)
    suite_fp.to_parquet(suite_path)
    truth = {q.file: q.reference_id for q in suite.truth}
    sha_to_name = {sha: name for name, sha in names}

    real_index = work / "real-index"
    standalone.build_index_from_folder(suite.references, real_index, settings.shard_size, settings, plain)
    real_entries = pd.concat([pd.read_parquet(real_index / "shards" / f"{s}.parquet") for s in current_shards(real_index)]).drop(columns=["annoy_id"])
    real_features = sorted((real_index / "features").rglob("*.orb"))
    feature_bytes_per_ref = sum(f.stat().st_size for f in real_features) / max(1, len(real_features))
    key = benchmark_index_key(real_entries)

    for n_refs in sorted(sizes):
        if why := too_big_to_build(report.points, n_refs, memory_mb):
            report.skipped[n_refs] = why
            log(f"skipping {n_refs:,} references: {report.skipped[n_refs]}")
            continue
        index_dir = work / f"index-{n_refs}-{key}"
        built_file = index_dir / "bench-build.json"
        if built_file.exists():  # an earlier run built this very index: its figures stand
            built = json.loads(built_file.read_text())
        else:
            log(f"building a {n_refs:,}-reference index in a fresh process")
            built = build_benchmark_index(real_entries, n_refs, index_dir, settings.shard_size)
            atomic_write_bytes(built_file, json.dumps(built).encode())
        params = benchmark_match_params(index_dir, real_index, blobs.root, settings.max_image_pixels, [stream_fp, suite_fp])
        log(f"matching {stream_fp['image_sha256'].nunique()} found images against {n_refs:,} references (a fresh process, one core)")
        m = in_fresh_process(_match, params, str(stream_path), str(suite_path), truth, sha_to_name)
        shard_bytes = _bytes_under(index_dir / "shards")
        report.points.append(ScalePoint(
            refs=n_refs, entries=int(built["entries"]), shards=int(built["shards"]), build_seconds=round(built["seconds"], 1),
            build_cpu_seconds=round(built["cpu_seconds"], 1), build_cores=round(built["cores"], 2), build_peak_rss_mb=round(built["peak_rss_mb"], 1),
            shard_bytes_per_ref=round(shard_bytes / n_refs, 1), feature_bytes_per_ref=round(feature_bytes_per_ref, 1),
            worker_open_rss_mb=round(m["open_rss_mb"], 1), worker_peak_rss_mb=round(m["peak_rss_mb"], 1),
            worker_anon_rss_mb=round(m["anon_rss_mb"], 1), worker_file_rss_mb=round(m["file_rss_mb"], 1),
            matched_per_s_per_core=round(m["per_cpu_second"], 1), candidate_refs_per_image=round(m["candidate_refs_per_image"], 2),
            copies_found=round(m["copies_found"], 3), false_matches=int(m["false_matches"])))

    if report.points:
        report.projection, report.model = project(report.points, PROJECT_TO)
    atomic_write_bytes(Path(out_dir) / "scale.json", json.dumps(as_json(report), indent=1).encode())
    return report


def project(points: list[ScalePoint], refs: int) -> tuple[dict[str, float], str]:
    """Each figure at ``refs`` references on the straight line through the two largest sizes."""
    def at(value: Callable[[ScalePoint], float]) -> float:
        return line_through([(p.refs, value(p)) for p in points], refs)

    ms_per_image = at(lambda p: 1000 / p.matched_per_s_per_core)
    projection = {
        "refs": refs,
        "build_seconds": round(at(lambda p: p.build_seconds), 1),
        "build_peak_rss_mb": round(at(lambda p: p.build_peak_rss_mb), 1),
        "index_bytes": round(at(lambda p: p.index_bytes), 1),
        "worker_peak_rss_mb": round(at(lambda p: p.worker_peak_rss_mb), 1),
        "matched_per_s_per_core": round(1000 / ms_per_image, 1) if ms_per_image > 0 else float("nan"),
    }
    used = ", ".join(f"{p.refs:,}" for p in points[-2:])
    model = (f"a straight line through the sizes {used}: the build holds every entry in memory, a worker maps every shard "
             f"and its lookups touch most of its pages, and each lookup visits every shard, so each figure (and a found image's matching time) "
             f"grows in proportion to the references (never below the largest size's figure)")
    return projection, model


def as_json(report: ScaleReport) -> dict:
    return {"points": [{**asdict(p), "index_bytes": p.index_bytes} for p in report.points],
            "skipped": {str(k): v for k, v in report.skipped.items()}, "projection": report.projection, "model": report.model,
            "load_average": report.load_average}


def json_list(report: ScaleReport) -> list[dict]:
    """``--json OUT``: one object per size measured."""
    return [{**asdict(p), "index_bytes": p.index_bytes} for p in report.points]


def format_table(report: ScaleReport) -> list[list[str]]:
    rows = [["refs", "build s wall / CPU (cores)", "build peak RSS MB", "index bytes/ref (shards + features)", "worker RSS MB: peak (open; own + mapped at end)",
             "matched/s/core", "candidate refs/image", "suite copies found"]]
    for p in report.points:
        rows.append([f"{p.refs:,}", f"{p.build_seconds:.1f} / {p.build_cpu_seconds:.1f} ({p.build_cores:.2f})", f"{p.build_peak_rss_mb:,.0f}",
                     f"{p.shard_bytes_per_ref + p.feature_bytes_per_ref:,.0f} ({p.shard_bytes_per_ref:,.0f} + {p.feature_bytes_per_ref:,.0f})",
                     f"{p.worker_peak_rss_mb:,.0f} ({p.worker_open_rss_mb:,.0f}; {p.worker_anon_rss_mb:,.0f} + {p.worker_file_rss_mb:,.0f})", f"{p.matched_per_s_per_core:.1f}",
                     f"{p.candidate_refs_per_image:.2f}", f"{p.copies_found:.3f} ({p.false_matches} false)"])
    for refs, why in sorted(report.skipped.items()):
        rows.append([f"{refs:,}", "skipped", why, "", "", "", "", ""])
    if report.projection:
        pr = report.projection
        rows.append([f"{pr['refs']:,} (projected)", f"{pr['build_seconds']:,.0f}", f"{pr['build_peak_rss_mb']:,.0f}",
                     f"{pr['index_bytes'] / 2**30:,.1f} GiB in all", f"{pr['worker_peak_rss_mb']:,.0f}", f"{pr['matched_per_s_per_core']:.1f}", "", ""])
    return rows


def figures(report: ScaleReport) -> list:
    """Rows for docs/performance.md."""
    from copyhunt.bench.docs import Figure

    out = []
    for p in report.points:
        out.append(Figure(f"{p.refs:,} refs: build seconds wall / CPU (cores used) / build peak RSS",
                          f"{p.build_seconds:.0f} / {p.build_cpu_seconds:.0f} s ({p.build_cores:.2f}) / {p.build_peak_rss_mb:,.0f} MB",
                          f"{p.refs / p.build_seconds:,.0f} refs/s wall", ">= 5,000 refs/s; RSS at 1M <= 1.2x at 100k"))
        out.append(Figure(f"{p.refs:,} refs: matching worker peak RSS (own + mapped index pages at the end) / matched found images per s per core",
                          f"{p.worker_peak_rss_mb:,.0f} MB ({p.worker_anon_rss_mb:,.0f} + {p.worker_file_rss_mb:,.0f}) / {p.matched_per_s_per_core:.0f}",
                          f"{p.candidate_refs_per_image:.2f} candidate refs per image; suite copies found {p.copies_found:.3f}; "
                          f"index {p.shard_bytes_per_ref + p.feature_bytes_per_ref:,.0f} bytes per ref on disk",
                          ">= 150/s per core at 1M"))
    for refs, why in sorted(report.skipped.items()):
        out.append(Figure(f"{refs:,} refs", "not measured", why))
    if report.projection:
        pr = report.projection
        out.append(Figure(f"projected to {pr['refs']:,} refs", f"build {pr['build_seconds'] / 3600:,.1f} h, {pr['build_peak_rss_mb'] / 1024:,.0f} GiB peak; "
                          f"worker {pr['worker_peak_rss_mb'] / 1024:,.1f} GiB; {pr['matched_per_s_per_core']:.1f} matched/s per core; "
                          f"{pr['index_bytes'] / 2**30:,.0f} GiB on disk", report.model))
    return out

