"""Copy the real photos the benchmarks and tests use from a shared image folder into the repository.

Run once by a developer (the copies are committed under ``assets/images``)::

    python -m copyhunt.bench.prepare_assets /path/to/shared/data/images assets/images

Large files are downsized so the repository stays small: the bridge edits, its rotations and
flips to 800 px wide, the colour-mode copies to 640 px, the EXIF-orientation photos to a quarter
of their 4032x3024 pixels. A downsized copy keeps its format, its PIL mode and, for the EXIF
photos, the EXIF block with the orientation tag, so each file still exercises what it was made
for. Files already small enough are copied byte for byte.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PIL import Image

# (source folder, destination folder, longest side after downsizing)
FOLDERS = [
    ("threatexchange-bridge-mods", "bridge-mods", 800),
    ("threatexchange-dih", "dih", 800),
    ("threatexchange-modes", "modes", 640),
    ("threatexchange-exif-rotn", "exif-rotn", 1008),
]


def downsized_copy(src: Path, dst: Path, longest: int) -> None:
    """Copy ``src`` to ``dst``; when larger than ``longest`` px, resize in its own mode and format."""
    with Image.open(src) as im:
        if max(im.size) <= longest:
            shutil.copyfile(src, dst)
            return
        scale = longest / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        fmt = im.format
        exif = im.info.get("exif")
        im.load()
        if im.mode == "1":  # resampling a bilevel image needs grey levels; dither back like the original
            small = im.convert("L").resize(size, Image.Resampling.LANCZOS).convert("1")
        elif im.mode in ("P", "PA"):
            small = im.resize(size, Image.Resampling.NEAREST)
        else:
            small = im.resize(size, Image.Resampling.LANCZOS)
    options: dict = {}
    if fmt == "JPEG":
        options = {"quality": 92}
        if exif:
            options["exif"] = exif  # keeps the orientation tag: the pixels stay stored sideways
    elif fmt == "WEBP":
        options = {"quality": 90}
    small.save(dst, fmt, **options)


def prepare(shared: Path, assets: Path) -> list[Path]:
    written = []
    for src_name, dst_name, longest in FOLDERS:
        out = assets / dst_name
        out.mkdir(parents=True, exist_ok=True)
        for src in sorted((shared / src_name).iterdir()):
            if src.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"):
                downsized_copy(src, out / src.name, longest)
                written.append(out / src.name)
    return written


if __name__ == "__main__":
    for path in prepare(Path(sys.argv[1]), Path(sys.argv[2])):
        print(path)
