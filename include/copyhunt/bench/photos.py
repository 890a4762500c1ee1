"""The photos of the held-out robustness suite, their roles and their fixed tuning / held-out split.

Every distinct real photo in ``assets/images`` is listed once (the bridge's human edits, rotations
and colour modes are edits of one photo, not photos). A *reference* is registered in the suite's
index; a *distractor* never is, so any match of a query made from it alone is false.

Each photo belongs to one part, ``tuning`` or ``held-out``, chosen by a hash of its name
(``part_by_hash``) and recorded in ``assets/images/robustness-split.json``: the file is what the
suite reads, so adding a photo (its part again by the hash) never moves the others. Thresholds and
operating points are to be chosen on the tuning part only; the held-out part reports generalisation.

Called from ``bench.heldout`` (the suite and its report) and the tests.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

SPLIT_FILE = "robustness-split.json"  # in assets/images
PARTS = ("held-out", "tuning")
SPLIT_SALT = "copyhunt robustness split v1"  # a new salt would reshuffle every photo: never change it


@dataclass(frozen=True)
class Photo:
    name: str
    path: str  # relative to assets/images
    role: str  # "reference" or "distractor"


PHOTOS: tuple[Photo, ...] = (
    *(Photo(f"potd-image{i}", f"wikimedia-potd/image{i}.jpg", "reference") for i in range(1, 11)),
    Photo("bridge", "dih/bridge-1-original.jpg", "reference"),
    Photo("grace-hopper", "packages/grace-hopper.jpg", "reference"),
    Photo("pywt-ascent", "packages/pywt-ascent.png", "reference"),
    Photo("pywt-camera", "packages/pywt-camera.png", "reference"),
    *(Photo(f"labelme-{n}", f"labelme/{n}.jpg", "distractor") for n in ("q0003", "q0004", "q0122", "q0291", "q0746", "q1050", "q2821")),
    Photo("pen-and-coaster", "threatexchange-misc-pen-and-coaster.png", "distractor"),
    # Four shots of one desk, stored with EXIF orientations (their upright pHashes differ by 22-36 bits).
    *(Photo(f"desk-rotn-{n}", f"exif-rotn/exif-rotn-{n}.jpg", "distractor") for n in (1, 3, 6, 8)),
)


def part_by_hash(name: str) -> str:
    """The part a photo's name hashes to: the rule that placed every photo in the split file."""
    return PARTS[hashlib.sha256(f"{SPLIT_SALT}:{name}".encode()).digest()[0] % 2]


def split_json(photos: tuple[Photo, ...] = PHOTOS) -> bytes:
    """The split file's content for ``photos`` (what ``python -m copyhunt.bench.photos`` writes)."""
    rows = {p.name: {"part": part_by_hash(p.name), "role": p.role, "path": p.path} for p in photos}
    return (json.dumps({"salt": SPLIT_SALT, "photos": dict(sorted(rows.items()))}, indent=1) + "\n").encode()


def read_split(assets: Path) -> dict[str, str]:
    """Photo name -> part, from the recorded split file."""
    recorded = json.loads((Path(assets) / SPLIT_FILE).read_text())
    return {name: row["part"] for name, row in recorded["photos"].items()}


def photos_of(assets: Path, part: str, role: str) -> list[Photo]:
    split = read_split(assets)
    missing = [p.name for p in PHOTOS if p.name not in split]
    if missing:
        raise ValueError(f"photos missing from {SPLIT_FILE}: {missing}; run python -m copyhunt.bench.photos assets/images")
    return [p for p in PHOTOS if split[p.name] == part and p.role == role]


if __name__ == "__main__":  # add new photos to the split file: python -m copyhunt.bench.photos assets/images
    import sys

    target = Path(sys.argv[1]) / SPLIT_FILE
    old = json.loads(target.read_text())["photos"] if target.exists() else {}
    new = json.loads(split_json())
    moved = [n for n, row in old.items() if n in new["photos"] and new["photos"][n]["part"] != row["part"]]
    if moved:
        raise SystemExit(f"refusing to move recorded photos: {moved}")
    target.write_bytes(split_json())
    print(f"wrote {target}")
