"""Fingerprints and the Annoy shard index, checked against a brute-force oracle."""

import io
import random

import imagehash
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from conftest import CUSTOMER_IMAGES, UNRELATED_IMAGES
from conftest import jpeg_bytes as encode
from copyhunt.fingerprint import (
    HASH_WORKING_SIZE,
    PHasher,
    bits_to_int64,
    blob_windows,
    collage_cells,
    image_tilt,
    pair_orientation,
    plain_background_quad,
    rectified,
    tilt_view,
    fingerprint_image,
    hamming,
    int64_to_bits,
    query_hashes,
    reference_hashes,
    round4,
)
from copyhunt.imaging import load_gray
from copyhunt.index import ENTRY_COLUMNS, ShardSearcher, build_index, current_shards


def norm(im):
    return load_gray(encode(im), working_size=HASH_WORKING_SIZE)[0]


def best_distance(query_img, ref_img):
    q, r = query_hashes(query_img), reference_hashes(ref_img)
    return min((hamming(a.phash, b.phash) for a in q for b in r), default=64)  # no windows: like nothing


def test_window_coordinates_round_as_python_does():
    """Stored coordinates are the floats round(v, 4) gives, halves included (0.00035 is a little
    under a half in binary, so Python rounds it to 0.0003 where scale-rint-unscale gives 0.0004)."""
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.random(5000), rng.random(500) * 3 - 1, (rng.integers(0, 20000, 5000) + 0.5) / 1e4, [0.0, -0.0, 1.0, 0.00035]])
    rounded = round4(values)
    assert rounded.tolist() == [round(float(v), 4) for v in values]
    assert (rounded != np.rint(values * 1e4) / 1e4).any()  # the halves are the hard part


def test_bits_round_trip():
    rng = random.Random(1)
    for _ in range(100):
        v = rng.getrandbits(64) - (1 << 63)
        assert bits_to_int64(int64_to_bits(v)) == v


def test_median_by_selection_is_numpys_median():
    # pHash bits are "above the median", and a collage seam is judged against the median step:
    # the selection must give np.median's value to the bit, for odd and even counts, ties and
    # equal values included.
    from copyhunt.kernels.hashes import median_by_selection

    rng = np.random.default_rng(4)
    for trial in range(900):
        values = rng.normal(size=[1, 2, 3, 4, 63, 64, 215, 288, 319][trial % 9]).astype(np.float32)
        if trial % 4 == 0:
            values = np.round(values * 2).astype(np.float32)  # many ties
        if trial % 7 == 0:
            values[:] = 3.0
        assert median_by_selection(values, np.empty(len(values), np.float32)) == np.float32(np.median(values)), values


class HasherContract:
    """What every hasher must do; subclass with ``make()`` for each implementation."""

    def make(self):
        raise NotImplementedError

    def test_same_pixels_same_hash_and_a_64_bit_int(self):
        im = Image.open(CUSTOMER_IMAGES[0])
        a, b = self.make().hash(im), self.make().hash(im.copy())
        assert a == b and -(1 << 63) <= a < (1 << 63)

    def test_recompression_moves_few_bits_and_other_photos_many(self):
        h = self.make()
        for path in CUSTOMER_IMAGES[:5]:
            im = Image.open(path).convert("RGB")
            again = Image.open(io.BytesIO(encode(im, 40)))
            assert hamming(h.hash(im), h.hash(again)) <= 6
        others = [h.hash(Image.open(p).convert("RGB")) for p in CUSTOMER_IMAGES]
        assert min(hamming(a, b) for i, a in enumerate(others) for b in others[i + 1:]) >= 14

    def test_no_boxes_no_hashes(self):
        gray = norm(Image.open(CUSTOMER_IMAGES[0]))
        hashes, usable = self.make().hash_windows(gray, np.zeros((0, 4), np.int64))
        assert hashes.shape == usable.shape == (0,)


class TestPHasher(HasherContract):
    def make(self):
        return PHasher()

    def test_bit_for_bit_the_imagehash_phash_of_the_same_pixels(self):
        for path in CUSTOMER_IMAGES[:4]:
            im = Image.open(path).convert("L").resize((32, 32), Image.Resampling.LANCZOS)  # both see these pixels
            expected = int(str(imagehash.phash(im)), 16)
            expected -= (1 << 64) if expected >= (1 << 63) else 0
            assert PHasher().hash(im) == expected


def test_reference_entries_cover_all_eight_orientations():
    gray = norm(Image.open(CUSTOMER_IMAGES[4]))
    full = {(e.window, e.mirrored): e.phash for e in reference_hashes(gray) if e.window.startswith("full")}
    assert len(full) == 8
    views = {("full", False): gray, ("full", True): gray[:, ::-1], ("full-rot180", False): gray[::-1, ::-1], ("full-rot180", True): gray[::-1],
             ("full-rot90", False): np.rot90(gray, -1), ("full-rot90", True): gray.T, ("full-rot270", False): np.rot90(gray, 1),
             ("full-rot270", True): np.rot90(gray, 2).T}
    for key, view in views.items():
        view = np.ascontiguousarray(view)
        h, w = view.shape
        assert PHasher().hash_windows(view, np.array([[0, 0, w, h]]))[0][0] == full[key], key


def agreeing_blob_windows(gray, x0, y0, side):
    """Blob windows of a crop that land on the same picture content as a window of the original
    (within 10% of its size) and hash within 10 bits of it."""
    h, w = gray.shape
    crop = np.ascontiguousarray(gray[y0:y0 + int(h * side), x0:x0 + int(w * side)])
    ch, cw = crop.shape
    refs = [e for e in reference_hashes(gray) if e.window.startswith("blob")]
    agreeing = 0
    for q in (e for e in query_hashes(crop) if e.window.startswith("blob")):
        qx0, qy0, qx1 = q.x0 * cw + x0, q.y0 * ch + y0, q.x1 * cw + x0
        for r in refs:
            tol = 0.1 * (r.x1 - r.x0) * w
            if abs(r.x0 * w - qx0) < tol and abs(r.y0 * h - qy0) < tol and abs(r.x1 * w - qx1) < tol and hamming(q.phash, r.phash) <= 10:
                agreeing += 1
                break
    return agreeing


def test_blob_windows_follow_the_picture_through_a_crop():
    # Blobs depend on the pixels around them, not on the frame, so a crop keeping half the area
    # keeps windows that hash like the original's at the same place: one is enough to match.
    rng = random.Random(3)
    kept = []
    for path in CUSTOMER_IMAGES:
        gray = norm(Image.open(path))
        h, w = gray.shape
        kept.append(agreeing_blob_windows(gray, rng.randint(0, int(w * 0.29)), rng.randint(0, int(h * 0.29)), 0.71))
    assert sum(k >= 1 for k in kept) >= 9, kept
    gray = norm(Image.open(CUSTOMER_IMAGES[0]))
    assert blob_windows(gray, 16) == blob_windows(gray.copy(), 16)  # deterministic


def test_compiled_blurs_and_halving_agree_with_opencv():
    # The blob search's pyramid is compiled; its blurs must be OpenCV's (same kernels, same
    # reflected borders) up to float rounding, on photo pixels at every octave's size, down to
    # images narrower than the kernel (whose borders reflect more than once).
    import cv2

    from copyhunt.kernels.blobs import _LEVEL_KERNELS, _OCTAVE_SIGMAS, _OCTAVE_STEPS, _STEP_KERNELS, _halve, _kernel_size
    from copyhunt.kernels.blurs import symmetric_blur
    from copyhunt.imaging import half_size

    photo = norm(Image.open(CUSTOMER_IMAGES[1])).astype(np.float32)
    images = [photo[:108, :144], photo[:54, :73], photo[:27, :36], photo[:5, :7], photo[:1, :9], photo[:12, :1]]
    kernels = [(_STEP_KERNELS[i], s) for i, s in enumerate(_OCTAVE_STEPS)] + [(_LEVEL_KERNELS[i], s) for i, s in enumerate(_OCTAVE_SIGMAS)]
    for image in map(np.ascontiguousarray, images):
        h, w = image.shape
        for half_kernel, sigma in kernels:
            size = _kernel_size(sigma)
            ours = np.full_like(image, np.nan)
            symmetric_blur(image, ours, half_kernel[:size[0] // 2 + 1], np.empty_like(image), np.empty(w + size[0], np.float32))
            theirs = cv2.GaussianBlur(image, size, sigma)
            assert np.abs(ours - theirs).max() < 1e-3, (image.shape, sigma)
            assert np.abs(ours - image).max() > 0.5 or min(h, w) == 1  # it did blur
        if min(h, w) >= 2:
            halved = np.full((h // 2, w // 2), np.nan, np.float32)
            _halve(image, halved)
            assert np.array_equal(halved, half_size(image)), image.shape


def test_compiled_half_size_is_opencvs_to_the_bit():
    # The blob search and the paste proposals halve their image inside compiled code; it must be
    # imaging.half_size (OpenCV's area resize at exactly half) to the bit, odd sizes included.
    from copyhunt.imaging import half_size
    from copyhunt.kernels.pixels import half_size_u8

    rng = np.random.default_rng(11)
    photo = norm(Image.open(CUSTOMER_IMAGES[3]))
    images = [photo, photo[:101, :77], photo[:3, :2], photo[:2, :9]]
    images += [rng.integers(0, 256, (h, w)).astype(np.uint8) for h, w in ((2, 2), (5, 3), (64, 97), (217, 289))]
    images.append(np.full((31, 40), 255, np.uint8))
    for image in map(np.ascontiguousarray, images):
        assert np.array_equal(half_size_u8(image), half_size(image)), image.shape


def test_tilted_copy_on_a_plain_background_is_turned_back():
    src = Image.open(CUSTOMER_IMAGES[6]).convert("RGB")
    tilted = src.rotate(6, Image.Resampling.BICUBIC, expand=True, fillcolor="white")
    gray = norm(tilted)
    quad = plain_background_quad(gray)
    assert quad is not None
    view, _ = rectified(gray, quad)
    ref_full = next(e.phash for e in reference_hashes(norm(src)) if e.window == "full" and not e.mirrored)
    assert hamming(PHasher().hash_windows(view, np.array([[0, 0, view.shape[1], view.shape[0]]]))[0][0], ref_full) <= 6


def test_fingerprint_rows_and_reasons():
    rows, error = fingerprint_image("a" * 64, CUSTOMER_IMAGES[0].read_bytes(), 10**8)
    assert error is None and "full" in {r["window"] for r in rows}
    assert any(r["window"].startswith("blob") for r in rows)
    collage = grid_collage([*CUSTOMER_IMAGES[:2], *UNRELATED_IMAGES[:2]], 2, 0)
    rows, error = fingerprint_image("d" * 64, encode(collage), 10**8)
    assert error is None and {r["window"] for r in rows} >= {"full", "grid2x2-00", "grid2x2-11"}
    assert fingerprint_image("b" * 64, b"GIF89a not really", 10**8) == ([], "corrupt-image")
    flat = Image.new("RGB", (200, 150), (120, 160, 210))
    assert fingerprint_image("c" * 64, encode(flat), 10**8) == ([], "no-detail")


def test_a_batch_gives_each_image_what_it_gets_alone():
    """fingerprint_images runs each stage across the batch; no image's rows or reason may depend
    on its neighbours. The batch mixes photos, a picture pasted into another (its proposals are
    searched enlarged), a collage, a padded copy, flat and broken images and a missing blob."""
    from copyhunt.fingerprint import fingerprint_images
    from copyhunt.imaging import BadImage

    background = Image.open(UNRELATED_IMAGES[1]).convert("RGB").resize((640, 480))
    background.paste(Image.open(CUSTOMER_IMAGES[2]).convert("RGB").resize((256, 170)), (300, 200))
    padded = ImageOps.expand(Image.open(CUSTOMER_IMAGES[3]).convert("RGB"), border=60, fill="white")
    items = [("p0", CUSTOMER_IMAGES[0].read_bytes()), ("bad", b"\x89PNG\r\n\x1a\n broken"), ("paste", encode(background)),
             ("missing", BadImage("missing-blob")), ("collage", encode(grid_collage([*CUSTOMER_IMAGES[:2], *UNRELATED_IMAGES[:2]], 2, 0))),
             ("flat", encode(Image.new("RGB", (200, 150), (120, 160, 210)))), ("padded", encode(padded)),
             ("cut", CUSTOMER_IMAGES[1].read_bytes()[:5000]), ("p1", UNRELATED_IMAGES[3].read_bytes())]
    batch = fingerprint_images(iter(items), 10**8)
    alone = [([], data.reason) if isinstance(data, BadImage) else fingerprint_image(sha, data, 10**8) for sha, data in items]
    assert batch == alone
    assert [reason for _, reason in batch] == [None, "corrupt-image", None, "missing-blob", None, "no-detail", None, "corrupt-image", None]
    assert any(r["window"].startswith("blob-u") for r in batch[2][0])  # the enlarged proposal search ran


def test_fingerprint_chunks_are_one_sorted_table_in_pieces(tmp_path, monkeypatch):
    import pyarrow as pa

    from copyhunt.stages import fingerprint as fingerprint_stage
    from copyhunt.blobs import LocalBlobStore

    blobs = LocalBlobStore(tmp_path)
    # (UNRELATED_IMAGES[0] is a dark street scene too flat to hash: the photos here have detail.)
    datas = [p.read_bytes() for p in CUSTOMER_IMAGES[:4] + UNRELATED_IMAGES[1:3]] + [b"\xff\xd8 truncated", encode(Image.new("L", (90, 90), 128))]
    shas = sorted({blobs.put(d) for d in datas}) + ["0" * 64]  # and a blob the store does not have
    whole, whole_errors = zip(*fingerprint_stage.fingerprint_chunks(str(tmp_path), shas, 10**8, workers=2))
    monkeypatch.setattr(fingerprint_stage, "FINGERPRINT_CHUNK", 3)
    parts = list(fingerprint_stage.fingerprint_chunks(str(tmp_path), shas, 10**8, workers=2))
    assert len(whole) == 1 and len(parts) == 3
    assert pa.concat_tables([t for t, _ in parts]).equals(whole[0])
    assert whole[0].column("image_sha256").to_pylist() == sorted(whole[0].column("image_sha256").to_pylist())
    errors = {sha: reason for _, bad in parts for sha, reason in bad.items()}
    assert errors == whole_errors[0] and sorted(errors.values()) == ["missing-blob", "no-detail", "not-an-image"]


def test_an_image_crawled_again_is_not_fingerprinted_again(settings):
    import dataclasses
    import datetime as dt

    from copyhunt.stages import fingerprint as fingerprint_stage
    from copyhunt.blobs import LocalBlobStore
    from copyhunt.lake import Lake, sha256_file

    blobs, lake = LocalBlobStore(settings.blob_root), Lake(settings.lake)
    day1, day2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)
    old = [blobs.put(p.read_bytes()) for p in CUSTOMER_IMAGES[:3]] + [blobs.put(b"\xff\xd8 not a jpeg")]
    new = [blobs.put(p.read_bytes()) for p in UNRELATED_IMAGES[1:3]]
    lake.write_partition("images", day1, pd.DataFrame({"blob_sha256": old}))
    lake.write_partition("images", day2, pd.DataFrame({"blob_sha256": old + new}))
    assert fingerprint_stage.fingerprint(settings, day1, workers=2)["reused"] == 0
    # Day 2 does not decode the images of day 1 again: they need not even be in the store.
    for sha in old:
        blobs.path(sha).unlink()
    reran = fingerprint_stage.fingerprint(settings, day2, workers=2)
    assert reran["reused"] == 4 and reran["errors"] == 1 and reran["images"] == 6
    day2_rows = lake.read_frame("image_fingerprints", day2)
    assert set(day2_rows["image_sha256"]) == set(old[:3] + new)
    reused_file = sha256_file(lake.partition_file("image_fingerprints", day2))
    # The same bytes as fingerprinting day 2 from scratch (day 1 made under another key).
    for sha, path in zip(old, CUSTOMER_IMAGES[:3]):
        blobs.put(path.read_bytes())
    (lake.partition_dir("image_fingerprints", day1) / fingerprint_stage.FINGERPRINT_KEY_FILE).write_text("another key")
    assert fingerprint_stage.fingerprint(settings, day2, workers=2)["reused"] == 0
    assert sha256_file(lake.partition_file("image_fingerprints", day2)) == reused_file
    # Another pixel limit is another key: nothing is reused.
    fingerprint_stage.fingerprint(settings, day1, workers=2)
    assert fingerprint_stage.fingerprint(dataclasses.replace(settings, max_image_pixels=10**6), day2, workers=2)["reused"] == 0


def test_copies_are_close_and_unrelated_photos_are_far():
    src = Image.open(CUSTOMER_IMAGES[0]).convert("RGB")
    w, h = src.size
    ref = norm(src)
    copies = {
        "mirror": ImageOps.mirror(src),
        "crop70": src.crop((int(w * 0.08), int(h * 0.08), int(w * 0.92), int(h * 0.92))),
        "grayscale": ImageOps.grayscale(src),
        "padded": ImageOps.expand(src, border=40, fill="black"),
        "scaled": src.resize((w * 2, h * 2)),
    }
    for name, im in copies.items():
        assert best_distance(norm(im), ref) <= 8, name
    for other in UNRELATED_IMAGES[:5]:
        assert best_distance(norm(Image.open(other)), ref) >= 13


def test_collage_cell_matches_whole_reference():
    a = Image.open(CUSTOMER_IMAGES[2]).convert("RGB").resize((300, 200))
    collage = Image.new("RGB", (610, 410), "white")
    for i, im in enumerate([a] + [Image.open(p).convert("RGB").resize((300, 200)) for p in UNRELATED_IMAGES[:3]]):
        collage.paste(im, (5 + 305 * (i % 2), 5 + 205 * (i // 2)))
    assert best_distance(norm(collage), norm(Image.open(CUSTOMER_IMAGES[2]))) <= 6


def grid_collage(photos, n, gap):
    """An n x n collage of real photos, tiles meeting edge to edge (gap 0) or across a gutter."""
    cell = (210, 150)
    canvas = Image.new("RGB", (n * cell[0] + (n + 1) * gap, n * cell[1] + (n + 1) * gap), "white")
    for i in range(n * n):
        tile = ImageOps.fit(Image.open(photos[i % len(photos)]).convert("RGB"), cell)
        canvas.paste(tile, (gap + (i % n) * (cell[0] + gap), gap + (i // n) * (cell[1] + gap)))
    return canvas


def grid_of(photos, n, gap, cell=(150, 110)):
    """An n x n collage of real photos fitted to their cells, on white, gutters ``gap`` px wide."""
    canvas = Image.new("RGB", (n * cell[0] + (n + 1) * gap, n * cell[1] + (n + 1) * gap), "white")
    for i in range(n * n):
        canvas.paste(Image.open(photos[i % len(photos)]).convert("RGB").resize(cell), (gap + (i % n) * (cell[0] + gap), gap + (i // n) * (cell[1] + gap)))
    return canvas


@pytest.mark.parametrize("n,gap", [(n, gap) for n in (2, 3, 4, 5) for gap in (0, 3, 10)])
def test_collage_cells_are_cut_where_the_photos_meet(n, gap):
    # Any grid of 2 to 5 a side, photos meeting edge to edge or across a gutter: each photo is a
    # cell, cut to within a pixel or two of it, and (down to cells of 4x4 grids, some 75 px at the
    # working size) hashing like it.
    photos = [*CUSTOMER_IMAGES, *UNRELATED_IMAGES[1:]]  # (the first is too dark to hash whole)
    rng = random.Random(n * 31 + gap)
    chosen = rng.sample(photos, min(n * n, len(photos)))
    chosen += rng.choices(photos, k=n * n - len(chosen))  # a 5x5 grid repeats some
    cell = (150, 110)
    collage = grid_of(chosen, n, gap, cell)
    gray, trim = load_gray(encode(collage), 64_000_000, HASH_WORKING_SIZE)
    h, w = gray.shape
    cells = {c.name: c for c in collage_cells(gray) if c.name.startswith(f"grid{n}x{n}-")}
    assert len(cells) == n * n, [c.name for c in collage_cells(gray)]
    cw, ch = collage.size
    for r in range(n):
        for c in range(n):
            x0, y0 = gap + c * (cell[0] + gap), gap + r * (cell[1] + gap)
            true = [(x0 / cw - trim[0]) / (trim[2] - trim[0]) * w, (y0 / ch - trim[1]) / (trim[3] - trim[1]) * h,
                    ((x0 + cell[0]) / cw - trim[0]) / (trim[2] - trim[0]) * w, ((y0 + cell[1]) / ch - trim[1]) / (trim[3] - trim[1]) * h]
            got = cells[f"grid{n}x{n}-{r}{c}"]
            assert np.abs(np.array([got.x0 * w, got.y0 * h, got.x1 * w, got.y1 * h]) - true).max() <= 2.5, (r, c, got, true)
    if n <= 4:
        hashes = {q.window: q.phash for q in query_hashes(gray)}
        for i, photo in enumerate(chosen[:min(n, 3)]):  # the first row's photos
            ref = next(e.phash for e in reference_hashes(norm(Image.open(photo).convert("RGB").resize(cell))) if e.window == "full")
            assert hamming(hashes[f"grid{n}x{n}-0{i}"], ref) <= 10, (photo.name, n, gap)  # MatchParams.max_distance


def test_whole_photos_are_rarely_taken_for_collages():
    photos = [*CUSTOMER_IMAGES, *UNRELATED_IMAGES]
    split = [p.name for p in photos if collage_cells(load_gray(p.read_bytes(), 64_000_000, HASH_WORKING_SIZE)[0])]
    assert len(split) <= 0.15 * len(photos), split


def test_a_keystoned_picture_on_a_plain_background_is_warped_upright():
    src = Image.open(CUSTOMER_IMAGES[5]).convert("RGB")
    w, h = src.size
    import cv2

    quad = np.float32([[0.12 * w, 0.05 * h], [0.93 * w, 0.15 * h], [0.86 * w, 0.97 * h], [0.02 * w, 0.85 * h]])
    m = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), quad)
    warped = Image.fromarray(cv2.warpPerspective(np.asarray(src), m, (w, h), borderValue=(0, 0, 0)))
    gray = norm(warped)
    found = plain_background_quad(gray)
    assert found is not None
    ref = next(e.phash for e in reference_hashes(norm(src)) if e.window == "full")
    view, _ = rectified(gray, found)
    assert hamming(PHasher().hash_windows(view, np.array([[0, 0, view.shape[1], view.shape[0]]]))[0][0], ref) <= 8
    assert any(q.window == "rectified" for q in query_hashes(gray))
    assert plain_background_quad(norm(src)) is None  # a photo filling its image is left alone


def test_a_tilted_crop_is_searched_turned_upright():
    # Turned by 12 degrees and cut inside its own outline: no plain corners, but its edges lean,
    # and the view turned back upright has blob windows that hash like the reference's. (The
    # view is turned by the copy's tilt: a photo whose own edges lean, or one without straight
    # edges, is beyond it.)
    import math

    src = Image.open(UNRELATED_IMAGES[-2]).convert("RGB")  # the bridge: a photo of upright edges
    ref = [e.phash for e in reference_hashes(norm(src)) if e.window.startswith("blob")]
    assert abs(image_tilt(norm(src))) < 3
    for degrees in (-12, 9):
        turned = src.rotate(degrees, Image.Resampling.BICUBIC, expand=True)
        w, h = src.size
        a = math.radians(abs(degrees))
        k = 0.98 * min(w / (w * math.cos(a) + h * math.sin(a)), h / (w * math.sin(a) + h * math.cos(a)))
        cx, cy = turned.width / 2, turned.height / 2
        gray = norm(turned.crop((round(cx - w * k / 2), round(cy - h * k / 2), round(cx + w * k / 2), round(cy + h * k / 2))))
        assert image_tilt(gray) == pytest.approx(degrees, abs=3)
        assert tilt_view(gray) is not None
        tilted = [q.phash for q in query_hashes(gray) if q.window.startswith("blob-t")]
        upright = [q.phash for q in query_hashes(gray) if q.window[4:5].isdigit()]
        assert min(hamming(q, r) for q in tilted for r in ref) <= 6
        assert min(hamming(q, r) for q in tilted for r in ref) < min(hamming(q, r) for q in upright for r in ref)
    assert tilt_view(norm(src)) is None


def hash_at_distance(rng, base, d):
    """A hash exactly d bits from base (ThreatExchange's oracle helper)."""
    bits = rng.sample(range(64), d)
    u = base & 0xFFFFFFFFFFFFFFFF
    for b in bits:
        u ^= 1 << b
    return u - (1 << 64) if u >= (1 << 63) else u


def entries_for(hashes, customer="c1"):
    return pd.DataFrame([{"customer_id": customer, "image_id": f"img{i:05d}", "ref_sha256": f"{i:064x}", "window": "full", "mirrored": False,
                          "x0": 0.0, "y0": 0.0, "x1": 1.0, "y1": 1.0, "phash": h} for i, h in enumerate(hashes)], columns=ENTRY_COLUMNS)


def test_index_agrees_with_brute_force_oracle(tmp_path):
    rng = random.Random(42)
    refs = [rng.getrandbits(64) - (1 << 63) for _ in range(3000)]
    build_index(entries_for(refs), tmp_path, shard_size=1000)
    assert len(current_shards(tmp_path)) == 3
    searcher = ShardSearcher(tmp_path)
    planted = {}
    queries = []
    for qi in range(60):
        target = rng.randrange(len(refs))
        d = rng.choice([0, 1, 4, 8, 10])
        planted[qi] = (target, d)
        queries.append(hash_at_distance(rng, refs[target], d))
    found = searcher.query(queries, k=8, max_distance=10)
    for qi, (target, d) in planted.items():
        hits = found[found["query_row"] == qi]
        assert f"img{target:05d}" in set(hits["image_id"]), (qi, d)
        oracle = {f"img{i:05d}" for i, r in enumerate(refs) if hamming(r, queries[qi]) <= 10}
        assert set(hits["image_id"]) <= oracle  # never reports something farther than the threshold
        row = hits[hits["image_id"] == f"img{target:05d}"].iloc[0]
        assert row["distance"] == d


def test_same_inputs_build_same_bytes_and_unchanged_shards_are_reused(tmp_path):
    rng = random.Random(7)
    refs = [rng.getrandbits(64) - (1 << 63) for _ in range(500)]
    first = build_index(entries_for(refs), tmp_path / "a", shard_size=200)
    build_index(entries_for(refs), tmp_path / "b", shard_size=200)  # the same inputs, elsewhere
    for sid in first.shards:
        assert (tmp_path / "a" / "shards" / f"{sid}.ann").read_bytes() == (tmp_path / "b" / "shards" / f"{sid}.ann").read_bytes()
    again = build_index(entries_for(refs), tmp_path / "a", shard_size=200)
    assert again.built == [] and again.version == first.version
    # A new customer's images land in a new shard; the old shards are untouched.
    more = pd.concat([entries_for(refs), entries_for([rng.getrandbits(64) - (1 << 63) for _ in range(50)], customer="c2")])
    grown = build_index(more, tmp_path / "a", shard_size=200)
    assert set(first.shards) <= set(grown.shards) and len(grown.built) == 1
    # Same images, new hashes (a new fingerprint version): nothing stale is kept.
    rehashed = more.assign(phash=more["phash"] ^ 1)
    redone = build_index(rehashed, tmp_path / "a", shard_size=200)
    assert not set(redone.shards) & set(grown.shards) and len(redone.built) == len(redone.shards)


def test_edge_cases_empty_single_and_duplicate(tmp_path):
    empty = build_index(entries_for([]), tmp_path / "e", shard_size=10)
    assert empty.shards == []
    assert ShardSearcher(tmp_path / "e").query([0], k=5, max_distance=10).empty
    build_index(entries_for([12345]), tmp_path / "one", shard_size=10)
    res = ShardSearcher(tmp_path / "one").query([12345], k=5, max_distance=0)
    assert list(res["image_id"]) == ["img00000"]
    build_index(entries_for([777, 777]), tmp_path / "dup", shard_size=10)
    res = ShardSearcher(tmp_path / "dup").query([777], k=5, max_distance=0)
    assert sorted(res["image_id"]) == ["img00000", "img00001"]
    with pytest.raises(ValueError, match="lack columns"):
        build_index(pd.DataFrame({"phash": [1]}), tmp_path / "bad", shard_size=10)


def test_image_entries_are_every_window_of_the_found_reference(tmp_path):
    rng = random.Random(3)
    frames = []
    for i in range(30):  # references with 1..6 windows each, over several shards
        n = rng.randint(1, 6)
        frames.append(pd.DataFrame({"customer_id": "c1", "image_id": f"img{i:02d}", "ref_sha256": f"{i:064x}", "window": [f"blob{j:02d}" for j in range(n)],
                                    "mirrored": False, "x0": 0.0, "y0": 0.0, "x1": 1.0, "y1": 1.0,
                                    "phash": [rng.getrandbits(64) - (1 << 63) for _ in range(n)]}, columns=ENTRY_COLUMNS))
    entries = pd.concat(frames, ignore_index=True)
    build_index(entries, tmp_path, shard_size=25)
    searcher = ShardSearcher(tmp_path)
    assert len(searcher.shards) > 1
    found = searcher.query(entries["phash"].tolist(), k=1, max_distance=0)
    assert len(found) == len(entries)
    for row in found.itertuples(index=False):
        got = searcher.image_entries(row.shard, row.annoy_id)
        expected = entries[entries["image_id"] == row.image_id]
        assert sorted(got["phash"].tolist()) == sorted(expected["phash"].tolist())
        assert set(got["image_id"]) == {row.image_id}


def test_the_mapped_side_table_reads_back_the_side_table_and_a_shard_without_it_is_searched_alike(tmp_path):
    import pyarrow.parquet as pq

    from copyhunt.index import MAPPED_SUFFIXES, MappedSide

    rng = random.Random(7)
    refs = [rng.getrandbits(64) - (1 << 63) for _ in range(400)]
    entries = entries_for(refs)
    entries["customer_id"] = ["ålesund-foto" if i % 3 else "c" for i in range(len(entries))]  # UTF-8, and widths that differ
    entries["window"] = [f"blob{i % 5}" if i % 2 else "whole" for i in range(len(entries))]
    build_index(entries, tmp_path / "new", shard_size=250)
    shards_dir = tmp_path / "new" / "shards"
    for sid in current_shards(tmp_path / "new"):
        side = pq.read_table(shards_dir / f"{sid}.parquet").to_pandas()
        mapped = MappedSide(shards_dir, sid)
        assert isinstance(mapped.rows, np.memmap) and len(mapped) == len(side)
        back = mapped.columns(np.arange(len(side)))
        for column in ENTRY_COLUMNS:
            assert list(back[column]) == list(side[column]), column
        assert list(mapped.columns(np.array([len(side) - 1, 0]))["image_id"]) == [side["image_id"].iloc[-1], side["image_id"].iloc[0]]

    # The same index without the mapped files (as a shard written before them): the searcher reads
    # its Parquet instead and finds the same rows, and the next build writes the files.
    import shutil

    shutil.copytree(tmp_path / "new", tmp_path / "old")
    for path in (tmp_path / "old" / "shards").iterdir():
        if path.name.endswith(MAPPED_SUFFIXES):
            path.unlink()
    queries = [hash_at_distance(rng, refs[i], rng.choice([0, 3, 8])) for i in range(0, 400, 7)]
    mapped_found = ShardSearcher(tmp_path / "new").query(queries, k=8, max_distance=10)
    old_found = ShardSearcher(tmp_path / "old").query(queries, k=8, max_distance=10)
    assert len(mapped_found) >= len(queries)
    pd.testing.assert_frame_equal(mapped_found, old_found)
    build_index(entries, tmp_path / "old", shard_size=250)
    for path in (tmp_path / "new" / "shards").iterdir():
        assert (tmp_path / "old" / "shards" / path.name).read_bytes() == path.read_bytes(), path.name


def test_an_index_of_another_fingerprint_version_is_refused_and_rebuilt(tmp_path):
    import json

    from copyhunt.fingerprint import FINGERPRINT_VERSION

    entries = entries_for([1, 2, 3])
    first = build_index(entries, tmp_path, shard_size=10)
    version_file = tmp_path / "versions" / f"{first.version}.json"
    old = json.loads(version_file.read_text())
    assert old["fingerprint_version"] == FINGERPRINT_VERSION
    del old["fingerprint_version"]  # as written before versions were recorded: version 1 hashes
    version_file.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="rebuild the index"):
        ShardSearcher(tmp_path)
    rebuilt = build_index(entries, tmp_path, shard_size=10)
    assert not ShardSearcher(tmp_path).query([2], k=1, max_distance=0).empty and rebuilt.version == first.version


def numbered_entries(hashes, customer, first):
    """Index entries for images numbered from ``first`` (distinct ids and content shas)."""
    return entries_for(hashes, customer).assign(image_id=[f"img{first + i:05d}" for i in range(len(hashes))],
                                                ref_sha256=[f"{first + i:064x}" for i in range(len(hashes))])


def test_uploads_add_small_shards_withdrawals_rebuild_one_and_compaction_merges_them(tmp_path):
    from copyhunt.index import compact_index, small_shards

    rng = random.Random(11)
    base = numbered_entries([rng.getrandbits(64) - (1 << 63) for _ in range(400)], "c1", 0)
    batches = [numbered_entries([rng.getrandbits(64) - (1 << 63) for _ in range(10)], f"c{n}", 1000 * n) for n in range(2, 6)]
    index = tmp_path / "index"
    first = build_index(base, index, shard_size=200)
    registered = base
    versions = [first]
    for batch in batches:  # four days' uploads, one incremental build each
        registered = pd.concat([registered, batch], ignore_index=True)
        versions.append(build_index(registered, index, shard_size=200))
        assert set(versions[-2].shards) <= set(versions[-1].shards) and len(versions[-1].built) == 1
    assert len(small_shards(index, 200)) == 4

    # A withdrawal rebuilds the one shard that held the image; the searcher never finds it again.
    gone = batches[1].iloc[0]
    withdrawn = build_index(registered[registered["image_id"] != gone["image_id"]], index, shard_size=200)
    assert len(withdrawn.built) == 1 and len(set(versions[-1].shards) - set(withdrawn.shards)) == 1
    searcher = ShardSearcher(index)
    assert gone["image_id"] not in set(searcher.query([int(gone["phash"])], k=3, max_distance=0)["image_id"])

    compacted = compact_index(index, shard_size=200)
    assert len(compacted.merged) == 4 and len(compacted.built) == 1
    assert small_shards(index, 200) == compacted.built  # their 39 entries fill one shard, still under half full
    assert set(first.shards) <= set(compacted.shards)  # full shards are left alone
    searcher = ShardSearcher(index)
    kept = registered[registered["image_id"] != gone["image_id"]]
    found = searcher.query(kept["phash"].tolist(), k=3, max_distance=0)
    assert set(found["image_id"]) == set(kept["image_id"])
    assert gone["image_id"] not in set(searcher.query([int(gone["phash"])], k=3, max_distance=0)["image_id"])
    # Compacting again changes nothing; every earlier version is still searchable (replays need them).
    assert compact_index(index, shard_size=200).version == compacted.version
    old = ShardSearcher(index, version=versions[2].version).query([int(gone["phash"])], k=3, max_distance=0)
    assert gone["image_id"] in set(old["image_id"])

    # The same entries give the same bytes: a fresh build of the compacted entries, compacted, is that version.
    fresh = tmp_path / "fresh"
    build_index(base, fresh, shard_size=200)
    build_index(kept, fresh, shard_size=200)
    again = compact_index(fresh, shard_size=200)
    assert again.version == compacted.version
    for sid in again.built:
        assert (fresh / "shards" / f"{sid}.ann").read_bytes() == (index / "shards" / f"{sid}.ann").read_bytes()


def test_compaction_drops_references_it_is_told_are_withdrawn(tmp_path):
    from copyhunt.index import compact_index

    rng = random.Random(5)
    entries = numbered_entries([rng.getrandbits(64) - (1 << 63) for _ in range(300)], "c1", 0)
    build_index(entries, tmp_path, shard_size=200)
    result = compact_index(tmp_path, shard_size=200, keep=lambda side: side["image_id"] != "img00007")
    assert result.dropped_entries == 1
    found = ShardSearcher(tmp_path).query(entries["phash"].tolist(), k=3, max_distance=0)
    assert set(found["image_id"]) == set(entries["image_id"]) - {"img00007"}
