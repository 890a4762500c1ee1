"""Pasted-picture proposals (copyhunt.proposals) on real photos pasted into real photos."""

import io

import numpy as np
import pytest
from PIL import Image

from conftest import CUSTOMER_IMAGES, UNRELATED_IMAGES
from copyhunt.fingerprint import (HASH_WORKING_SIZE, MIN_WINDOW_PX, PHasher, Window, hamming, paste_blob_hashes_upsampled, paste_windows,
                                  query_hashes, reference_hashes)
from copyhunt.imaging import load_gray
from copyhunt.proposals import paste_boxes


def jpeg(im, quality=90):
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def pasted(picture, background, fraction, at):
    """``picture`` scaled to ``fraction`` of a 640 px wide ``background``, its top-left corner at
    ``at`` (relative to the free room); the JPEG and the pasted box in relative coordinates."""
    canvas = Image.open(background).convert("RGB")
    canvas = canvas.resize((640, max(240, round(canvas.height * 640 / canvas.width))), Image.Resampling.BICUBIC)
    piece = Image.open(picture).convert("RGB")
    pw = round(640 * fraction)
    ph = round(piece.height * pw / piece.width)
    if ph > 0.9 * canvas.height:
        ph = round(canvas.height * fraction)
        pw = round(piece.width * ph / piece.height)
    piece = piece.resize((pw, ph), Image.Resampling.LANCZOS)
    x, y = round(at[0] * (canvas.width - pw)), round(at[1] * (canvas.height - ph))
    canvas.paste(piece, (x, y))
    return jpeg(canvas), (x / canvas.width, y / canvas.height, (x + pw) / canvas.width, (y + ph) / canvas.height)


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# Every customer photo, each on a different unrelated photo, at different places and sizes.
CASES = [(CUSTOMER_IMAGES[i], UNRELATED_IMAGES[i % len(UNRELATED_IMAGES)], (0.3, 0.4, 0.5)[i % 3], ((i * 0.37) % 1, (i * 0.61) % 1))
         for i in range(len(CUSTOMER_IMAGES))]


def test_pasted_photos_are_proposed_to_the_pixel():
    found = []
    for picture, background, fraction, at in CASES:
        data, truth = pasted(picture, background, fraction, at)
        gray, _ = load_gray(data, working_size=HASH_WORKING_SIZE)
        h, w = gray.shape
        boxes = paste_boxes(gray, 3, MIN_WINDOW_PX)
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert x1 - x0 >= MIN_WINDOW_PX and y1 - y0 >= MIN_WINDOW_PX
        best = max((iou(truth, (x0 / w, y0 / h, x1 / w, y1 / h)) for x0, y0, x1, y1 in boxes), default=0.0)
        found.append(best > 0.95)  # a pixel or two off on a ~100 px side
    # Busy rectilinear backgrounds (facades, shelves) can hide one; most must be found.
    assert sum(found) >= 0.8 * len(found), found


def test_a_proposal_hashes_like_the_whole_reference():
    picture, background, fraction, at = CASES[3]
    data, _ = pasted(picture, background, fraction, at)
    found = query_hashes(load_gray(data, working_size=HASH_WORKING_SIZE)[0])
    whole = next(r for r in reference_hashes(load_gray(picture.read_bytes(), working_size=HASH_WORKING_SIZE)[0]) if r.window == "full" and not r.mirrored)
    distances = {q.window: hamming(q.phash, whole.phash) for q in found}
    best = min(distances, key=distances.get)
    assert best.startswith("paste") and distances[best] <= 6, distances
    # Without the proposals, nothing of the found image is near the whole picture.
    assert min(d for name, d in distances.items() if not name.startswith("paste")) > 10


def test_proposals_are_deterministic_and_bounded():
    data, _ = pasted(CUSTOMER_IMAGES[0], UNRELATED_IMAGES[1], 0.4, (0.5, 0.5))
    gray, _ = load_gray(data, working_size=HASH_WORKING_SIZE)
    assert paste_boxes(gray, 3, MIN_WINDOW_PX) == paste_boxes(gray.copy(), 3, MIN_WINDOW_PX)
    assert len(paste_boxes(gray, 1, MIN_WINDOW_PX)) <= 1 + 4  # one rectangle and its four alternatives
    assert [w.name for w in paste_windows(gray)][:1] == ["paste0"]


def test_blob_windows_inside_a_rectangle_a_few_pixels_off_find_the_picture():
    """A rectangle 3-5% inside the pasted picture hashes 6-12 bits from the whole picture; the
    blob windows found inside it (enlarged to the working size) still hash like the reference's
    blob windows, which the found image's own strongest blobs (the background's) mostly do not."""
    inside, background_only = 0, 0
    for picture, background, fraction, at in CASES:
        data, truth = pasted(picture, background, fraction, at)
        gray = load_gray(data, working_size=HASH_WORKING_SIZE)[0]
        refs = [r.phash for r in reference_hashes(load_gray(picture.read_bytes(), working_size=HASH_WORKING_SIZE)[0])
                if r.window.startswith("blob")]
        tw, th = truth[2] - truth[0], truth[3] - truth[1]
        off = Window("paste0", truth[0] + 0.05 * tw, truth[1] + 0.05 * th, truth[2] - 0.03 * tw, truth[3] - 0.04 * th)
        found = paste_blob_hashes_upsampled(gray, [off], PHasher())
        assert found and all(q.window.startswith("blob-u0-") for q in found)  # "blob": paired with reference blob windows
        for q in found:  # in the found image's coordinates, inside the rectangle grown by its margin
            assert off.x0 - 0.1 * tw <= q.x0 < q.x1 <= off.x1 + 0.1 * tw and off.y0 - 0.1 * th <= q.y0 < q.y1 <= off.y1 + 0.1 * th
        inside += min(hamming(q.phash, r) for q in found for r in refs) <= 6
        own = [q for q in query_hashes(gray) if q.window[4:5].isdigit()]  # blob00..blob15 of the whole found image
        background_only += min(hamming(q.phash, r) for q in own for r in refs) <= 6
    assert inside >= 0.8 * len(CASES), inside
    assert background_only <= 0.3 * len(CASES), background_only


def test_found_image_with_a_proposal_has_paste_blob_windows():
    picture, background, fraction, at = CASES[3]
    data, _ = pasted(picture, background, fraction, at)
    names = [q.window for q in query_hashes(load_gray(data, working_size=HASH_WORKING_SIZE)[0])]
    assert "paste0" in names
    assert any(n.startswith("blob-p0-") for n in names) and any(n.startswith("blob-u0-") for n in names)
    # No proposal, no search inside one.
    rng = np.random.default_rng(0)
    noise = np.clip(128 + 20 * rng.standard_normal((240, 320)), 0, 255).astype(np.uint8)
    assert paste_windows(noise) == []
    assert not any(q.window.startswith(("blob-p", "blob-u")) for q in query_hashes(noise))


@pytest.mark.parametrize("shape", [(20, 30), (47, 300), (300, 47)])
def test_too_small_images_have_no_proposals(shape):
    rng = np.random.default_rng(0)
    assert paste_boxes(rng.integers(0, 255, shape, dtype=np.uint8), 3, MIN_WINDOW_PX) == []


def test_flat_image_has_no_proposals():
    assert paste_boxes(np.full((200, 300), 128, np.uint8), 3, MIN_WINDOW_PX) == []
    assert paste_boxes(np.full((200, 300), 128, np.uint8), 0, MIN_WINDOW_PX) == []


def test_a_picture_with_clear_short_sides_is_proposed_under_the_image_size_bound(monkeypatch):
    # image10 pasted low on q0122: its sides step clearly along their length, but it scores under
    # MIN_SCORE x the image's width + height; it is proposed for its evidence per own side length.
    from copyhunt import proposals

    picture = next(p for p in CUSTOMER_IMAGES if p.name == "image10.jpg")
    background = next(p for p in UNRELATED_IMAGES if p.name == "q0122.jpg")
    data, truth = pasted(picture, background, 0.4, (0.05, 0.9))
    gray, _ = load_gray(data, working_size=HASH_WORKING_SIZE)
    h, w = gray.shape

    def best():
        return max((iou(truth, (x0 / w, y0 / h, x1 / w, y1 / h)) for x0, y0, x1, y1 in paste_boxes(gray, 3, MIN_WINDOW_PX)), default=0.0)

    assert best() > 0.95
    monkeypatch.setattr(proposals, "DENSE_EVIDENCE", 1e9)  # the image-size bound alone
    assert best() < 0.5


# ---- the corner kernels against plain numpy ------------------------------------------------------
def thumbnails():
    """Half-size working images of real photos, of a pasted picture, and small and tiny images
    (arms longer than the image), with and without many exact ties."""
    from copyhunt.imaging import half_size

    grays = [load_gray(path.read_bytes(), 64_000_000, HASH_WORKING_SIZE)[0] for path in (*CUSTOMER_IMAGES[:3], *UNRELATED_IMAGES[:3])]
    grays.append(load_gray(pasted(CUSTOMER_IMAGES[0], UNRELATED_IMAGES[0], 0.4, (0.3, 0.6))[0], 64_000_000, HASH_WORKING_SIZE)[0])
    rng = np.random.default_rng(7)
    grays += [(rng.integers(0, 3, (h, w)) * 100).astype(np.uint8) for h, w in ((70, 90), (20, 30), (9, 40), (4, 5))]
    return [half_size(gray) for gray in grays]


def corner_inputs():
    """Step sums and corner responses of the ``thumbnails``."""
    from copyhunt.kernels.proposals import CORNER_ARM, LONGEST_ARM_WEIGHT, OUTSIDE_WEIGHT, STEP_CAP, _corner_responses, _step_sums

    for thumb in thumbnails():
        vsum, hsum = _step_sums(thumb, int(STEP_CAP))
        yield vsum, hsum, _corner_responses(vsum, hsum, CORNER_ARM // 2, LONGEST_ARM_WEIGHT, OUTSIDE_WEIGHT)


def test_step_sums_are_numpys_cumulative_sums_to_the_bit():
    # The kernel writes the step sums and zeroes only the borders no sum reaches (its arrays are
    # not cleared first): every cell must be the capped steps' cumulative sum, scaled in float32,
    # whatever the memory held before.
    from copyhunt.kernels.proposals import STEP_CAP, _step_sums

    for thumb in thumbnails():
        h, w = thumb.shape
        np.full((2, h + 1, w + 1), np.nan, np.float32)  # freed memory full of NaN, for the kernel's arrays
        vsum, hsum = _step_sums(thumb, int(STEP_CAP))
        pixels = thumb.astype(np.int32)
        across_columns = np.minimum(np.abs(np.diff(pixels, axis=1)), int(STEP_CAP))  # (h, w - 1)
        across_rows = np.minimum(np.abs(np.diff(pixels, axis=0)), int(STEP_CAP))  # (h - 1, w)
        want_v = np.zeros((h + 1, w + 1), np.float32)
        want_v[1:, 1:w] = np.cumsum(across_columns, axis=0).astype(np.float32) * np.float32(1 / STEP_CAP)
        want_h = np.zeros((h + 1, w + 1), np.float32)
        want_h[1:h, 1:] = np.cumsum(across_rows, axis=1).astype(np.float32) * np.float32(1 / STEP_CAP)
        assert np.array_equal(vsum, want_v), thumb.shape
        assert np.array_equal(hsum, want_h), thumb.shape


def numpy_corner_responses(vsum, hsum, arm, longest_weight, outside_weight):
    """The responses as whole-array numpy arithmetic: every arm's mean step, then the four kinds."""
    h, w = vsum.shape[0] - 1, vsum.shape[1] - 1

    def arms(k):  # down, up, right, left; 0 where the arm would leave the image
        out = np.zeros((4, h + 1, w + 1), np.float32)
        inverse = np.float32(1.0 / k)
        if k <= h:
            out[0, :h + 1 - k] = (vsum[k:] - vsum[:h + 1 - k]) * inverse
            out[1, k:] = out[0, :h + 1 - k]
        if k <= w:
            out[2, :, :w + 1 - k] = (hsum[:, k:] - hsum[:, :w + 1 - k]) * inverse
            out[3, :, k:] = out[2, :, :w + 1 - k]
        return out

    base, twice, longest = arms(arm), arms(2 * arm), arms(4 * arm)
    out = np.zeros((4, h + 1, w + 1), np.float32)
    for kind, (vertical, horizontal) in enumerate(((0, 2), (0, 3), (1, 2), (1, 3))):
        response = np.minimum(base[vertical], base[horizontal])
        response += np.minimum(twice[vertical], twice[horizontal])
        response += np.float32(longest_weight) * np.minimum(longest[vertical], longest[horizontal])
        response -= np.float32(outside_weight) * np.maximum(base[1 - vertical], base[5 - horizontal])
        out[kind, 1:h, 1:w] = response[1:h, 1:w]
    return out


def test_corner_responses_are_numpys_to_the_bit():
    from copyhunt.kernels.proposals import CORNER_ARM, LONGEST_ARM_WEIGHT, OUTSIDE_WEIGHT

    for vsum, hsum, responses in corner_inputs():
        expected = numpy_corner_responses(vsum, hsum, CORNER_ARM // 2, LONGEST_ARM_WEIGHT, OUTSIDE_WEIGHT)
        assert np.array_equal(responses, expected), vsum.shape


def test_strongest_corners_are_the_strongest_5x5_maxima_ties_in_scan_order():
    from copyhunt.kernels.proposals import CORNERS_PER_KIND, MIN_SIDE, _strongest_corners

    checked = 0
    for _, _, responses in corner_inputs():
        for stack in (responses, np.round(responses * 4) / 4):  # and with many exact ties
            stack = np.ascontiguousarray(stack, np.float32)
            xs, ys, counts = _strongest_corners(stack)
            for kind, response in enumerate(stack):
                h, w = response.shape
                padded = np.pad(response, 2, constant_values=-np.inf)
                most = np.max([padded[dy:dy + h, dx:dx + w] for dy in range(5) for dx in range(5)], axis=0)
                y, x = np.nonzero((response > MIN_SIDE) & (response >= most))
                best = np.lexsort((x, y, -response[y, x]))[:CORNERS_PER_KIND]  # strongest, then (y, x)
                assert counts[kind] == len(best)
                assert ys[kind, :len(best)].tolist() == y[best].tolist() and xs[kind, :len(best)].tolist() == x[best].tolist()
                checked += len(best)
    assert checked > 300  # the photos have corners to choose from


def test_rectangles_are_dropped_before_scoring_exactly_by_the_side_rules_and_never_above_the_floor():
    # _score drops most of a photo's ~1,700 rectangles on cheap tests first: at least three sides
    # inside the image with at most one faint, or two clear ones meeting at a corner (here in
    # plain Python: with no floor, a box scores -1 exactly when they fail); then bounds on the
    # score against ``floor``, which may drop only boxes that cannot reach it (each box scoring
    # S > 0 must still score S with the floor at S).
    from copyhunt.imaging import half_size
    from copyhunt.kernels.proposals import MAX_FAINT_SIDES, MIN_SIDE, STEP_CAP, _corners, _rectangles, _score, _step_sums

    dropped = kept = 0
    photos = [load_gray(path.read_bytes(), 64_000_000, HASH_WORKING_SIZE)[0] for path in (*CUSTOMER_IMAGES[:3], *UNRELATED_IMAGES[:3])]
    photos.append(load_gray(pasted(CUSTOMER_IMAGES[0], UNRELATED_IMAGES[0], 0.4, (0.3, 0.6))[0], 64_000_000, HASH_WORKING_SIZE)[0])
    for gray in photos:
        h, w = gray.shape
        vsum, hsum = _step_sums(gray, int(STEP_CAP))
        boxes = np.ascontiguousarray(_rectangles(vsum, hsum, *_corners(half_size(gray), vsum, hsum), MIN_WINDOW_PX))
        scores = _score(vsum, hsum, *boxes, -np.inf)
        for i, (x0, y0, x1, y1) in enumerate(boxes.T.tolist()):
            means = [float(vsum[y1, x0] - vsum[y0, x0]) / (y1 - y0), float(vsum[y1, x1] - vsum[y0, x1]) / (y1 - y0),
                     float(hsum[y0, x1] - hsum[y0, x0]) / (x1 - x0), float(hsum[y1, x1] - hsum[y1, x0]) / (x1 - x0)]
            inside = [x0 > 0, x1 < w, y0 > 0, y1 < h]
            faint = sum(1 for m, it in zip(means, inside) if it and m < MIN_SIDE)
            corner = sum(inside) == 2 and (inside[0] or inside[1]) and (inside[2] or inside[3]) and faint == 0
            passes = (sum(inside) >= 3 and faint <= MAX_FAINT_SIDES) or corner
            assert (scores[i] == -1) == (not passes), (x0, y0, x1, y1)
            dropped += not passes
            if scores[i] > 0:
                box = [np.array([v]) for v in (x0, y0, x1, y1)]
                assert _score(vsum, hsum, *box, scores[i])[0] == scores[i], (x0, y0, x1, y1)
                kept += 1
    assert dropped > 1000 and kept > 50  # both paths taken
