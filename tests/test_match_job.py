"""The Spark match job's pure transform on a local SparkSession, and the CLI contract end to end."""

import importlib.util
import io
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from conftest import CUSTOMER_IMAGES, REPO, UNRELATED_IMAGES
from copyhunt.blobs import LocalBlobStore
from copyhunt.fingerprint import FINGERPRINT_COLUMNS
from copyhunt.stages.fingerprint import fingerprint_batch
from copyhunt.references import describe_reference, features_store
from copyhunt.index import ENTRY_COLUMNS, build_index
from copyhunt.matching import MatchParams


def load_job():
    from copyhunt.jobs import match

    return match


def test_the_job_is_found_through_the_package_and_the_entry_point_is_the_same_job():
    from copyhunt import sparkjob
    from copyhunt.jobs import match

    import copyhunt

    assert sparkjob.job_file("match") == Path(match.__file__)
    assert Path(copyhunt.__file__).parent in sparkjob.job_file("match").parents
    spec = importlib.util.spec_from_file_location("copyhunt_match_entry", REPO / "jobs" / "match.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    assert entry.main is match.main and entry.transform is match.transform
    with pytest.raises(ValueError, match="no Spark job named"):
        sparkjob.job_file("nonesuch")


def jpeg(im):
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=88)
    return buf.getvalue()


@pytest.fixture(scope="module")
def spark():
    job = load_job()
    session = job.spark_session("local[2]", "copyhunt-test")
    yield session
    session.stop()


def test_transform_finds_planted_copies_and_nothing_else(tmp_path, spark):
    job = load_job()
    blobs = LocalBlobStore(tmp_path / "blobs")
    entries = []
    for path in CUSTOMER_IMAGES[:4]:
        sha = blobs.put(path.read_bytes())
        for wh in describe_reference(path.read_bytes(), sha, 10**8, features_store(tmp_path / "index")):
            entries.append({"customer_id": "cust", "image_id": path.stem, "ref_sha256": sha, "window": wh.window, "mirrored": wh.mirrored,
                            "x0": wh.x0, "y0": wh.y0, "x1": wh.x1, "y1": wh.y1, "phash": wh.phash})
    build_index(pd.DataFrame(entries, columns=ENTRY_COLUMNS), tmp_path / "index", shard_size=40)  # several shards

    src = Image.open(CUSTOMER_IMAGES[1]).convert("RGB")
    w, h = src.size
    queries = {
        "mirror": jpeg(ImageOps.mirror(src)),
        "crop": jpeg(src.crop((int(w * .1), int(h * .1), int(w * .9), int(h * .9)))),
        "unrelated": jpeg(Image.open(UNRELATED_IMAGES[0])),
        "unregistered": jpeg(Image.open(CUSTOMER_IMAGES[6])),
    }
    shas = {name: blobs.put(data) for name, data in queries.items()}
    rows = [row for _, found, _ in fingerprint_batch((str(blobs.root), list(shas.values()), 10**8)) for row in found]
    fps = spark.createDataFrame(pd.DataFrame(rows, columns=FINGERPRINT_COLUMNS))
    params = MatchParams(index_dir=str(tmp_path / "index"), index_version=None, query_blobs=str(blobs.root), ref_blobs=str(blobs.root))
    out = job.transform(fps.repartition(3), params, partitions=5).toPandas()
    by_query = {name: set(out[out.image_sha256 == sha]["image_id"]) for name, sha in shas.items()}
    assert by_query == {"mirror": {CUSTOMER_IMAGES[1].stem}, "crop": {CUSTOMER_IMAGES[1].stem}, "unrelated": set(), "unregistered": set()}
    mirror = out[out.image_sha256 == shas["mirror"]].iloc[0]
    assert bool(mirror["mirrored"]) and 0 < mirror["score"] <= 1
    crop = out[out.image_sha256 == shas["crop"]].iloc[0]
    assert crop["ref_overlap"] == pytest.approx(0.64, abs=0.08)  # the crop kept 80% x 80% of the reference
    # Same input, different partitioning: same answer.
    again = job.transform(fps.repartition(1), params, partitions=1).toPandas()
    cols = list(out.columns)
    pd.testing.assert_frame_equal(out.sort_values(cols).reset_index(drop=True), again.sort_values(cols).reset_index(drop=True))


def test_cli_index_build_and_match_contract(tmp_path):
    refs, queries = tmp_path / "refs", tmp_path / "queries"
    refs.mkdir()
    queries.mkdir()
    for p in CUSTOMER_IMAGES[:3]:
        (refs / p.name).write_bytes(p.read_bytes())
    (refs / "broken.jpg").write_bytes(b"\xff\xd8\xff\x00 not really")
    src = Image.open(CUSTOMER_IMAGES[2]).convert("RGB")
    (queries / "gray-copy.png").write_bytes(jpeg(ImageOps.grayscale(src)))
    (queries / "other.jpg").write_bytes(UNRELATED_IMAGES[1].read_bytes())
    # Bad input: each gets an error row with its reason; the run goes on.
    (queries / "truncated.jpg").write_bytes(CUSTOMER_IMAGES[0].read_bytes()[:300])
    (queries / "pixel.png").write_bytes(encode(Image.new("RGB", (1, 1)), "PNG"))
    (queries / "banner.png").write_bytes(encode(Image.new("RGB", (1200, 40), "navy"), "PNG"))
    (queries / "page.html").write_bytes(b"<html>not an image</html>")  # not an image suffix: not read
    (queries / "lies.jpg").write_bytes(b"<html>an HTML page named .jpg</html>")
    # Animated GIF: the first frame is a mirrored copy; CMYK JPEG: a copy in print colours.
    gif = io.BytesIO()
    ImageOps.mirror(Image.open(CUSTOMER_IMAGES[0]).convert("RGB")).save(gif, "GIF", save_all=True, append_images=[Image.open(UNRELATED_IMAGES[2]).convert("RGB")])
    (queries / "animated.gif").write_bytes(gif.getvalue())
    (queries / "print.jpg").write_bytes(encode(Image.open(CUSTOMER_IMAGES[1]).convert("CMYK"), "JPEG"))
    exe = [sys.executable, "-m", "copyhunt.cli"]
    subprocess.run(exe + ["index", "build", "--images", str(refs), "--out", str(tmp_path / "idx")], check=True, capture_output=True)
    built = pq.read_table(tmp_path / "idx" / "references.parquet").to_pandas()
    assert built.set_index("reference_id").loc["broken", "error"].startswith("corrupt-image")
    proc = subprocess.run(exe + ["match", "--index", str(tmp_path / "idx"), "--images", str(queries), "--out", str(tmp_path / "m.parquet")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = pq.read_table(tmp_path / "m.parquet").to_pandas()
    assert {"query", "reference_id", "score", "query_x0", "query_y0", "query_x1", "query_y1", "ref_x0", "ref_y1"} <= set(m.columns)
    assert list(zip(m["query"], m["reference_id"])) == [("animated.gif", CUSTOMER_IMAGES[0].stem), ("gray-copy.png", CUSTOMER_IMAGES[2].stem),
                                                         ("print.jpg", CUSTOMER_IMAGES[1].stem)]
    assert m["score"].between(0.5, 1.0).all()
    assert m.set_index("query").loc["animated.gif", "mirrored"]
    errors = pq.read_table(tmp_path / "m.errors.parquet").to_pandas()
    assert dict(zip(errors["query"], errors["reason"])) == {"banner.png": "extreme-aspect", "lies.jpg": "not-an-image", "pixel.png": "too-small",
                                                            "truncated.jpg": "corrupt-image"}
    said = " ".join(proc.stderr.split())  # status goes to stderr; the console folds long lines
    assert "3 matches written" in said
    assert "4 images could not be used (corrupt-image 1, extreme-aspect 1, not-an-image 1, too-small 1)" in said, said


def encode(im, fmt):
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def test_matching_without_spark_is_deterministic(tmp_path):
    """The functions the Spark job runs give the same rows, in any order of the input, and in
    batches that cut images in two (as Arrow batches of a partition do)."""
    from copyhunt.matching import match_batches, match_frame

    blobs = LocalBlobStore(tmp_path / "blobs")
    entries = []
    for i, path in enumerate(CUSTOMER_IMAGES[:5]):
        data = path.read_bytes()
        sha = blobs.put(data)
        # The last reference has no stored features (an older index): the verifier describes it.
        store = features_store(tmp_path / ("index" if i < 4 else "elsewhere"))
        for wh in describe_reference(data, sha, 10**8, store):
            entries.append({"customer_id": "cust", "image_id": path.stem, "ref_sha256": sha, "window": wh.window, "mirrored": wh.mirrored,
                            "x0": wh.x0, "y0": wh.y0, "x1": wh.x1, "y1": wh.y1, "phash": wh.phash})
    build_index(pd.DataFrame(entries, columns=ENTRY_COLUMNS), tmp_path / "index", shard_size=100)
    shas = []
    for i, path in enumerate(CUSTOMER_IMAGES[:5] + UNRELATED_IMAGES[:3]):
        im = Image.open(path).convert("RGB")
        shas.append(blobs.put(jpeg(ImageOps.mirror(im) if i % 2 else im.crop((0, 0, im.width * 3 // 4, im.height)))))
    rows = [row for _, found, _ in fingerprint_batch((str(blobs.root), shas, 10**8)) for row in found]
    fps = pd.DataFrame(rows, columns=FINGERPRINT_COLUMNS)
    params = MatchParams(index_dir=str(tmp_path / "index"), index_version=None, query_blobs=str(blobs.root), ref_blobs=str(blobs.root))
    first = match_frame(fps, params)
    again = match_frame(fps.sample(frac=1.0, random_state=3), params)
    assert sorted(first["image_id"]) == sorted(p.stem for p in CUSTOMER_IMAGES[:5])
    cols = list(first.columns)
    pd.testing.assert_frame_equal(first.sort_values(cols).reset_index(drop=True), again.sort_values(cols).reset_index(drop=True))
    # A damaged features file (a truncated write, a bad disk block) costs a new description of
    # that reference, not the run: the same matches. In a fresh process, as a new Spark worker.
    store = features_store(tmp_path / "index")
    damaged = store.path(blobs.put(CUSTOMER_IMAGES[0].read_bytes()))
    damaged.write_bytes(damaged.read_bytes()[:50])
    script = textwrap.dedent("""
        import pickle, sys
        from copyhunt.matching import match_frame
        fps, params = pickle.load(open(sys.argv[1], "rb"))
        pickle.dump(match_frame(fps, params), open(sys.argv[2], "wb"))
    """)
    pickle.dump((fps, params), open(tmp_path / "in.pkl", "wb"))
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "in.pkl"), str(tmp_path / "out.pkl")], check=True)
    repaired = pickle.load(open(tmp_path / "out.pkl", "rb"))
    pd.testing.assert_frame_equal(first.sort_values(cols).reset_index(drop=True), repaired.sort_values(cols).reset_index(drop=True))
    by_image = fps.sort_values("image_sha256", kind="mergesort").reset_index(drop=True)
    for size in (7, 40, len(by_image)):  # 7 rows: every image spans several batches
        batches = [by_image.iloc[i:i + size] for i in range(0, len(by_image), size)] + [by_image.iloc[:0]]
        batched = pd.concat(list(match_batches(iter(batches), params)), ignore_index=True)
        pd.testing.assert_frame_equal(first.sort_values(cols).reset_index(drop=True), batched.sort_values(cols).reset_index(drop=True))


def _entries_of(gray):
    import numpy as np

    from copyhunt.fingerprint import reference_hashes

    hashes = reference_hashes(gray)
    return {"window": np.array([x.window for x in hashes], dtype=object), "mirrored": np.array([x.mirrored for x in hashes]),
            "x0": np.array([x.x0 for x in hashes]), "y0": np.array([x.y0 for x in hashes]), "x1": np.array([x.x1 for x in hashes]),
            "y1": np.array([x.y1 for x in hashes]), "phash": np.array([x.phash for x in hashes], dtype=np.int64)}


def _closest_pair(query_hashes, entries):
    """The closest (query window, reference entry) pair of the same kind, as the index would find it."""
    import numpy as np

    from copyhunt.fingerprint import hamming_many
    from copyhunt.matching import same_kind

    best = None
    for q in query_hashes:
        if q.window == "rectified" or q.window.startswith("blob-t"):  # boxes of a view of the image
            continue
        kinds = same_kind(pd.Series([q.window] * len(entries["window"])), pd.Series(entries["window"]))
        d = np.where(kinds, hamming_many(q.phash, entries["phash"]), 99)
        i = int(d.argmin())
        if best is None or d[i] < best[0]:
            best = (int(d[i]), q, i)
    return best


def test_second_opinion_maps_other_windows_onto_copies_and_not_onto_other_pictures():
    """The reference's other windows, put where a window pair says, hash alike on copies (cropped,
    mirrored, turned) and not on unrelated photos paired with it by their closest windows."""
    from copyhunt.fingerprint import HASH_WORKING_SIZE, pair_orientation, query_hashes
    from copyhunt.imaging import load_gray
    from copyhunt.matching import MatchParams, mapped_window_distance, second_opinion

    bits = MatchParams("", None, "", "").second_opinion_bits
    for path in CUSTOMER_IMAGES[:3]:
        src = Image.open(path).convert("RGB")
        w, h = src.size
        entries = _entries_of(load_gray(jpeg(src), working_size=HASH_WORKING_SIZE)[0])
        copies = {"crop": src.crop((int(w * .2), int(h * .1), int(w * .95), int(h * .85))), "mirror": ImageOps.mirror(src),
                  "turned": src.rotate(90, expand=True), "turned crop": src.crop((int(w * .1), int(h * .15), int(w * .9), int(h * .95))).rotate(-90, expand=True)}
        others = {"unrelated": Image.open(UNRELATED_IMAGES[1]).convert("RGB"), "other customer image": Image.open(CUSTOMER_IMAGES[5]).convert("RGB")}
        for label, im in {**copies, **others}.items():
            gray = load_gray(jpeg(im), working_size=HASH_WORKING_SIZE)[0]
            _, q, i = _closest_pair(query_hashes(gray), entries)
            args = (gray, entries, (q.x0, q.y0, q.x1, q.y1), (entries["x0"][i], entries["y0"][i], entries["x1"][i], entries["y1"][i]),
                    *pair_orientation(q.window, entries["window"][i], bool(entries["mirrored"][i])), entries["window"][i])
            distance = mapped_window_distance(*args)
            if label in copies:
                assert distance is not None and distance <= bits, (path.name, label, distance)
                assert second_opinion(*args, q.window, bits) is True
            else:
                assert distance is None or distance > bits, (path.name, label, distance)


def test_only_windows_of_the_same_kind_pair_up():
    from copyhunt.matching import same_kind

    query = pd.Series(["blob03", "blob03", "full", "grid3x3-12", "paste0", "rectified", "grid2x2-01"])
    ref = pd.Series(["blob11", "full", "full-rot90", "full", "blob02", "full", "blob00"])
    assert same_kind(query, ref).tolist() == [True, False, True, True, False, True, False]


def test_copies_the_new_windows_find_are_matched_and_located(tmp_path):
    """Through the functions the Spark job runs, against an index of real references: a turned and
    mirrored crop (canonical blob orientation), a crop tilted by 11 degrees and cut inside its
    outline (tilt view), a keystoned copy on black (plain-background view), a cell of a 4x4
    collage, and a copy tilted by 12 degrees of a reference whose own edges lean (the
    reference's tilt view); each found as its reference with the matched region where the copy
    is, and unrelated photos under the same edits matched to nothing."""
    import math

    import cv2
    import numpy as np

    from copyhunt.fingerprint import image_tilt
    from copyhunt.imaging import load_gray
    from copyhunt.matching import match_frame

    blobs = LocalBlobStore(tmp_path / "blobs")
    store = features_store(tmp_path / "index")
    refs = {"bridge": UNRELATED_IMAGES[-2], **{p.stem: p for p in CUSTOMER_IMAGES[:6]}}
    entries = []
    for name, path in refs.items():
        data = path.read_bytes()
        sha = blobs.put(data)
        for wh in describe_reference(data, sha, 10**8, store):
            entries.append({"customer_id": "cust", "image_id": name, "ref_sha256": sha, "window": wh.window, "mirrored": wh.mirrored,
                            "x0": wh.x0, "y0": wh.y0, "x1": wh.x1, "y1": wh.y1, "phash": wh.phash})
    build_index(pd.DataFrame(entries, columns=ENTRY_COLUMNS), tmp_path / "index", shard_size=10_000)
    leaning = max(CUSTOMER_IMAGES[:6], key=lambda p: abs(image_tilt(load_gray(p.read_bytes(), working_size=320)[0])))
    assert abs(image_tilt(load_gray(leaning.read_bytes(), working_size=320)[0])) >= 3  # a reference whose edges lean

    def tilted_inside(im, degrees):
        turned = im.rotate(degrees, Image.Resampling.BICUBIC, expand=True)
        w, h = im.size
        a = math.radians(abs(degrees))
        k = 0.98 * min(w / (w * math.cos(a) + h * math.sin(a)), h / (w * math.sin(a) + h * math.cos(a)))
        cx, cy = turned.width / 2, turned.height / 2
        return turned.crop((round(cx - w * k / 2), round(cy - h * k / 2), round(cx + w * k / 2), round(cy + h * k / 2)))

    def keystoned(im):
        w, h = im.size
        quad = np.float32([[0.1 * w, 0.04 * h], [0.95 * w, 0.12 * h], [0.88 * w, 0.96 * h], [0.03 * w, 0.86 * h]])
        m = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), quad)
        return Image.fromarray(cv2.warpPerspective(np.asarray(im), m, (w, h), borderValue=(0, 0, 0)))

    def collage_cell(im, others):
        cell, gap = (160, 120), 6
        canvas = Image.new("RGB", (4 * cell[0] + 5 * gap, 4 * cell[1] + 5 * gap), "white")
        for i in range(16):
            tile = im if i == 6 else Image.open(others[i % len(others)]).convert("RGB")
            canvas.paste(tile.resize(cell), (gap + (i % 4) * (cell[0] + gap), gap + (i // 4) * (cell[1] + gap)))
        return canvas

    def turned_crop(im):
        w, h = im.size
        return ImageOps.mirror(im.crop((int(w * 0.1), int(h * 0.05), int(w * 0.85), int(h * 0.9))).rotate(90, expand=True))

    edits = {"turned crop": turned_crop, "tilted crop": lambda im: tilted_inside(im, 11), "keystoned": keystoned,
             "collage cell": lambda im: collage_cell(im, UNRELATED_IMAGES[1:4])}
    copies = {f"{label} of bridge": (edit(Image.open(refs["bridge"]).convert("RGB")), "bridge") for label, edit in edits.items()}
    copies["keystoned potd"] = (keystoned(Image.open(CUSTOMER_IMAGES[2]).convert("RGB")), CUSTOMER_IMAGES[2].stem)
    copies["collage cell potd"] = (collage_cell(Image.open(CUSTOMER_IMAGES[3]).convert("RGB"), UNRELATED_IMAGES[1:4]), CUSTOMER_IMAGES[3].stem)
    copies["tilted copy of a leaning reference"] = (tilted_inside(Image.open(leaning).convert("RGB"), -12), leaning.stem)
    others = {f"{label} of an unrelated photo": (edit(Image.open(UNRELATED_IMAGES[4]).convert("RGB")), None) for label, edit in edits.items()}
    sha_of = {label: blobs.put(jpeg(im)) for label, (im, _) in {**copies, **others}.items()}
    rows = [row for _, found, _ in fingerprint_batch((str(blobs.root), sorted(set(sha_of.values())), 10**8)) for row in found]
    params = MatchParams(index_dir=str(tmp_path / "index"), index_version=None, query_blobs=str(blobs.root), ref_blobs=str(blobs.root))
    matches = match_frame(pd.DataFrame(rows, columns=FINGERPRINT_COLUMNS), params)
    found = {label: set(matches[matches["image_sha256"] == sha]["image_id"]) for label, sha in sha_of.items()}
    for label, (_, ref) in {**copies, **others}.items():
        assert found[label] == ({ref} if ref else set()), (label, found[label])
    cell = matches[(matches["image_sha256"] == sha_of["collage cell of bridge"])].iloc[0]
    cw, ch = 4 * 160 + 30, 4 * 120 + 30
    truth = ((6 + 2 * 166) / cw, (6 + 1 * 126) / ch, (6 + 2 * 166 + 160) / cw, (6 + 1 * 126 + 120) / ch)
    assert np.abs(np.array([cell.query_x0, cell.query_y0, cell.query_x1, cell.query_y1]) - truth).max() < 0.03
    # Each through the windows meant for it.
    window_of = {label: matches[matches["image_sha256"] == sha]["query_window"].iloc[0] for label, sha in sha_of.items() if found[label]}
    assert window_of["keystoned of bridge"] == window_of["keystoned potd"] == "rectified"
    assert window_of["collage cell of bridge"].startswith("grid4x4-") and window_of["collage cell potd"].startswith("grid4x4-")
    assert window_of["tilted crop of bridge"].startswith("blob-t@")
    leaning_match = matches[matches["image_sha256"] == sha_of["tilted copy of a leaning reference"]].iloc[0]
    assert leaning_match["ref_window"].startswith("blob-t@")  # the reference's own tilt view
    turned = matches[matches["image_sha256"] == sha_of["turned crop of bridge"]].iloc[0]
    assert bool(turned.mirrored)
