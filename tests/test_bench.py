"""Benchmarks: the robustness suite as a small regression test with thresholds, and the bench
commands' plumbing on a small run (the full benchmarks print figures; they are not timed tests)."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from conftest import IMAGES, REPO
from copyhunt.bench import robustness
from copyhunt.bench.suite import REFERENCES, TRANSFORMS, build_suite

# Classes where the engine must keep finding every copy, and the pasted-picture class, found by
# rectangle proposals: 9 of its 11 copies at this seed (two are pasted on a facade whose windows
# make better rectangles); below 7 the proposals have regressed.
REGRESSION_CLASSES = ["crop 50%", "collage 3x3", "horizontal flip", "rotation 5°", "scale 0.25", "real: rotations and flips"]
PASTE_MIN_RECALL = 0.6


def test_suite_is_deterministic_and_labelled(tmp_path):
    a = build_suite(IMAGES, tmp_path / "a", seed=5, variants=1, distractor_variants=1, classes=["crop 50%", "pasted at 40%", "real: human edits"])
    b = build_suite(IMAGES, tmp_path / "b", seed=5, variants=1, distractor_variants=1, classes=["crop 50%", "pasted at 40%", "real: human edits"])
    assert [q.file for q in a.truth] == [q.file for q in b.truth]
    for q in a.truth:
        assert (a.queries / q.file).read_bytes() == (b.queries / q.file).read_bytes()
    copies = [q for q in a.truth if q.reference_id]
    assert {q.reference_id for q in copies} == set(REFERENCES)
    paste = next(q for q in copies if q.transform == "pasted at 40%")
    with Image.open(a.queries / paste.file) as im:  # the recorded box is where the copy is
        assert paste.query_box[2] - paste.query_box[0] == pytest.approx(0.4, abs=0.01) or paste.query_box[3] - paste.query_box[1] == pytest.approx(0.4, abs=0.01)
        assert im.width == 640
    crop = next(q for q in copies if q.transform == "crop 50%")
    assert (crop.ref_box[2] - crop.ref_box[0]) * (crop.ref_box[3] - crop.ref_box[1]) == pytest.approx(0.5, abs=0.02)
    assert len([q for q in a.truth if q.transform == "real: human edits"]) == 11
    assert set(TRANSFORMS) >= {"scale 0.25", "collage 2x2", "pasted at 40%"}


def test_robustness_regression(tmp_path, settings):
    suite = build_suite(IMAGES, tmp_path / "suite", seed=11, variants=1, distractor_variants=1, classes=REGRESSION_CLASSES + ["pasted at 40%"])
    matches, _, info = robustness.run_engine(suite, tmp_path, settings, workers=2)
    found = {}
    for r in matches.itertuples(index=False):
        found.setdefault(r.query, set()).add(r.image_id)
    recall, precision, false_matches, examples, copies = robustness._score(suite.truth, found)
    assert false_matches == 0, examples
    for transform in REGRESSION_CLASSES:
        assert recall[transform] >= 0.9, (transform, recall[transform])
    assert recall["pasted at 40%"] >= PASTE_MIN_RECALL, recall["pasted at 40%"]
    assert info["index"]["errors"] == 0


def test_calibration_fit_is_finite_and_ordered():
    import pandas as pd

    evidence = pd.DataFrame({
        "copy": [True] * 6 + [False] * 6,
        "inliers": [300, 120, 60, 40, 25, 15, 0, 3, 8, 20, 12, 0],
        "distance": [0, 2, 4, 6, 8, 10, 10, 10, 8, 10, 6, 12],
        "prediction_error": [0.01, 0.02, 0.05, 0.04, 0.1, 0.08, 1.0, 0.9, 0.6, 0.7, 0.8, 1.0],
    })
    constants = robustness.fit_calibration(evidence)
    assert constants["SCORE_LOG_SUPPORT"] > 0 and constants["SCORE_DISTANCE"] < 0
    p = robustness.logistic(constants, evidence)
    assert p[:6].min() > p[6:].max()


def test_bench_commands_run_quick(tmp_path):
    # Nothing of this environment but the Spark JVM's options (tests/conftest.py says why).
    env = {"COPYHUNT_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "SPARK_SUBMIT_OPTS": os.environ.get("SPARK_SUBMIT_OPTS", "")}
    proc = subprocess.run([sys.executable, "-m", "copyhunt.cli", "bench", "throughput", "--quick", "--sizes", "300,1200"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((tmp_path / "data" / "bench" / "throughput.json").read_text())
    assert figures["fingerprint_per_second"] > 0 and figures["naive_per_second"] > 0
    assert set(figures["match"]) == {"300", "1200"} and figures["match"]["1200"]["copies_found"] > 0.5
    assert figures["end_to_end"]["per_second"] > 0 and figures["end_to_end"]["matches"] > 0
    # The production path ran the real Spark job: the stream's copies were found through it.
    assert figures["pipeline"]["images"] == 200 and figures["pipeline"]["matches"] >= 10 and figures["pipeline"]["per_second"] > 0
    # The fingerprint workers' CPU time was counted (two workers cannot get more than two cores).
    assert 0 < figures["pipeline"]["fingerprint_cores"] <= 2.05
    assert (tmp_path / "data" / "bench" / "throughput.png").read_bytes().startswith(b"\x89PNG")
    assert "matched query images/s" in proc.stdout


def test_throughput_table_says_when_the_spark_fixed_cost_is_not_separable():
    from copyhunt.bench.throughput import ThroughputReport, format_table

    report = ThroughputReport(300.0, 150.0, 2.0)
    report.pipeline = {"images": 2917, "master": "local[*]", "matches": 217, "unusable": 0, "fingerprint_seconds": 4.9,
                       "fingerprint_cores": 1.9, "spark_seconds": 22.8, "spark_fixed_seconds": float("nan"), "per_second": 105.3,
                       "spark_per_second": float("nan"), "sustained_per_second": float("nan")}
    rows = {row[0].strip(): row for row in format_table(report)}
    sustained = rows["sustained (a day's run: start-up spread over millions)"]
    assert sustained[1] == "n/a" and "not measured" in sustained[2]
    production = rows["production path images/s: fingerprint stage + Spark job, 2917 images"]
    assert "not separable" in production[2] and not any("nan" in cell for cell in production + sustained)
    report.pipeline.update(spark_fixed_seconds=17.0, spark_per_second=884.9, sustained_per_second=381.9)
    rows = {row[0].strip(): row for row in format_table(report)}
    assert rows["sustained (a day's run: start-up spread over millions)"][1] == "381.9"


def test_a_kept_benchmark_index_is_not_reused_by_another_fingerprint_version(monkeypatch):
    # Version 5 left the suite references' hashes as they were; the throughput bench then
    # reused its version-4 index and matching refused it. The key must name the version.
    import pandas as pd

    from copyhunt import fingerprint
    from copyhunt.bench.throughput import benchmark_index_key

    entries = pd.DataFrame({"phash": [1, -2, 3]})
    key = benchmark_index_key(entries)
    assert benchmark_index_key(entries.copy()) == key
    assert benchmark_index_key(pd.DataFrame({"phash": [1, -2, 4]})) != key
    monkeypatch.setattr(fingerprint, "FINGERPRINT_VERSION", fingerprint.FINGERPRINT_VERSION + 1)
    assert benchmark_index_key(entries) != key


def test_sameday_bench_indexes_the_upload_alone_and_publishes_the_same_entries_as_a_rebuild(tmp_path):
    from copyhunt.bench import sameday
    from copyhunt.config import load_settings
    from copyhunt.index import current_version
    from copyhunt.lake import Lake

    report = sameday.run_sameday(load_settings(env={}), tmp_path / "work", IMAGES, references=4)
    assert report.incremental_fingerprinted == 1 and report.incremental_built_shards == 1
    assert report.upload_to_searchable_seconds > 0 and report.full_rebuild_seconds > 0
    # The incremental index and the rebuilt one hold the same references (the rebuild in one shard).
    incremental, rebuilt = (Lake(tmp_path / "work" / lake).read_frame("index_versions", sameday.RUN_DATE_ISO) for lake in ("lake", "rebuild-lake"))
    assert incremental["entries"].iloc[0] == rebuilt["entries"].iloc[0] > 0
    assert current_version(tmp_path / "work" / "lake" / "index") == incremental["version"].iloc[0]
    assert [f.measure.split(",")[0] for f in sameday.figures(report)] == [
        "upload to searchable: upload + incremental customer_index", "incremental customer_index after one upload",
        "customer_index with nothing new (the hourly no-op)"]


def test_scale_bench_measures_each_size_in_fresh_processes_and_recall_holds_as_the_index_grows(tmp_path, settings):
    from copyhunt.bench import scale

    report = scale.run_scale(settings, tmp_path, REPO / "assets" / "images", (400, 200), stream_images=20, log=lambda m: None,
                             suite_classes=["crop 50%", "horizontal flip"])
    small, large = report.points
    assert (small.refs, large.refs) == (200, 400) and not report.skipped
    # Every reference has its windows in the index, and the build and the worker ran in processes of their own.
    assert large.entries > small.entries > 200 and large.build_seconds > 0 and 0 < large.build_cores <= 2.05
    assert large.worker_peak_rss_mb >= large.worker_open_rss_mb > 50 and large.worker_anon_rss_mb > 0 and large.shard_bytes_per_ref > 0 and large.feature_bytes_per_ref > 1000
    # The suite's copies are found as well among more synthetic references, and nothing else is.
    assert small.copies_found == large.copies_found >= 0.9 and small.false_matches == large.false_matches == 0
    assert report.projection["refs"] == 10_000_000 and report.projection["build_seconds"] >= large.build_seconds
    listed = json.loads(json.dumps(scale.json_list(report)))
    assert [p["refs"] for p in listed] == [200, 400]
    assert {"refs", "build_seconds", "build_peak_rss_mb", "worker_peak_rss_mb", "matched_per_s_per_core"} <= set(listed[0])
    # A second run reuses the indexes it built and keeps their build figures.
    again = scale.run_scale(settings, tmp_path, REPO / "assets" / "images", (200,), stream_images=20, log=lambda m: None,
                            suite_classes=["crop 50%", "horizontal flip"])
    assert again.points[0].build_seconds == small.build_seconds


def test_scale_bench_skips_a_size_whose_build_would_not_fit_in_memory():
    from copyhunt.bench.scale import ScalePoint, line_through, too_big_to_build

    def point(refs: int, rss: float) -> ScalePoint:
        return ScalePoint(refs, refs * 40, 1, 1.0, 1.0, 1.0, rss, 100.0, 1000.0, 300.0, 400.0, 300.0, 100.0, 200.0, 0.2, 1.0, 0)

    assert line_through([(100, 10.0), (300, 30.0)], 1000) == 100.0
    assert line_through([(100, 10.0)], 1000) == 100.0
    assert line_through([(100, 20.0), (300, 10.0)], 1000) == 10.0  # noise never projects a shrinking figure
    # Nor does rounding: a sub-second build measured faster at the larger size projects no lower than it.
    from copyhunt.bench.scale import project

    fast = [point(200, 350.0), point(400, 352.0)]
    fast[0].build_seconds, fast[1].build_seconds = 0.5, 0.4
    assert project(fast, 10_000_000)[0]["build_seconds"] >= 0.4
    measured = [point(100_000, 3_600.0), point(300_000, 10_000.0)]
    assert too_big_to_build([], 1_000_000, 1.0) is None  # nothing measured yet: nothing to go by
    assert too_big_to_build(measured, 1_000_000, 64_000.0) is None
    why = too_big_to_build(measured, 1_000_000, 24_000.0)
    assert why and "31.6 GiB" in why and "23.4 GiB available" in why
