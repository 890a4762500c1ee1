"""The robustness suite: real photos from ``assets/images``, the real edits shipped with them, and
copies generated from them with a fixed seed.

References are the ten Wikimedia pictures of the day and the bridge photo. Queries are

* the real edits of the bridge photo: ThreatExchange's human edits (blur, sharpen, contrast,
  saturation, shrink, square resizes), its rotations and flips, and the same photo saved in many
  PIL colour modes and formats;
* generated copies of every reference, ``VARIANTS`` of each transform class (crop positions,
  padding colours, collage neighbours and so on differ between variants);
* distractors: unrelated photos (LabelMe, the pen-and-coaster photo, two desk photos stored with
  EXIF orientations) under the same generated transforms. Any match of a distractor is false.

Everything is derived from the files and the seed, so the same seed writes the same bytes.
"""

from __future__ import annotations

import io
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from copyhunt.lake import atomic_write_bytes

SUITE_SEED = 20261122  # the published figures; calibration is fitted on a different seed
CALIBRATION_SEED = 7
VARIANTS = 3
DISTRACTOR_VARIANTS = 2
JPEG_QUALITY = 90

REFERENCES = {
    **{f"potd-image{i}": f"wikimedia-potd/image{i}.jpg" for i in range(1, 11)},
    "bridge": "dih/bridge-1-original.jpg",
}
DISTRACTORS = {
    **{f"labelme-{n}": f"labelme/{n}.jpg" for n in ("q0003", "q0004", "q0122", "q0291", "q0746", "q1050", "q2821")},
    "pen-and-coaster": "threatexchange-misc-pen-and-coaster.png",
    # Two different shots of one desk, stored sideways with an EXIF orientation tag.
    "desk-rotn-1": "exif-rotn/exif-rotn-1.jpg",
    "desk-rotn-6": "exif-rotn/exif-rotn-6.jpg",
}
# The real edits of the bridge reference shipped in assets/images, by transform class.
REAL_EDITS = {
    "real: human edits": ("bridge-mods", "aaa-orig"),
    "real: rotations and flips": ("dih", "bridge-1-original"),
    "real: colour modes and formats": ("modes", "original"),
}


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class SuiteQuery:
    file: str  # file name in the queries folder
    transform: str  # transform class
    reference_id: str | None  # the reference it is a copy of; None for distractors
    # Where the copy is, relative (x0, y0, x1, y1), when the transform moves it: the part of the
    # query showing the reference, and the part of the reference shown.
    query_box: Box | None = None
    ref_box: Box | None = None


@dataclass(frozen=True)
class Generated:
    image: Image.Image
    query_box: Box | None = None
    ref_box: Box | None = None


def _rel(box: tuple[float, float, float, float], size: tuple[int, int]) -> Box:
    w, h = size
    return (round(box[0] / w, 4), round(box[1] / h, 4), round(box[2] / w, 4), round(box[3] / h, 4))


def open_upright(path: Path) -> Image.Image:
    """RGB pixels as displayed: EXIF orientation applied, transparency over white."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P", "PA"):
            rgba = im.convert("RGBA")
            base = Image.new("RGB", rgba.size, (255, 255, 255))
            base.paste(rgba, mask=rgba.getchannel("A"))
            return base
        return im.convert("RGB")


def _distractor_photo(path: Path) -> Image.Image:
    im = open_upright(path)
    if im.width <= 300:  # the LabelMe regression photos carry thin dark frames; keep the picture
        im = im.crop((8, 8, im.width - 8, im.height - 8))
    if max(im.size) > 800:
        im.thumbnail((800, 800), Image.Resampling.LANCZOS)
    return im


# ---- generated transforms ------------------------------------------------------------------------
Transform = Callable[[Image.Image, random.Random, int, "Pool"], Image.Image]


class Pool:
    """Unrelated photos for collage neighbours and paste backgrounds."""

    def __init__(self, photos: list[Image.Image]):
        self.photos = photos

    def pick(self, rng: random.Random, exclude: Image.Image | None = None) -> Image.Image:
        choices = [p for p in self.photos if p is not exclude]
        return rng.choice(choices)


def _scale(factor: float) -> Transform:
    def run(im, rng, variant, pool):
        size = (max(1, round(im.width * factor)), max(1, round(im.height * factor)))
        return im.resize(size, Image.Resampling.LANCZOS if factor < 1 else Image.Resampling.BICUBIC)

    return run


def _hue_shift(im, rng, variant, pool):
    degrees = (60, 120, 180, 240, 300)[variant % 5]
    h, s, v = im.convert("HSV").split()
    shift = round(degrees / 360 * 256)
    h = h.point(lambda x: (x + shift) % 256)
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def _sepia(im, rng, variant, pool):
    return ImageOps.colorize(ImageOps.grayscale(im), black="#2b1d0e", white="#fff3dc", mid="#a27c56")


def _contrast_brightness(im, rng, variant, pool):
    contrast = rng.choice((0.6, 0.75, 1.3, 1.5))
    brightness = rng.choice((0.7, 0.8, 1.25, 1.4))
    return ImageEnhance.Brightness(ImageEnhance.Contrast(im).enhance(contrast)).enhance(brightness)


def _padding(im, rng, variant, pool):
    fill = ("white", "black")[variant % 2]
    w, h = im.size
    kind = rng.choice(("frame", "letterbox", "pillarbox"))
    if kind == "frame":  # 10% of each side on every edge: 20% more width and height
        border = (round(0.1 * w), round(0.1 * h), round(0.1 * w), round(0.1 * h))
    elif kind == "letterbox":
        border = (0, round(0.1 * h), 0, round(0.1 * h))
    else:
        border = (round(0.1 * w), 0, round(0.1 * w), 0)
    out = ImageOps.expand(im, border=border, fill=fill)
    return Generated(out, _rel((border[0], border[1], border[0] + w, border[1] + h), out.size))


def _stretch(im, rng, variant, pool):
    w, h = im.size
    return im.resize((round(w * 1.3), h) if variant % 2 == 0 else (w, round(h * 1.3)), Image.Resampling.BICUBIC)


def _rotate(im, rng, variant, pool):
    angle = 5 if variant % 2 == 0 else -5
    if variant % 3 == 2:  # rotated, then cropped to the largest upright rectangle inside
        rotated = im.rotate(angle, Image.Resampling.BICUBIC, expand=True)
        w, h = im.size
        a = math.radians(abs(angle))
        # The largest rectangle of the original's aspect that fits inside the rotated one.
        k = min(w / (w * math.cos(a) + h * math.sin(a)), h / (w * math.sin(a) + h * math.cos(a)))
        cw, ch = w * k * 0.99, h * k * 0.99
        cx, cy = rotated.width / 2, rotated.height / 2
        return rotated.crop((round(cx - cw / 2), round(cy - ch / 2), round(cx + cw / 2), round(cy + ch / 2)))
    fill = ((255, 255, 255), (0, 0, 0))[variant % 2]
    return im.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=fill)


def _crop(keep_area: float) -> Transform:
    def run(im, rng, variant, pool):
        side = math.sqrt(keep_area)
        w, h = round(im.width * side), round(im.height * side)
        x0, y0 = rng.randint(0, im.width - w), rng.randint(0, im.height - h)
        return Generated(im.crop((x0, y0, x0 + w, y0 + h)), ref_box=_rel((x0, y0, x0 + w, y0 + h), im.size))

    return run


CAPTIONS = ("Photo of the day", "Breaking: what we know so far", "Summer sale -30%", "Travel tips for 2026", "Read more on our blog")


def _overlay(im, rng, variant, pool):
    out = im.convert("RGBA")
    w, h = out.size
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if variant % 2 == 0:  # caption bar along the bottom
        bar = max(12, round(h * 0.14))
        draw.rectangle((0, h - bar, w, h), fill=(0, 0, 0, 150))
        font = ImageFont.load_default(size=max(8, round(bar * 0.6)))
        draw.text((round(w * 0.03), h - bar + round(bar * 0.18)), rng.choice(CAPTIONS), font=font, fill=(255, 255, 255, 235))
    else:  # semi-transparent watermark across the middle
        font = ImageFont.load_default(size=max(10, round(min(w, h) * 0.16)))
        text = rng.choice(("© stockphoto", "SAMPLE", "© copyhunt demo", "PREVIEW"))
        box = draw.textbbox((0, 0), text, font=font)
        tx, ty = (w - (box[2] - box[0])) / 2, (h - (box[3] - box[1])) / 2
        draw.text((tx, ty), text, font=font, fill=(255, 255, 255, 110), stroke_width=1, stroke_fill=(0, 0, 0, 60))
    return Image.alpha_composite(out, layer).convert("RGB")


def _collage(n: int) -> Transform:
    def run(im, rng, variant, pool):
        cell = (280, 210) if n == 2 else (200, 150)
        gap = rng.choice((0, 4, 8))
        background = rng.choice(((255, 255, 255), (250, 250, 250), (30, 30, 30)))
        canvas = Image.new("RGB", (n * cell[0] + (n + 1) * gap, n * cell[1] + (n + 1) * gap), background)
        slot = rng.randrange(n * n)
        box = (0, 0, 0, 0)
        for i in range(n * n):
            x, y = gap + (i % n) * (cell[0] + gap), gap + (i // n) * (cell[1] + gap)
            if i == slot:
                tile = Image.new("RGB", cell, background)
                fitted = ImageOps.contain(im, cell, Image.Resampling.LANCZOS)
                ox, oy = (cell[0] - fitted.width) // 2, (cell[1] - fitted.height) // 2
                tile.paste(fitted, (ox, oy))
                box = (x + ox, y + oy, x + ox + fitted.width, y + oy + fitted.height)
            else:
                tile = ImageOps.fit(pool.pick(rng, exclude=im), cell, Image.Resampling.LANCZOS)
            canvas.paste(tile, (x, y))
        return Generated(canvas, _rel(box, canvas.size))

    return run


def _paste(im, rng, variant, pool):
    background = pool.pick(rng, exclude=im)
    bw = 640
    bh = max(240, round(background.height * bw / background.width))
    canvas = background.resize((bw, bh), Image.Resampling.BICUBIC)
    pw = round(bw * 0.4)
    ph = max(1, round(im.height * pw / im.width))
    if ph > bh * 0.9:  # tall photos: 40% of the height instead
        ph = round(bh * 0.4)
        pw = max(1, round(im.width * ph / im.height))
    piece = im.resize((pw, ph), Image.Resampling.LANCZOS)
    x, y = rng.randint(0, bw - pw), rng.randint(0, bh - ph)
    canvas.paste(piece, (x, y))
    return Generated(canvas, _rel((x, y, x + pw, y + ph), canvas.size))


TRANSFORMS: dict[str, Transform] = {
    "scale 0.25": _scale(0.25),
    "scale 1.5": _scale(1.5),
    "jpeg quality 30": lambda im, rng, variant, pool: im,  # the encoder does it, see _encode
    "grayscale": lambda im, rng, variant, pool: ImageOps.grayscale(im).convert("RGB"),
    "sepia": _sepia,
    "hue shift": _hue_shift,
    "contrast and brightness": _contrast_brightness,
    "padding 20%": _padding,
    "stretch 1.3": _stretch,
    "horizontal flip": lambda im, rng, variant, pool: ImageOps.mirror(im),
    "rotation 5°": _rotate,
    "crop 70%": _crop(0.70),
    "crop 50%": _crop(0.50),
    "caption or watermark": _overlay,
    "collage 2x2": _collage(2),
    "collage 3x3": _collage(3),
    "pasted at 40%": _paste,
}


def _encode(im: Image.Image, transform: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=30 if transform == "jpeg quality 30" else JPEG_QUALITY, optimize=False, progressive=False)
    return buf.getvalue()


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


@dataclass(frozen=True)
class Suite:
    references: Path  # folder: one file per reference, named <reference_id>.<ext>
    queries: Path  # folder of query images
    truth: list[SuiteQuery]

    def classes(self) -> list[str]:
        return list(dict.fromkeys(q.transform for q in self.truth))


def build_suite(assets: Path, out: Path, seed: int = SUITE_SEED, variants: int = VARIANTS, distractor_variants: int = DISTRACTOR_VARIANTS,
                classes: list[str] | None = None) -> Suite:
    """Write references and queries under ``out`` and return the ground truth."""
    assets, out = Path(assets), Path(out)
    refs_dir, queries_dir = out / "references", out / "queries"
    refs_dir.mkdir(parents=True, exist_ok=True)
    queries_dir.mkdir(parents=True, exist_ok=True)
    for ref_id, rel in REFERENCES.items():
        src = assets / rel
        atomic_write_bytes(refs_dir / f"{ref_id}{src.suffix.lower()}", src.read_bytes())

    truth: list[SuiteQuery] = []

    def add(name: str, data: bytes, transform: str, reference_id: str | None, made: Generated | None = None) -> None:
        atomic_write_bytes(queries_dir / name, data)
        boxes = (made.query_box, made.ref_box) if made is not None and reference_id is not None else (None, None)
        truth.append(SuiteQuery(name, transform, reference_id, *boxes))

    wanted = classes or list(REAL_EDITS) + list(TRANSFORMS)
    for transform, (folder, original) in REAL_EDITS.items():
        if transform not in wanted:
            continue
        for src in sorted((assets / folder).iterdir()):
            if src.stem != original and src.suffix.lower() in (".jpg", ".png", ".webp"):
                add(f"{folder}-{src.name}", src.read_bytes(), transform, "bridge")

    references = {ref_id: open_upright(assets / rel) for ref_id, rel in REFERENCES.items()}
    distractors = {d_id: _distractor_photo(assets / rel) for d_id, rel in DISTRACTORS.items()}
    pool = Pool(list(distractors.values()))
    for transform, fn in TRANSFORMS.items():
        if transform not in wanted:
            continue
        for kind, photos, n in (("copy", references, variants), ("distractor", distractors, distractor_variants)):
            for photo_id, photo in photos.items():
                for v in range(n):
                    rng = random.Random(f"{seed}:{transform}:{photo_id}:{v}")
                    made = fn(photo, rng, v, pool)
                    made = made if isinstance(made, Generated) else Generated(made)
                    add(f"{_slug(transform)}-{photo_id}-{v}.jpg", _encode(made.image, transform), transform, photo_id if kind == "copy" else None, made)
    truth.sort(key=lambda q: q.file)
    atomic_write_bytes(out / "truth.json", json.dumps([asdict(q) for q in truth], indent=1).encode())
    return Suite(refs_dir, queries_dir, truth)
