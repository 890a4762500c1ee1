"""The held-out robustness suite: its photo split, its randomly drawn edits, the Wilson interval, the
report's separation of the parts, and precision at scale, on real photos at small sizes."""

import json
import random

import pytest
from PIL import Image

from conftest import IMAGES
from copyhunt.bench import edits, heldout
from copyhunt.bench.photos import PARTS, PHOTOS, SPLIT_FILE, part_by_hash, photos_of, read_split, split_json


def test_recorded_split_follows_the_hash_covers_every_photo_and_is_disjoint():
    split = read_split(IMAGES)
    assert set(split) == {p.name for p in PHOTOS}
    assert all(split[name] == part_by_hash(name) for name in split)
    assert (IMAGES / SPLIT_FILE).read_bytes() == split_json()  # recomputing writes the same file
    names = {part: {p.name for role in ("reference", "distractor") for p in photos_of(IMAGES, part, role)} for part in PARTS}
    assert not names["held-out"] & names["tuning"]
    assert names["held-out"] | names["tuning"] == set(split)
    for part in PARTS:  # each part can measure recall and precision on its own
        assert photos_of(IMAGES, part, "reference") and photos_of(IMAGES, part, "distractor")
    for photo in PHOTOS:
        assert (IMAGES / photo.path).is_file(), photo.path


def test_drawn_parameters_lie_in_their_ranges_and_a_seed_reproduces_them():
    for name in edits.CLASSES:
        draws = [edits.draw(name, random.Random(f"7:{name}:{i}")) for i in range(60)]
        assert draws[:5] == [edits.draw(name, random.Random(f"7:{name}:{i}")) for i in range(5)]
        assert len({json.dumps(d, sort_keys=True) for d in draws}) > 1, name  # drawn, not fixed
        for d in draws:
            if name == edits.CHAIN:
                steps = [s for s, _ in d["steps"]]
                assert len(steps) == 3 and len(set(steps)) == 3
                pairs = [(edits.CHAIN_STEPS[s], q) for s, q in d["steps"]]
            else:
                pairs = [(edits.RANGES[name], d)]
            for ranges, params in pairs:
                assert set(params) == set(ranges)
                for key, value in params.items():
                    assert edits.within(ranges[key], value), (name, key, value)
    assert not edits.within((0.25, 0.90), 0.95) and not edits.within((2, 5), 6) and not edits.within(("left", "right"), "top")
    assert edits.RANGES["rotation"]["degrees"] == (-20.0, 20.0) and edits.RANGES["thumbnail"]["longest_px"][0] == 100
    assert edits.RANGES["embed"]["share"] == (0.15, 0.60)
    grids = [edits.draw("grid", random.Random(i)) for i in range(300)]
    assert {g["cells"] for g in grids} == {2, 3, 4, 5} and {g["cell_fit"] for g in grids} == {"fitted", "contained", "cropped"}
    assert min(g["gutter"] for g in grids) == 0 and max(g["gutter"] for g in grids) == 12
    crops = [edits.draw("crop", random.Random(i))["keep"] for i in range(300)]
    assert 0.25 <= min(crops) < 0.3 and 0.85 < max(crops) <= 0.9


def test_an_edit_shows_what_its_parameters_say():
    from copyhunt.bench.suite import open_upright

    photo = open_upright(IMAGES / "wikimedia-potd/image1.jpg")
    pool = edits.Pool([open_upright(IMAGES / "labelme/q0003.jpg")], ["labelme-q0003"])
    params = {"keep": 0.25, "aspect": 0.0, "x": 1.0, "y": 0.0}
    made, _ = edits.apply("crop", photo, params, pool)
    assert made.image.width * made.image.height == pytest.approx(0.25 * photo.width * photo.height, rel=0.03)
    assert made.ref_box[2] == pytest.approx(1.0, abs=0.01) and made.ref_box[1] == 0.0  # top right corner
    made, _ = edits.apply("thumbnail", photo, {"longest_px": 100}, pool)
    assert max(made.image.size) == 100
    grid = dict(edits.draw("grid", random.Random(3)), cells=5, gutter=12)
    made, used = edits.apply("grid", photo, grid, pool)
    assert used == ["labelme-q0003"] * 24
    assert made.image.width == 5 * grid["cell_px"] + 6 * 12
    again, _ = edits.apply("grid", photo, grid, pool)
    assert again.image.tobytes() == made.image.tobytes()


def test_wilson_interval_on_known_values():
    # Values from Wilson (1927) / Newcombe (1998), table I: 81/263 -> 0.2553-0.3662; 0/10 -> 0-0.2775.
    assert heldout.wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-4)
    assert heldout.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-4)
    assert heldout.wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=5e-4)
    assert heldout.wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-4)


def test_held_out_and_tuning_queries_never_share_a_photo(tmp_path):
    suite = heldout.build_heldout_suite(IMAGES, tmp_path / "suite", seeds=[1, 2], classes=["grid", "embed", "crop"])
    split = read_split(IMAGES)
    assert {q.part for q in suite.truth} == set(PARTS)
    for q in suite.truth:
        assert all(split[name] == q.part for name in q.photos), q
        assert q.reference_id is None or q.reference_id == q.photos[0]
    assert {p.stem for p in suite.references.iterdir()} == {p.name for p in PHOTOS if p.role == "reference"}
    again = heldout.build_heldout_suite(IMAGES, tmp_path / "again", seeds=[1, 2], classes=["grid", "embed", "crop"])
    assert [(q.file, q.params) for q in again.truth] == [(q.file, q.params) for q in suite.truth]
    assert all((again.queries / q.file).read_bytes() == (suite.queries / q.file).read_bytes() for q in suite.truth[:20])

    # The report counts each part's copies from that part's queries only, and a copy matched as
    # another reference is a false match of its own part.
    copy = next(q for q in suite.truth if q.part == "held-out" and q.reference_id)
    other = next(q.reference_id for q in suite.truth if q.part == "tuning" and q.reference_id)
    found = {q.file: {q.reference_id} for q in suite.truth if q.reference_id and q.part == "tuning"}
    found[copy.file] = {copy.reference_id, other}
    distances = {q.file: {} for q in suite.truth}
    report = heldout.make_report(suite, found, distances, [1, 2], IMAGES, {})
    rows = {c.transform: c for c in report.classes}
    assert rows[copy.transform].held_out.found == 1 and rows[copy.transform].tuning.recall == 1.0
    n_held = sum(1 for q in suite.truth if q.part == "held-out" and q.reference_id and q.transform == copy.transform)
    assert rows[copy.transform].held_out.copies == n_held
    assert report.precision["held-out"].false_matches == 1 and report.precision["tuning"].false_matches == 0
    assert {m["part"] for m in report.misses} == {"held-out"} and copy.file not in {m["file"] for m in report.misses}
    assert heldout.format_table(report)[1][0] == "grid" and "held-out" in heldout.format_table(report)[0][1]


def test_a_tuning_only_suite_makes_no_held_out_query_and_indexes_every_reference(tmp_path):
    # What thresholds are chosen on: the tuning part's queries alone, against the same index.
    suite = heldout.build_heldout_suite(IMAGES, tmp_path / "suite", seeds=[1], classes=["crop", "grid"], parts=["tuning"])
    assert suite.truth and {q.part for q in suite.truth} == {"tuning"}
    assert {p.name for p in suite.queries.iterdir()} == {q.file for q in suite.truth}
    assert {p.stem for p in suite.references.iterdir()} == {p.name for p in PHOTOS if p.role == "reference"}
    whole = heldout.build_heldout_suite(IMAGES, tmp_path / "whole", seeds=[1], classes=["crop", "grid"])
    tuning = [(q.file, q.params) for q in whole.truth if q.part == "tuning"]
    assert [(q.file, q.params) for q in suite.truth] == tuning  # the same queries as in the whole suite
    with pytest.raises(ValueError, match="unknown parts"):
        heldout.build_heldout_suite(IMAGES, tmp_path / "bad", seeds=[1], classes=["crop"], parts=["training"])
    rows = heldout.format_table(heldout.make_report(suite, {}, {q.file: {} for q in suite.truth}, [1], IMAGES, {}))
    assert rows[1][1:4] == ["0", "-", "-"] and not any(r[0].startswith("precision, held-out") for r in rows)


def test_small_run_reports_both_parts_and_false_hits_at_scale(tmp_path, settings):
    report = heldout.run_heldout(settings, tmp_path / "bench", IMAGES, seeds=[5], classes=["crop", "letterbox"], scale_refs=200, scale_queries=40)
    assert [c.transform for c in report.classes] == ["crop", "letterbox"]
    for c in report.classes:
        assert c.held_out.copies == len(photos_of(IMAGES, "held-out", "reference"))
        assert c.held_out.low <= c.held_out.recall <= c.held_out.high
    assert report.classes[1].held_out.recall >= 0.5  # a letterboxed photo is the easy case: the engine runs
    assert report.scale["queries"] == 40 and report.scale["references"] == 200
    assert report.scale["low_per_10k"] <= report.scale["false_per_10k"] <= report.scale["high_per_10k"]
    written = json.loads((tmp_path / "bench" / "robustness-held-out.json").read_text())
    assert written["note"] == heldout.THRESHOLD_NOTE and set(written["precision"]) == set(PARTS)
    with Image.open(tmp_path / "bench" / "robustness-held-out.png") as chart:
        assert chart.format == "PNG"
    rows = heldout.figures(report)
    assert rows[0].measure.startswith("held-out recall: crop") and rows[-1].measure.startswith("false hits per 10,000")
