"""The fingerprint's numba kernels index arrays without checking (an index out of range reads or
writes whatever memory is there; numpy would have raised). Here every kernel runs with numba's
bounds checking on, on real photos, every colour mode and orientation in the assets, tiny and
extreme-aspect images, and the suite's crops, collages and pasted pictures: nothing may raise, and
the rows must be those the unchecked kernels give."""

import json
import os
import subprocess
import sys

from conftest import IMAGES, REPO
from copyhunt.bench.suite import build_suite

ROWS_OF = """
import json, sys
from pathlib import Path
from copyhunt.fingerprint import HASH_WORKING_SIZE, fingerprint_image, reference_hashes
from copyhunt.imaging import BadImage, load_gray
out = {}
for path in sys.argv[1:]:
    data = Path(path).read_bytes()
    rows, reason = fingerprint_image("x", data, 64_000_000)
    try:
        refs = [list(h) for h in reference_hashes(load_gray(data, 64_000_000, HASH_WORKING_SIZE)[0])]
    except BadImage as exc:
        refs = exc.reason
    out[path] = [rows, reason, refs]
print(json.dumps(out))
"""


def _edge_cases(tmp_path):
    from PIL import Image

    made = []
    for name, size in (("tiny", (16, 16)), ("thin", (400, 50)), ("narrow", (30, 200)), ("odd", (97, 131)), ("flat", (300, 200))):
        im = Image.new("L", size, 200) if name == "flat" else Image.effect_noise(size, 60).convert("L")
        path = tmp_path / f"{name}.png"
        im.save(path)
        made.append(path)
    return made


def test_kernels_stay_inside_their_arrays(tmp_path):
    suite = build_suite(IMAGES, tmp_path / "suite", seed=3, variants=1, distractor_variants=0,
                        classes=["crop 50%", "collage 3x3", "pasted at 40%", "padding 20%", "rotation 5°", "scale 0.25"])
    paths = sorted(p for p in IMAGES.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".webp", ".bmp"))
    paths += sorted(suite.queries.iterdir()) + _edge_cases(tmp_path)
    assert len(paths) > 60
    env = {**os.environ, "PYTHONPATH": str(REPO / "include")}
    unchecked = _rows_of(paths, {**env, "NUMBA_BOUNDSCHECK": "0"})
    checked = _rows_of(paths, {**env, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")})
    for path in paths:
        assert checked[str(path)] == unchecked[str(path)], path.name


def _rows_of(paths, env) -> dict:
    proc = subprocess.run([sys.executable, "-c", ROWS_OF, *map(str, paths)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)
