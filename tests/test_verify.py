"""Geometric verification: hash-guided ORB + RANSAC on real photos, and the score."""

import functools

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import CUSTOMER_IMAGES, UNRELATED_IMAGES, jpeg_bytes
from copyhunt.fingerprint import HASH_WORKING_SIZE, ORIENTATIONS, hamming, pair_orientation, query_hashes, reference_hashes, window_orientation
from copyhunt.imaging import load_gray
from copyhunt.verify import (
    QUERY_VERIFY_SIZE,
    VERIFY_WORKING_SIZE,
    Features,
    FeatureStore,
    HashCandidate,
    reference_features,
    similarity_score,
    verify_candidate,
)


jpeg = functools.partial(jpeg_bytes, quality=88)


def ref_features(path):
    return reference_features(load_gray(path.read_bytes(), working_size=VERIFY_WORKING_SIZE)[0])


def query_gray(data):
    return load_gray(data, working_size=QUERY_VERIFY_SIZE)[0]


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def best_candidate(query_data, ref_path):
    """The closest window pair between a found image and a reference, as the index would return it."""
    q = query_hashes(load_gray(query_data, working_size=HASH_WORKING_SIZE)[0])
    r = reference_hashes(load_gray(ref_path.read_bytes(), working_size=HASH_WORKING_SIZE)[0])
    d, a, b = min(((hamming(x.phash, y.phash), x, y) for x in q for y in r), key=lambda t: (t[0], t[1].window, t[2].window, t[2].mirrored))
    return d, HashCandidate((a.x0, a.y0, a.x1, a.y1), (b.x0, b.y0, b.x1, b.y1), *pair_orientation(a.window, b.window, b.mirrored))


def test_features_round_trip_through_bytes_and_store(tmp_path):
    f = ref_features(CUSTOMER_IMAGES[0])
    assert len(f.points) > 100
    back = Features.from_bytes(f.to_bytes())
    assert (back.width, back.height) == (f.width, f.height)
    np.testing.assert_array_equal(back.points, f.points)
    np.testing.assert_array_equal(back.descriptors, f.descriptors)
    store = FeatureStore(tmp_path)
    store.put("ab" * 32, f)
    assert store.has("ab" * 32) and store.get("ab" * 32).to_bytes() == f.to_bytes()
    with pytest.raises(KeyError):
        store.get("cd" * 32)
    with pytest.raises(ValueError):
        Features.from_bytes(b"not features at all")
    # A damaged file is as good as none: the verifier describes the reference again, and the next
    # index build stores it anew.
    for damaged in (f.to_bytes()[:-100], f.to_bytes()[:9], b"XXXX" + f.to_bytes()[4:], f.to_bytes() + b"\0" * 40):
        store.path("ab" * 32).write_bytes(damaged)
        with pytest.raises(KeyError):
            store.get("ab" * 32)
        assert not store.has("ab" * 32)
        store.put("ab" * 32, f)
        assert store.get("ab" * 32).to_bytes() == f.to_bytes()


def test_crop_is_verified_with_the_region_it_kept():
    src = Image.open(CUSTOMER_IMAGES[3]).convert("RGB")
    w, h = src.size
    box = (int(w * 0.25), int(h * 0.1), int(w * 0.95), int(h * 0.8))  # keeps 49% of the area
    data = jpeg(src.crop(box))
    d, cand = best_candidate(data, CUSTOMER_IMAGES[3])
    assert d <= 10
    v = verify_candidate(query_gray(data), ref_features(CUSTOMER_IMAGES[3]), cand)
    assert v.ok and v.inliers >= 30
    assert iou(v.ref_box, (0.25, 0.1, 0.95, 0.8)) > 0.9
    assert v.query_overlap > 0.95 and v.ref_overlap == pytest.approx(0.49, abs=0.05)


@pytest.mark.parametrize("turns,mirrored", [(t, m) for t in range(4) for m in (False, True)])
def test_every_orientation_of_a_copy_verifies(turns, mirrored):
    src = Image.open(CUSTOMER_IMAGES[1]).convert("RGB")
    # An entry (turns, mirrored) is the reference turned clockwise, then mirrored.
    copy = src.rotate(-90 * turns, expand=True)
    if mirrored:
        copy = ImageOps.mirror(copy)
    data = jpeg(copy)
    d, cand = best_candidate(data, CUSTOMER_IMAGES[1])
    assert d <= 4 and (cand.quarter_turns, cand.mirrored) == (turns, mirrored)
    v = verify_candidate(query_gray(data), ref_features(CUSTOMER_IMAGES[1]), cand)
    assert v.ok and v.inliers >= 50
    assert v.query_box == pytest.approx((0, 0, 1, 1), abs=0.03) and v.ref_overlap > 0.9


def test_unrelated_photo_fails_even_when_forced_through_a_candidate():
    for other in UNRELATED_IMAGES[4:7]:
        data = jpeg(Image.open(other))
        for ref in CUSTOMER_IMAGES[:4]:
            _, cand = best_candidate(data, ref)
            v = verify_candidate(query_gray(data), ref_features(ref), cand)
            assert not v.ok, (other.name, ref.name, v)


def test_collage_cell_is_verified_and_located():
    a = Image.open(CUSTOMER_IMAGES[2]).convert("RGB").resize((300, 200))
    collage = Image.new("RGB", (610, 410), "white")
    for i, im in enumerate([Image.open(p).convert("RGB").resize((300, 200)) for p in UNRELATED_IMAGES[:3]] + [a]):
        collage.paste(im, (5 + 305 * (i % 2), 5 + 205 * (i // 2)))
    data = jpeg(collage)
    d, cand = best_candidate(data, CUSTOMER_IMAGES[2])
    assert d <= 8
    v = verify_candidate(query_gray(data), ref_features(CUSTOMER_IMAGES[2]), cand)
    assert v.ok
    assert iou(v.query_box, (310 / 610, 210 / 410, 1.0, 1.0)) > 0.85
    assert v.query_overlap == pytest.approx(0.24, abs=0.04)


def test_pasted_photo_is_verified_and_located():
    background = Image.open(UNRELATED_IMAGES[2]).convert("RGB").resize((640, 640))
    piece = Image.open(CUSTOMER_IMAGES[6]).convert("RGB").resize((256, 144))  # 40% of the width
    background.paste(piece, (300, 410))
    data = jpeg(background)
    d, cand = best_candidate(data, CUSTOMER_IMAGES[6])
    assert d <= 6 and cand.ref_box == (0.0, 0.0, 1.0, 1.0)  # a paste proposal against the whole picture
    v = verify_candidate(query_gray(data), ref_features(CUSTOMER_IMAGES[6]), cand)
    assert v.ok and v.inliers >= 30
    assert iou(v.query_box, (300 / 640, 410 / 640, 556 / 640, 554 / 640)) > 0.9
    assert v.ref_overlap > 0.9 and v.query_overlap == pytest.approx(256 * 144 / 640 ** 2, abs=0.02)


def test_score_is_a_probability_rising_with_evidence():
    scores = [similarity_score(4, n, 0.05) for n in (0, 5, 12, 30, 100, 400)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores) and scores[0] < 0.5 < scores[-1]
    assert similarity_score(2, 40, 0.02) > similarity_score(10, 40, 0.02) > similarity_score(10, 40, 0.2)


def test_orientation_table_matches_window_names():
    names = {suffix for suffix, _, _ in ORIENTATIONS}
    assert names == {"", "-rot90", "-rot180", "-rot270"}
    assert [window_orientation("full" + s) for s in ("", "-rot90", "-rot180", "-rot270")] == [(0, False), (1, False), (2, False), (3, False)]
    assert window_orientation("blob03") == (0, False) and window_orientation("blob-p0-03-rot270-mirror") == (3, True)
    assert window_orientation("grid3x3-12") == (0, False)
    # A whole picture is hashed upright in the found image: the reference entry's orientation is the copy's.
    assert pair_orientation("full", "full-rot90", True) == (True, 1)
    # Two blob windows hashed in the same orientation: the copy is upright.
    assert pair_orientation("blob03-rot90-mirror", "blob07-rot90", True) == (False, 0)
    # The copy's window needed one clockwise turn less than the reference's: the copy is turned once.
    assert pair_orientation("blob03", "blob07-rot90", False) == (False, 1)


@pytest.mark.parametrize("turns,mirrored", [(t, m) for t in range(4) for m in (False, True)])
def test_a_turned_and_mirrored_crop_pairs_blob_windows_and_verifies(turns, mirrored):
    # Blob windows are hashed in a canonical orientation on both sides: a crop of the picture
    # turned and mirrored pairs with the reference's windows, and the pair says how it was turned.
    src = Image.open(CUSTOMER_IMAGES[4]).convert("RGB")
    w, h = src.size
    copy = src.crop((int(w * 0.05), int(h * 0.2), int(w * 0.8), int(h * 0.95))).rotate(-90 * turns, expand=True)
    if mirrored:
        copy = ImageOps.mirror(copy)
    data = jpeg(copy)
    q = [x for x in query_hashes(load_gray(data, working_size=HASH_WORKING_SIZE)[0]) if x.window.startswith("blob")]
    r = [x for x in reference_hashes(load_gray(CUSTOMER_IMAGES[4].read_bytes(), working_size=HASH_WORKING_SIZE)[0]) if x.window.startswith("blob")]
    d, a, b = min(((hamming(x.phash, y.phash), x, y) for x in q for y in r), key=lambda t: (t[0], t[1].window, t[2].window))
    assert d <= 8
    assert pair_orientation(a.window, b.window, b.mirrored) == (mirrored, turns)
    v = verify_candidate(query_gray(data), ref_features(CUSTOMER_IMAGES[4]), HashCandidate((a.x0, a.y0, a.x1, a.y1), (b.x0, b.y0, b.x1, b.y1), mirrored, turns))
    assert v.ok and v.inliers >= 30
