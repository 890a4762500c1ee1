"""``copyhunt bench throughput``: how fast fingerprinting, matching and the whole path run.

Four measurements, each against a baseline or a second size measured in the same run (the
machine may be shared, so absolute figures move; ratios much less; the load average is printed):

1. fingerprints per second on one core, 1-megapixel JPEGs, against the naive
   ``imagehash.phash(Image.open(f))`` (both read the file; rounds alternate, best round counts),
   and one whole-image pHash through our decode path, to show where the time goes;
2. matched images per second on one core against indexes of 10k and 100k references: a stream
   of unrelated 1-MP JPEGs with 10% copies from the robustness suite, searched in batches and every
   candidate verified, both sizes in alternating rounds (best round counts). The indexes hold the
   suite's real references (with their features) and synthetic references (the window layouts
   of real ones, with random hashes shaped like pHashes: top bit set, 32 bits of 64); the share
   of the suite's copies found at that size is reported next to the speed;
3. index build time and peak memory for the 100k-reference index (built in a fresh process);
4. end to end on 2 cores: decode, fingerprint, search and verify the same stream with two worker
   processes against the 100k index;
5. the production path on the same 2 cores: a larger stream (3,000 images, 10% copies) through
   the fingerprint stage (a process pool, as the ``fingerprint`` task runs it) and then the Spark
   job ``copyhunt.jobs.match`` (spark-submit on the configured master) against the 100k index, each
   stage timed with its start-up. The Spark job runs on a third of the stream too: the
   difference of the match times it reports gives its per-image rate apart from its fixed cost
   (JVM, session, workers opening the index), and with the fingerprint stage's rate the
   sustained rate of a day's run.

Synthetic references have random hashes: a real collection has more near-collisions between
unrelated pictures, so more candidates to verify; the figures say so next to them. "Per core"
figures are taken with the process pinned to one CPU.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import multiprocessing
import os
import random
import re
import resource
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from copyhunt.config import Settings
from copyhunt.lake import atomic_write_bytes

SEED = 20261123
MEGAPIXEL_SIZE = (1155, 866)  # 1.0 MP, 4:3
COPY_SHARE = 0.1  # share of copies in the end-to-end stream
PIPELINE_IMAGES = 3_000  # the production path's stream (quick: 200)
PIPELINE_ROUNDS = 3  # Spark job runs per input size: its fixed cost varies by seconds (two rounds once left it inseparable)
MATCH_ROUNDS = 3  # alternating rounds of matching against each index size
# The fingerprint alone has no target since issue 21 (its time is spent where it buys recall);
# the rates a day's run needs do.
TARGETS = {"match_per_second_100k": 200.0, "slowdown_10k_to_100k": 2.0, "end_to_end_per_second": 116.0}


@dataclass
class ThroughputReport:
    fingerprint_per_second: float
    naive_per_second: float
    fingerprint_speedup: float
    whole_image_per_second: float = float("nan")  # one whole-image pHash through our decode path
    fingerprint_stages_ms: dict[str, float] = field(default_factory=dict)  # where a fingerprint's time goes, ms per image
    fingerprint_windows: float = float("nan")  # window hashes per 1-MP image (the naive way makes one)
    match: dict[str, dict[str, float]] = field(default_factory=dict)  # refs -> figures
    slowdown_10k_to_100k: float = float("nan")
    index_build: dict[str, float] = field(default_factory=dict)
    end_to_end: dict[str, float] = field(default_factory=dict)
    pipeline: dict[str, float | str] = field(default_factory=dict)  # the production path (fingerprint stage + Spark job)
    load_average: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---- test images ---------------------------------------------------------------------------------
def megapixel_jpegs(assets: Path, count: int, seed: int = SEED, unrelated_only: bool = False) -> list[bytes]:
    """Distinct 1-MP JPEGs made from the repository's photos: random crops, turns, colour.
    With ``unrelated_only``, from the photos that are not references (a crawl's usual image)."""
    from PIL import Image, ImageEnhance, ImageOps

    from copyhunt.bench.suite import DISTRACTORS, REFERENCES, open_upright

    names = [*DISTRACTORS.values()] if unrelated_only else [*DISTRACTORS.values(), *REFERENCES.values()]
    sources = [open_upright(assets / rel) for rel in names]
    rng = random.Random(seed)
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        w, h = src.size
        frac = rng.uniform(0.6, 1.0)
        cw, ch = max(16, round(w * frac)), max(16, round(h * frac))
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        im = src.crop((x0, y0, x0 + cw, y0 + ch)).resize(MEGAPIXEL_SIZE, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            im = ImageOps.mirror(im)
        im = ImageEnhance.Color(im).enhance(rng.uniform(0.6, 1.4))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


# ---- 1. fingerprints -----------------------------------------------------------------------------
def measure_fingerprints(files: list[Path], rounds: int = 5) -> tuple[float, float, float]:
    """(fingerprints/s, naive phash/s, whole-image hash on our decode path/s) on this process's
    core: best of alternating rounds."""
    import imagehash
    from PIL import Image

    from copyhunt.fingerprint import FINGERPRINT_BATCH, HASH_WORKING_SIZE, PHasher, fingerprint_images
    from copyhunt.imaging import load_gray

    hasher = PHasher()

    def ours() -> None:  # in batches, as the fingerprint stage's workers take them
        for start in range(0, len(files), FINGERPRINT_BATCH):
            fingerprint_images((("bench", f.read_bytes()) for f in files[start:start + FINGERPRINT_BATCH]), 64_000_000)

    def naive() -> None:
        for f in files:
            imagehash.phash(Image.open(f))

    def whole() -> None:  # the same single hash as naive, through the grey draft decode
        for f in files:
            gray, _ = load_gray(f.read_bytes(), 64_000_000, HASH_WORKING_SIZE)
            hasher.hash_windows(gray, np.array([[0, 0, gray.shape[1], gray.shape[0]]]))

    with one_core():
        ours(), naive(), whole()  # warm the page cache and the imports
        best = best_seconds({"naive": naive, "ours": ours, "whole": whole}, rounds)
    return len(files) / best["ours"], len(files) / best["naive"], len(files) / best["whole"]


def best_seconds(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """The best wall time of each run over ``rounds`` rounds, the runs alternating in each round
    (so that every one meets the same moments of a shared machine)."""
    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


@contextmanager
def one_core():
    """Pin this process to one CPU while measuring "per core": OpenCV's thread pool would
    otherwise spread a blur over both cores and flatter the figure."""
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if before:
        os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        if before:
            os.sched_setaffinity(0, before)


def fingerprint_stages(files: list[Path], rounds: int = 3) -> tuple[dict[str, float], float]:
    """Milliseconds per image of each stage of ``fingerprint_images`` (best of ``rounds``): where
    the time goes, next to the naive figure; and the mean number of window hashes (fingerprint
    rows) an image gets."""
    from copyhunt.fingerprint import (FINGERPRINT_BATCH, HASH_WORKING_SIZE, QUERY_BLOBS, QUERY_CANONICAL_MARGIN, PHasher, blob_windows,
                                      fingerprint_images, image_tilt, paste_blob_hashes_upsampled, paste_blob_windows, paste_windows,
                                      plain_background_quad, rectified, tilt_prefix, tilt_view, tilt_view_windows)
    from copyhunt.imaging import load_gray

    datas = [f.read_bytes() for f in files]
    grays = [load_gray(d, 64_000_000, HASH_WORKING_SIZE)[0] for d in datas]
    pastes = [paste_windows(g) for g in grays]
    hasher = PHasher()
    windows: list[int] = []

    # Each stage's results are dropped as it goes, as in a fingerprint: sixty images' arrays kept
    # at once would cost fresh pages and inflate the stage.
    def decode() -> None:
        for d in datas:
            load_gray(d, 64_000_000, HASH_WORKING_SIZE)

    def blobs() -> None:
        for g in grays:
            blob_windows(g, QUERY_BLOBS)

    def proposals() -> None:
        for g in grays:
            paste_windows(g)

    def searches_in_proposals() -> None:  # at the found image's size, and enlarged (hashed there)
        for g, p in zip(grays, pastes):
            paste_blob_windows(g, p)
            paste_blob_hashes_upsampled(g, p, hasher)

    def views() -> None:  # the tilt view and its blob windows, the plain-background quad and its warp
        for g in grays:
            tilt = image_tilt(g)
            tilted = tilt_view(g, tilt)
            if tilted is not None:
                tilt_view_windows(g, tilted, tilt_prefix(tilt), hasher, QUERY_CANONICAL_MARGIN)
            quad = plain_background_quad(g)
            if quad is not None:
                rectified(g, quad)

    def everything() -> None:  # in batches, as measure_fingerprints
        windows[:] = [len(rows) for start in range(0, len(datas), FINGERPRINT_BATCH)
                      for rows, _ in fingerprint_images((("bench", d) for d in datas[start:start + FINGERPRINT_BATCH]), 64_000_000)]

    best = best_seconds({"decode and trim": decode, "blob windows": blobs, "paste proposals": proposals,
                         "blob searches in proposals": searches_in_proposals, "tilt and plain-background views": views, "all": everything}, rounds)
    ms = {name: 1000 * v / len(files) for name, v in best.items()}
    total = ms.pop("all")
    ms["window hashes, collages, rows"] = max(0.0, total - sum(ms.values()))
    return {k: round(v, 3) for k, v in ms.items()}, float(np.mean(windows))


# ---- 2. matching against large indexes -----------------------------------------------------------
SYNTHETIC_VERSION = "syn2"  # changes when synthetic references are made differently (bench indexes rebuild)


def balanced_hashes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random 64-bit hashes shaped like real pHashes: the top bit (the DCT's DC term, always above
    the median) set and exactly 31 of the other 63 bits set (one bit per coefficient above the
    median). Uniform random 64-bit hashes would have fewer near neighbours than real ones."""
    out = np.empty(n, np.int64)
    rest = np.zeros(63, np.uint8)
    rest[:31] = 1
    for start in range(0, n, 65536):
        m = min(65536, n - start)
        bits = np.ones((m, 64), np.uint8)
        bits[:, 1:] = rng.permuted(np.broadcast_to(rest, (m, 63)), axis=1)
        out[start:start + m] = np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64).view(np.int64)
    return out


def synthetic_entries(n_refs: int, templates: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``n_refs`` made-up references. Each has the windows of a real reference (names, mirrored
    flags, boxes: so matching treats them as it treats real ones), taken in turn, with random
    hashes shaped like real pHashes (``balanced_hashes``)."""
    from copyhunt.index import ENTRY_COLUMNS

    rng = np.random.default_rng(seed)
    keys = sorted(templates.groupby(["customer_id", "image_id"]).groups.items())
    layouts = [templates.loc[sorted(rows), ["window", "mirrored", "x0", "y0", "x1", "y1"]].reset_index(drop=True) for _, rows in keys]
    parts = []
    for j, layout in enumerate(layouts):
        refs = np.arange(j, n_refs, len(layouts))
        if not len(refs):
            continue
        part = layout.iloc[np.tile(np.arange(len(layout)), len(refs))].reset_index(drop=True)
        part.insert(0, "ref", np.repeat(refs, len(layout)))
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=ENTRY_COLUMNS)
    frame = pd.concat(parts, ignore_index=True).sort_values(["ref", "mirrored", "window"], kind="mergesort").reset_index(drop=True)
    ref = frame.pop("ref").to_numpy()
    ids = np.char.add("syn", np.char.zfill(ref.astype(str), 7))
    frame.insert(0, "customer_id", "synthetic")
    frame.insert(1, "image_id", ids)
    frame.insert(2, "ref_sha256", np.char.add("f" * 57, np.char.zfill(ref.astype(str), 7)))
    frame["phash"] = balanced_hashes(len(frame), rng)
    return frame[ENTRY_COLUMNS]


def status_mb(field_name: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM, RssAnon, ...), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's own peak RSS. Not ``ru_maxrss``: Linux carries that over fork and exec, so a
    child started from a large parent reports the parent's peak; VmHWM starts afresh at exec."""
    return status_mb("VmHWM")


def in_fresh_process(fn: Callable, *args):
    """``fn(*args)`` in a spawned interpreter (not a fork, whose resident pages would be the parent's too)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def _build_in_child(entries_path: str, index_dir: str, shard_size: int) -> dict:
    """Runs in a fresh process so its peak memory is the build's own."""
    from copyhunt.index import build_index

    entries = pd.read_parquet(entries_path)
    cpu0, t0 = time.process_time(), time.perf_counter()
    result = build_index(entries, Path(index_dir), shard_size)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"seconds": wall, "cpu_seconds": cpu, "cores": cpu / wall, "peak_rss_mb": peak_rss_mb(),
            "entries": result.entries, "shards": len(result.shards)}


def benchmark_index_key(real_entries: pd.DataFrame) -> str:
    """What names a benchmark index kept between runs: the real entries, the synthetic ones' recipe
    and the fingerprint version. An old index is never reused by code that hashes another way,
    even when a new version leaves the real references' hashes as they were."""
    from copyhunt.fingerprint import FINGERPRINT_VERSION

    made = f"{SYNTHETIC_VERSION}-fingerprint{FINGERPRINT_VERSION}".encode()
    return hashlib.sha256(np.ascontiguousarray(real_entries["phash"].to_numpy()).tobytes() + made).hexdigest()[:12]


def build_benchmark_index(real_entries: pd.DataFrame, n_refs: int, index_dir: Path, shard_size: int) -> dict:
    n_synthetic = max(0, n_refs - real_entries["image_id"].nunique())
    entries = pd.concat([real_entries, synthetic_entries(n_synthetic, real_entries, SEED + n_refs)], ignore_index=True)
    index_dir.mkdir(parents=True, exist_ok=True)
    path = index_dir.parent / f"{index_dir.name}-entries.parquet"
    entries.to_parquet(path)
    del entries  # the build's process reads them back: this one need not hold them meanwhile
    built = in_fresh_process(_build_in_child, str(path), str(index_dir), shard_size)
    path.unlink()
    return built


def benchmark_match_params(index_dir: Path, real_index: Path, query_blobs: Path, max_image_pixels: int,
                           fingerprints: list[pd.DataFrame]):
    """Matching parameters for a benchmark index: the real references' features copied in, so
    their copies verify, and the synthetic references that ``fingerprints`` reach given some
    (``give_synthetic_features``)."""
    from copyhunt.matching import MatchParams

    for src in (real_index / "features").rglob("*.orb"):
        dst = index_dir / "features" / src.relative_to(real_index / "features")
        if not dst.exists():
            atomic_write_bytes(dst, src.read_bytes())
    params = MatchParams(index_dir=str(index_dir), index_version=None, query_blobs=str(query_blobs), ref_blobs=str(real_index / "blobs"),
                         max_image_pixels=max_image_pixels)
    give_synthetic_features(params, fingerprints)
    return params


def measure_matching(fingerprints: pd.DataFrame, params, blobs) -> dict[str, float]:
    """Search + verify every image of the stream on this process's core; per image figures.

    The stream's images are searched in batches of E2E_BATCH, as a Spark executor does."""
    from copyhunt.matching import _searcher, best_pairs, search_frame, verify_image

    _searcher(params.index_dir, params.index_version, params.search_k)  # open the shards first (mmap)
    images = sorted(fingerprints["image_sha256"].unique())
    warm = fingerprints[fingerprints["image_sha256"].isin(images[:5])]  # first calls load code and pages
    for _, group in search_frame(warm, params).groupby("image_sha256"):
        verify_image(group, params)
    search_seconds = verify_seconds = 0.0
    pairs = 0
    for start in range(0, len(images), E2E_BATCH):
        batch = fingerprints[fingerprints["image_sha256"].isin(set(images[start:start + E2E_BATCH]))]
        t = time.perf_counter()
        candidates = search_frame(batch, params)
        search_seconds += time.perf_counter() - t
        t = time.perf_counter()
        for _, group in candidates.groupby("image_sha256", sort=True):
            verify_image(group, params)
        verify_seconds += time.perf_counter() - t
        if len(candidates):
            pairs += best_pairs(candidates, params.pairs_per_reference).groupby(["image_sha256", "image_id"]).ngroups
    return {
        "images": len(images), "per_second": len(images) / (search_seconds + verify_seconds),
        "search_ms_per_image": 1000 * search_seconds / len(images), "verify_ms_per_image": 1000 * verify_seconds / len(images),
        "candidate_refs_per_image": pairs / len(images),
    }


def give_synthetic_features(params, fingerprints: list[pd.DataFrame]) -> int:
    """Synthetic references that the stream's hashes reach by chance get a real reference's
    features (a hard link), so verifying them costs what verifying an unrelated real reference
    costs. Only those reached need one; the choice is deterministic."""
    from copyhunt.matching import search_frame
    from copyhunt.verify import FeatureStore

    store = FeatureStore(params.features_dir)
    real = sorted(store.root.rglob("*.orb"))
    linked = 0
    for frame in fingerprints:
        for sha in sorted(set(search_frame(frame, params)["ref_sha256"])):
            if real and not store.has(sha):
                target = store.path(sha)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(real[int(sha[-7:], 16) % len(real)], target)
                linked += 1
    return linked


def copies_found(fingerprints: pd.DataFrame, params, truth: dict[str, str | None], sha_to_name: dict[str, str]) -> dict[str, float]:
    """Share of the suite's copies found, and false matches, against a large index."""
    from copyhunt.matching import match_frame

    matches = match_frame(fingerprints, params)
    hits = sum(1 for r in matches.itertuples(index=False) if truth.get(sha_to_name.get(r.image_sha256, "")) == r.image_id)
    false = len(matches) - hits
    copies = sum(1 for sha in fingerprints["image_sha256"].unique() if truth.get(sha_to_name.get(sha, "")))
    return {"copies_found": hits / copies if copies else float("nan"), "false_matches": false}


# ---- 4. end to end -------------------------------------------------------------------------------
E2E_BATCH = 32  # images per search call, like a Spark batch


def _e2e_worker(args: tuple) -> tuple[int, float, float]:
    """Fingerprint, search and verify a share of the stream, in batches as Spark executors do."""
    paths, params = args
    from copyhunt.blobs import sha256_bytes
    from copyhunt.fingerprint import FINGERPRINT_COLUMNS, fingerprint_images
    from copyhunt.imaging import BadImage
    from copyhunt.matching import QueryImage, _searcher, search_frame, verify_query

    _searcher(params.index_dir, params.index_version, params.search_k)
    t, cpu = time.perf_counter(), time.process_time()
    matched = 0
    for start in range(0, len(paths), E2E_BATCH):
        datas = {}
        for p in paths[start:start + E2E_BATCH]:
            data = Path(p).read_bytes()
            datas[sha256_bytes(data)] = data
        rows = [row for found, _ in fingerprint_images(datas.items(), params.max_image_pixels) for row in found]
        candidates = search_frame(pd.DataFrame(rows, columns=FINGERPRINT_COLUMNS), params)
        for sha, group in candidates.groupby("image_sha256", sort=True):
            try:
                matched += len(verify_query(QueryImage(datas[sha], params.max_image_pixels), group, params))
            except BadImage:
                continue
    return matched, time.perf_counter() - t, time.process_time() - cpu


def _write_all(folder: Path, images: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, data in enumerate(images):
        p = folder / f"{i:04d}.jpg"
        if not p.exists() or p.read_bytes() != data:
            atomic_write_bytes(p, data)
        paths.append(p)
    return paths


def measure_end_to_end(paths: list[Path], params, workers: int = 2, warm_paths: list[Path] = ()) -> dict[str, float]:
    """Images per second through ``workers`` processes; ``cpu_per_wall`` says how many cores they
    really got (2.0: both, all the time; less: the machine was shared or a worker waited)."""
    shares = [[str(p) for p in paths[i::workers]] for i in range(workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        # Before the clock starts, every worker opens the index and runs the whole path once on
        # images outside the stream (imports, OpenCV and Annoy set-up): a service keeps running.
        list(pool.map(_warm, [(params, [str(p) for p in warm_paths])] * workers))
        t = time.perf_counter()
        results = list(pool.map(_e2e_worker, [(s, params) for s in shares]))
        wall = time.perf_counter() - t
    cpu = sum(c for _, _, c in results)
    return {"images": len(paths), "workers": workers, "per_second": len(paths) / wall, "matches": sum(m for m, _, _ in results), "seconds": wall,
            "cpu_per_wall": cpu / wall}


def measure_pipeline(settings: Settings, paths: list[Path], params, work: Path, rounds: int = PIPELINE_ROUNDS) -> dict[str, float | str]:
    """The fingerprint stage (process pool, 2 workers) then the Spark match job on ``paths``, as a
    day's run does them. The Spark job also runs on a third of the images: the difference of the
    two match times (the job's own figure, without the JVM's and session's start and stop; best
    of ``rounds``) is its per-image cost; the rest of its wall time is fixed cost."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from copyhunt.blobs import LocalBlobStore
    from copyhunt.sparkjob import run_job
    from copyhunt.standalone import fingerprint_blobs, store_files

    blobs = LocalBlobStore(work / "pipeline-blobs")
    shas = sorted({sha for _, sha in store_files(paths, blobs)})  # the crawl stores the images: not timed
    t, cpu = time.perf_counter(), _children_cpu_seconds()
    fingerprints, unusable = fingerprint_blobs(blobs, shas, settings, lambda items, **_: items, workers=2)
    fingerprint_seconds = time.perf_counter() - t
    # The pool's workers have ended and been reaped: their CPU time is the children's.
    fingerprint_cores = (_children_cpu_seconds() - cpu) / fingerprint_seconds
    third = shas[: len(shas) // 3]
    inputs = {"third": (len(third), fingerprints.filter(pc.is_in(fingerprints["image_sha256"], pa.array(third)))), "all": (len(shas), fingerprints)}
    wall = {name: float("inf") for name in inputs}
    matching = dict(wall)
    for name, (_, table) in inputs.items():
        pq.write_table(table, work / f"pipeline-fingerprints-{name}.parquet")
    for _ in range(rounds):  # the sizes alternate; each one's best round counts
        for name in inputs:
            out, log = work / f"pipeline-matches-{name}.parquet", work / f"pipeline-spark-{name}.log"
            t = time.perf_counter()
            run_job(settings, "match", ["--fingerprints", str(work / f"pipeline-fingerprints-{name}.parquet"), "--index-dir", params.index_dir,
                                     "--query-blobs", str(blobs.root), "--ref-blobs", params.ref_blobs, "--out", str(out)], log)
            wall[name] = min(wall[name], time.perf_counter() - t)
            took = re.search(r"^matched \d+ window hashes in \d+ partitions in ([0-9.]+) s$", log.read_text(), re.M).group(1)
            matching[name] = min(matching[name], float(took))
    matches = pq.read_metadata(work / "pipeline-matches-all.parquet").num_rows
    n, n_third = inputs["all"][0], inputs["third"][0]
    # Too few images (--quick) and the difference is lost in the noise of the fixed cost.
    per_image_spark = (matching["all"] - matching["third"]) / (n - n_third) if matching["all"] > matching["third"] else float("nan")
    return {"images": n, "master": settings.spark_master, "matches": matches, "unusable": len(unusable),
            "fingerprint_seconds": fingerprint_seconds, "fingerprint_cores": fingerprint_cores, "spark_seconds": wall["all"],
            "spark_fixed_seconds": wall["all"] - n * per_image_spark,
            "per_second": n / (fingerprint_seconds + wall["all"]),
            "spark_per_second": 1 / per_image_spark,
            "sustained_per_second": 1 / (fingerprint_seconds / n + per_image_spark)}


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _warm(args: tuple) -> None:
    params, warm_paths = args
    from copyhunt.matching import _searcher

    _searcher(params.index_dir, params.index_version, params.search_k)
    if warm_paths:
        _e2e_worker((warm_paths, params))
    time.sleep(0.2)  # so that both workers get a task


# ---- the whole benchmark -------------------------------------------------------------------------
def run_throughput(settings: Settings, out_dir: Path, assets: Path, quick: bool = False, sizes: tuple[int, ...] | None = None,
                   log=print) -> ThroughputReport:
    """Run the four measurements; ``sizes`` are the index sizes (default 10k and 100k
    references, 1k and 10k with ``quick``)."""
    from copyhunt import standalone
    from copyhunt.bench.suite import build_suite
    from copyhunt.blobs import LocalBlobStore
    from copyhunt.matching import MatchParams

    out_dir = Path(out_dir)
    work = out_dir / "work" / ("throughput-quick" if quick else "throughput")
    work.mkdir(parents=True, exist_ok=True)
    load_before = list(os.getloadavg())

    # 1. fingerprints on 1-MP JPEGs
    n_images = 20 if quick else 60
    mp_files = _write_all(work / "megapixel", megapixel_jpegs(assets, n_images))
    log(f"fingerprinting {len(mp_files)} 1-MP JPEGs against naive pHash (alternating rounds)")
    ours, naive, whole = measure_fingerprints(mp_files, rounds=3 if quick else 5)
    report = ThroughputReport(round(ours, 1), round(naive, 1), round(ours / naive, 2), whole_image_per_second=round(whole, 1))
    with one_core():
        report.fingerprint_stages_ms, windows = fingerprint_stages(mp_files)
    report.fingerprint_windows = round(windows, 1)

    # The stream matched in 2. and 4.: unrelated 1-MP JPEGs, and 10% copies from the suite.
    suite = build_suite(assets, work / "suite", variants=1, distractor_variants=1)
    unrelated = _write_all(work / "unrelated", megapixel_jpegs(assets, 60 if quick else 270, SEED + 1, unrelated_only=True))
    copies = [suite.queries / q.file for q in suite.truth if q.reference_id]
    rng = random.Random(SEED)
    stream = unrelated + rng.sample(copies, min(len(copies), round(COPY_SHARE * len(unrelated) / (1 - COPY_SHARE))))
    rng.shuffle(stream)
    plain = lambda items, **_: items  # noqa: E731
    blobs = LocalBlobStore(work / "query-blobs")
    _, stream_fingerprints, _ = standalone.fingerprint_folder(stream, blobs, settings, plain, workers=2)
    queries = sorted(suite.queries.iterdir())
    if quick:
        queries = queries[:: max(1, len(queries) // 120)]
    names, suite_fingerprints, _ = standalone.fingerprint_folder(queries, blobs, settings, plain, workers=2)
    truth = {q.file: q.reference_id for q in suite.truth}
    sha_to_name = {sha: name for name, sha in names}

    # 2./3. indexes of two sizes around the suite's real references
    real_index = work / "real-index"
    standalone.build_index_from_folder(suite.references, real_index, settings.shard_size, settings, plain)
    from copyhunt.index import current_shards

    real_entries = pd.concat([pd.read_parquet(real_index / "shards" / f"{s}.parquet") for s in current_shards(real_index)]).drop(columns=["annoy_id"])
    sizes = tuple(sizes or ((1_000, 10_000) if quick else (10_000, 100_000)))
    real_key = benchmark_index_key(real_entries)
    size_params = {}
    for n_refs in sizes:
        index_dir = work / f"index-{n_refs}-{real_key}"
        built = {}
        if not (index_dir / "CURRENT").exists():
            log(f"building a {n_refs}-reference index")
            built = build_benchmark_index(real_entries, n_refs, index_dir, settings.shard_size)
        params = benchmark_match_params(index_dir, real_index, blobs.root, settings.max_image_pixels, [stream_fingerprints, suite_fingerprints])
        size_params[n_refs] = params
        figures = copies_found(suite_fingerprints, params, truth, sha_to_name)
        if built:
            figures["index_entries"] = built["entries"]
            figures["index_shards"] = built["shards"]
            figures["index_build_seconds"] = built["seconds"]
            figures["index_build_peak_rss_mb"] = built["peak_rss_mb"]
        report.match[str(n_refs)] = figures
    # Both sizes in alternating rounds, the best round of each counting: the slowdown is a ratio
    # of figures taken under the same load, not of two moments of a shared machine.
    log(f"matching {stream_fingerprints['image_sha256'].nunique()} images ({COPY_SHARE:.0%} copies) against {' and '.join(map(str, sizes))} "
        f"references (one core, {MATCH_ROUNDS} alternating rounds)")
    best: dict[int, dict[str, float]] = {}
    with one_core():
        for _ in range(MATCH_ROUNDS):
            for n_refs in sizes:
                figures = measure_matching(stream_fingerprints, size_params[n_refs], blobs)
                if n_refs not in best or figures["per_second"] > best[n_refs]["per_second"]:
                    best[n_refs] = figures
    for n_refs in sizes:
        report.match[str(n_refs)] = {k: round(float(v), 3) for k, v in {**best[n_refs], **report.match[str(n_refs)]}.items()}
    small, large = (report.match[str(s)] for s in sizes)
    report.slowdown_10k_to_100k = round(small["per_second"] / large["per_second"], 2)
    largest = report.match[str(sizes[-1])]
    if "index_build_seconds" in largest:
        scale = 100_000 / sizes[-1]
        report.index_build = {"references": sizes[-1], "seconds": largest["index_build_seconds"], "peak_rss_mb": largest["index_build_peak_rss_mb"],
                              "seconds_per_100k": round(largest["index_build_seconds"] * scale, 1)}
    feature_files = list((real_index / "features").rglob("*.orb"))
    if feature_files:
        per_ref = statistics.mean(f.stat().st_size for f in feature_files)
        report.notes.append(f"verification features: {per_ref / 1024:.1f} KiB per reference ({per_ref * 100_000 / 2**30:.2f} GiB per 100k references)")

    # 4. end to end on 2 cores
    params = MatchParams(index_dir=str(work / f"index-{sizes[-1]}-{real_key}"), index_version=None, query_blobs=str(blobs.root),
                         ref_blobs=str(real_index / "blobs"), max_image_pixels=settings.max_image_pixels)
    log(f"end to end: {len(stream)} images, 2 worker processes, {sizes[-1]}-reference index")
    report.end_to_end = {k: round(float(v), 2) for k, v in measure_end_to_end(stream, params, workers=2, warm_paths=mp_files[:4]).items()}

    # 5. the production path: fingerprint stage, then the Spark job
    n_pipeline = 200 if quick else PIPELINE_IMAGES
    n_copies = round(COPY_SHARE * n_pipeline)
    pipeline_stream = _write_all(work / "pipeline-unrelated", megapixel_jpegs(assets, n_pipeline - n_copies, SEED + 2, unrelated_only=True))
    pipeline_stream += random.Random(SEED + 2).sample(copies, min(len(copies), n_copies))
    log(f"production path: {len(pipeline_stream)} images through the fingerprint stage and the Spark job ({settings.spark_master})")
    report.pipeline = {k: v if isinstance(v, str) else round(float(v), 2) for k, v in measure_pipeline(settings, pipeline_stream, params, work, 1 if quick else PIPELINE_ROUNDS).items()}
    report.load_average = [round(x, 2) for x in load_before]
    report.notes.append("synthetic references: real references' window layouts with random pHash-shaped hashes; a real collection has more "
                        "near-collisions between unrelated pictures, so more chance candidates to verify")
    atomic_write_bytes(out_dir / "throughput.json", json.dumps(asdict(report), indent=1).encode())
    write_chart(report, out_dir / "throughput.png")
    return report


def write_chart(report: ThroughputReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = (["fingerprints/s\n(1 core)", "naive pHash/s\n(1 core)"] + [f"matched/s\n{int(k) // 1000}k refs" for k in report.match]
              + ["end to end/s\n(2 cores)", "production path/s\nsustained (2 cores)"])
    sustained = report.pipeline.get("sustained_per_second", 0.0)
    values = ([report.fingerprint_per_second, report.naive_per_second] + [v["per_second"] for v in report.match.values()]
              + [report.end_to_end.get("per_second", 0.0), 0.0 if math.isnan(sustained) else sustained])
    colours = ["#2b6cb0", "#c0c0c0"] + ["#2f855a"] * len(report.match) + ["#805ad5", "#805ad5"]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    ax.bar(range(len(values)), values, color=colours)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set_ylabel("images per second")
    ax.set_title(f"copyhunt throughput (load average at start {report.load_average[0] if report.load_average else '?'})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def figures(report: ThroughputReport) -> list:
    """The printed table's rows as figures for docs/performance.md."""
    from copyhunt.bench.docs import Figure

    return [Figure(*row) for row in format_table(report)[1:]]


def format_table(report: ThroughputReport) -> list[list[str]]:
    rows = [["measure", "value", "baseline / comparison", "target"]]
    rows.append(["fingerprints per second, 1 core, 1-MP JPEG", f"{report.fingerprint_per_second:.1f}",
                 f"naive phash {report.naive_per_second:.1f}/s: {report.fingerprint_speedup:.2f}x", ""])
    rows.append(["  one whole-image pHash, our decode path", f"{report.whole_image_per_second:.1f}",
                 f"{report.whole_image_per_second / report.naive_per_second:.2f}x naive: the rest is blob detection, paste proposals "
                 f"and {report.fingerprint_windows:.1f} window hashes per image", ""])
    if report.fingerprint_stages_ms:
        rows.append(["  ms per image by stage", f"{sum(report.fingerprint_stages_ms.values()):.2f}",
                     ", ".join(f"{k} {v:.2f}" for k, v in report.fingerprint_stages_ms.items()), ""])
    for n, m in report.match.items():
        rows.append([f"matched query images/s, 1 core, {int(n):,} refs", f"{m['per_second']:.1f}",
                     f"search {m['search_ms_per_image']:.2f} ms + verify {m['verify_ms_per_image']:.2f} ms per image; "
                     f"{m['candidate_refs_per_image']:.2f} candidate refs/image; suite copies found {m['copies_found']:.3f}, "
                     f"false matches {m['false_matches']:.0f}", ">= 200/s at 100k"])
    rows.append(["slowdown from smallest to largest index", f"{report.slowdown_10k_to_100k:.2f}x", "", "<= 2x"])
    if report.index_build:
        b = report.index_build
        rows.append([f"index build, {b['references']:,} refs", f"{b['seconds']:.1f} s", f"peak RSS {b['peak_rss_mb']:.0f} MB; {b['seconds_per_100k']:.0f} s per 100k refs", ""])
    e = report.end_to_end
    rows.append(["end to end images/s, 2 worker processes", f"{e.get('per_second', 0):.1f}", f"{e.get('images', 0):.0f} images, {COPY_SHARE:.0%} copies, "
                 f"{e.get('matches', 0):.0f} matches; the workers got {e.get('cpu_per_wall', 0):.2f} cores", ">= 116/s"])
    pl = report.pipeline
    if pl:
        separable = not math.isnan(pl["spark_fixed_seconds"])
        fixed = f"{pl['spark_fixed_seconds']:.1f} s of it fixed cost" if separable else "its fixed cost not separable in this run"
        rows.append([f"production path images/s: fingerprint stage + Spark job, {pl['images']:.0f} images", f"{pl['per_second']:.1f}",
                     f"fingerprint stage {pl['fingerprint_seconds']:.1f} s (its workers got {pl.get('fingerprint_cores', 0):.2f} cores), "
                     f"Spark job {pl['spark_seconds']:.1f} s ({pl['master']}; {fixed}); {pl['matches']:.0f} matches", ""])
        if separable:
            rows.append(["  sustained (a day's run: start-up spread over millions)", f"{pl['sustained_per_second']:.1f}",
                         f"Spark job alone {pl['spark_per_second']:.1f} images/s after start-up", ">= 116/s"])
        else:
            rows.append(["  sustained (a day's run: start-up spread over millions)", "n/a",
                         "not measured: the job on a third of the images took as long as on all of them (its start-up "
                         "varies by seconds on a busy host, or --quick gives too few images); run again", ">= 116/s"])
    return rows
