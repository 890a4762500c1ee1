"""Edit classes with randomly drawn parameters, for the held-out robustness suite (``bench.heldout``).

Each class is a dictionary of parameter ranges (``RANGES``) and a function that applies one draw
to a photo. ``draw(name, rng)`` draws every parameter of a class from its ranges: a ``(lo, hi)``
pair of ints is an inclusive integer range, of floats a uniform one, a tuple of other values a
choice. ``apply(name, photo, params, pool)`` makes the edited image and, when the copy moves, where
it is (``Generated`` boxes, relative to the image). The same rng state gives the same parameters
and the same pixels, so a seed reproduces a query exactly.

Chains draw three different steps from ``CHAIN_STEPS``, each with its own ranges.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

Box = tuple[float, float, float, float]
FILLS = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128), "off-white": (246, 244, 240)}
TEXTS = ("© stockphoto", "SAMPLE", "PREVIEW", "© copyhunt demo", "not for reuse")
CAPTIONS = ("when the build passes on Friday", "nobody:", "me explaining my holiday photos", "top text", "bottom text",
            "this is fine", "Breaking: what we know so far")
PARAGRAPH = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. Sed do eiusmod tempor incididunt ut labore et dolore magna "
             "aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.")

RANGES: dict[str, dict[str, tuple]] = {
    "grid": {"cells": (2, 5), "gutter": (0, 12), "cell_fit": ("fitted", "contained", "cropped"), "cell_px": (90, 220),
             "cell_aspect": (0.75, 1.34), "slot": (0.0, 1.0), "centre_x": (0.0, 1.0), "centre_y": (0.0, 1.0),
             "background": ("white", "black", "off-white")},
    "crop": {"keep": (0.25, 0.90), "aspect": (-0.4, 0.4), "x": (0.0, 1.0), "y": (0.0, 1.0)},
    "turn, mirror and crop": {"turns": (0, 3), "mirror": (False, True), "keep": (0.5, 1.0), "x": (0.0, 1.0), "y": (0.0, 1.0)},
    "rotation": {"degrees": (-20.0, 20.0), "after": ("fill white", "fill black", "crop inside")},
    "perspective": {"tl_x": (0.0, 0.2), "tl_y": (0.0, 0.2), "tr_x": (0.0, 0.2), "tr_y": (0.0, 0.2),
                    "br_x": (0.0, 0.2), "br_y": (0.0, 0.2), "bl_x": (0.0, 0.2), "bl_y": (0.0, 0.2), "fill": ("white", "black", "grey")},
    "blur": {"radius": (1.0, 5.0)},
    "noise": {"sigma": (4.0, 30.0), "colour": (False, True)},
    "thumbnail": {"longest_px": (100, 320)},
    "embed": {"share": (0.15, 0.60), "x": (0.0, 1.0), "y": (0.0, 1.0), "canvas_px": (480, 1024)},
    "meme bars": {"top": (0.08, 0.25), "bottom": (0.0, 0.25), "bar": ("white", "black"), "caption": CAPTIONS},
    "letterbox": {"aspect": ("16:9", "1:1", "9:16", "4:5", "21:9"), "fill": ("blurred", "white", "black", "grey"), "margin": (0.02, 0.15)},
    "screenshot": {"share": (0.3, 0.6), "side": ("left", "right"), "page_px": (900, 1400), "chrome": (False, True), "y": (0.0, 1.0)},
    "tiled watermark": {"alpha": (40, 120), "font_px": (14, 40), "degrees": (0, 45), "text": TEXTS, "spacing": (1.3, 2.5)},
}
CHAIN_STEPS: dict[str, dict[str, tuple]] = {
    "crop": {"keep": (0.6, 0.9), "aspect": (-0.2, 0.2), "x": (0.0, 1.0), "y": (0.0, 1.0)},
    "hue shift": {"degrees": (20, 340)},
    "scale": {"factor": (0.3, 0.8)},
    "jpeg": {"quality": (30, 70)},
    "blur": {"radius": (0.5, 2.0)},
    "noise": {"sigma": (3.0, 12.0), "colour": (False, True)},
    "rotation": {"degrees": (-10.0, 10.0), "after": ("fill white", "crop inside")},
    "contrast": {"contrast": (0.6, 1.5), "brightness": (0.7, 1.3)},
    "mirror": {"mirror": (True,)},
    "vignette": {"strength": (0.2, 0.6)},
}
CHAIN = "chain of three"
CLASSES = (*RANGES, CHAIN)


@dataclass(frozen=True)
class Generated:
    image: Image.Image
    query_box: Box | None = None  # where the copy is in the query (moved copies)
    ref_box: Box | None = None  # the part of the photo kept (crops)


class Pool:
    """Unregistered photos for grid neighbours and embed backgrounds."""

    def __init__(self, photos: list[Image.Image], names: list[str]):
        self.photos, self.names = photos, names

    def pick(self, rng: random.Random) -> tuple[str, Image.Image]:
        i = rng.randrange(len(self.photos))
        return self.names[i], self.photos[i]


def _draw_from(ranges: dict[str, tuple], rng: random.Random) -> dict:
    out = {}
    for key, spec in ranges.items():
        if len(spec) == 2 and all(type(v) is int for v in spec):
            out[key] = rng.randint(*spec)
        elif len(spec) == 2 and all(type(v) is float for v in spec):
            out[key] = round(rng.uniform(*spec), 4)
        else:
            out[key] = rng.choice(spec)
    return out


def draw(name: str, rng: random.Random) -> dict:
    """One query's parameters of class ``name``."""
    if name == CHAIN:
        steps = rng.sample(sorted(CHAIN_STEPS), 3)
        return {"steps": [[step, _draw_from(CHAIN_STEPS[step], rng)] for step in steps]}
    return _draw_from(RANGES[name], rng)


def within(spec: tuple, value) -> bool:
    """Whether ``value`` is a possible draw from ``spec`` (the tests' check of every drawn parameter)."""
    if len(spec) == 2 and all(type(v) in (int, float) for v in spec) and type(spec[0]) is type(spec[1]) and type(spec[0]) is not bool:
        return spec[0] <= value <= spec[1]
    return value in spec


# ---- the edits -----------------------------------------------------------------------------------
def _rel(box, size) -> Box:
    w, h = size
    return (round(box[0] / w, 4), round(box[1] / h, 4), round(box[2] / w, 4), round(box[3] / h, 4))


def _crop_box(size, keep: float, aspect: float, x: float, y: float) -> tuple[int, int, int, int]:
    """A box keeping ``keep`` of the area, its sides' ratio skewed by ``exp(aspect)``, placed at (x, y) in the free room."""
    w, h = size
    fw = min(1.0, math.sqrt(keep) * math.exp(aspect / 2))
    fh = min(1.0, keep / fw)
    cw, ch = max(8, round(w * fw)), max(8, round(h * fh))
    x0, y0 = round((w - cw) * x), round((h - ch) * y)
    return x0, y0, x0 + cw, y0 + ch


def _font(px: int):
    return ImageFont.load_default(size=max(8, int(px)))


def _grid(im, p, pool, used):
    n, gap = p["cells"], p["gutter"]
    cw = p["cell_px"]
    ch = max(40, round(cw / p["cell_aspect"]))
    bg = FILLS[p["background"]]
    canvas = Image.new("RGB", (n * cw + (n + 1) * gap, n * ch + (n + 1) * gap), bg)
    slot = min(n * n - 1, int(p["slot"] * n * n))
    box = None
    rng = random.Random(repr(sorted(p.items())))  # the neighbours follow from the parameters
    for i in range(n * n):
        x, y = gap + (i % n) * (cw + gap), gap + (i // n) * (ch + gap)
        if i == slot:
            if p["cell_fit"] == "fitted":
                tile, inner = im.resize((cw, ch), Image.Resampling.LANCZOS), (0, 0, cw, ch)
            elif p["cell_fit"] == "cropped":
                tile, inner = ImageOps.fit(im, (cw, ch), Image.Resampling.LANCZOS, centering=(p["centre_x"], p["centre_y"])), (0, 0, cw, ch)
            else:
                fitted = ImageOps.contain(im, (cw, ch), Image.Resampling.LANCZOS)
                tile = Image.new("RGB", (cw, ch), bg)
                ox, oy = (cw - fitted.width) // 2, (ch - fitted.height) // 2
                tile.paste(fitted, (ox, oy))
                inner = (ox, oy, ox + fitted.width, oy + fitted.height)
            box = (x + inner[0], y + inner[1], x + inner[2], y + inner[3])
        else:
            name, other = pool.pick(rng)
            used.append(name)
            tile = ImageOps.fit(other, (cw, ch), Image.Resampling.LANCZOS)
        canvas.paste(tile, (x, y))
    return Generated(canvas, _rel(box, canvas.size))


def _crop(im, p, pool, used):
    box = _crop_box(im.size, p["keep"], p["aspect"], p["x"], p["y"])
    return Generated(im.crop(box), ref_box=_rel(box, im.size))


def _turn_mirror_crop(im, p, pool, used):
    out = ImageOps.mirror(im) if p["mirror"] else im
    out = out.rotate(90 * p["turns"], expand=True)
    return Generated(out.crop(_crop_box(out.size, p["keep"], 0.0, p["x"], p["y"])))


def _rotation(im, p, pool, used):
    angle = p["degrees"]
    if p["after"] == "crop inside":
        rotated = im.rotate(angle, Image.Resampling.BICUBIC, expand=True)
        w, h = im.size
        a = math.radians(abs(angle))
        # The largest rectangle of the photo's aspect inside the rotated photo.
        k = min(w / (w * math.cos(a) + h * math.sin(a)), h / (w * math.sin(a) + h * math.cos(a))) * 0.99
        cx, cy = rotated.width / 2, rotated.height / 2
        return Generated(rotated.crop((round(cx - w * k / 2), round(cy - h * k / 2), round(cx + w * k / 2), round(cy + h * k / 2))))
    fill = FILLS["white" if p["after"] == "fill white" else "black"]
    return Generated(im.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=fill))


def _perspective(im, p, pool, used):
    w, h = im.size
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[p["tl_x"] * w, p["tl_y"] * h], [w - p["tr_x"] * w, p["tr_y"] * h],
                      [w - p["br_x"] * w, h - p["br_y"] * h], [p["bl_x"] * w, h - p["bl_y"] * h]])
    m = cv2.getPerspectiveTransform(src, dst)
    out = cv2.warpPerspective(np.asarray(im), m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=FILLS[p["fill"]])
    return Generated(Image.fromarray(out))


def _blur(im, p, pool, used):
    return Generated(im.filter(ImageFilter.GaussianBlur(p["radius"])))


def _noise(im, p, pool, used):
    a = np.asarray(im).astype(np.float32)
    gen = np.random.default_rng(abs(hash_params(p)))
    shape = a.shape if p["colour"] else a.shape[:2] + (1,)
    a = a + gen.normal(0, p["sigma"], shape).astype(np.float32)
    return Generated(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)))


def hash_params(p: dict) -> int:
    """A seed from the parameters, for the edits that need more randomness than they draw (noise, embed backgrounds)."""
    return int.from_bytes(hashlib.sha256(repr(sorted(p.items())).encode()).digest()[:7], "big")


def _thumbnail(im, p, pool, used):
    out = im.copy()
    out.thumbnail((p["longest_px"], p["longest_px"]), Image.Resampling.LANCZOS)
    return Generated(out)


def _embed(im, p, pool, used):
    name, bg = pool.pick(random.Random(hash_params(p)))
    used.append(name)
    cw = p["canvas_px"]
    ch = max(240, round(bg.height * cw / bg.width))
    canvas = bg.resize((cw, ch), Image.Resampling.BICUBIC)
    pw = max(8, round(cw * p["share"]))
    ph = max(8, round(im.height * pw / im.width))
    if ph > ch:  # a tall photo: its share of the height instead
        ph = max(8, round(ch * p["share"]))
        pw = max(8, round(im.width * ph / im.height))
    x, y = round((cw - pw) * p["x"]), round((ch - ph) * p["y"])
    canvas.paste(im.resize((pw, ph), Image.Resampling.LANCZOS), (x, y))
    return Generated(canvas, _rel((x, y, x + pw, y + ph), canvas.size))


def _meme(im, p, pool, used):
    w, h = im.size
    top, bottom = round(h * p["top"]), round(h * p["bottom"])
    bar, ink = (FILLS["white"], FILLS["black"]) if p["bar"] == "white" else (FILLS["black"], FILLS["white"])
    canvas = Image.new("RGB", (w, h + top + bottom), bar)
    canvas.paste(im, (0, top))
    draw_ = ImageDraw.Draw(canvas)
    if top:
        draw_.text((round(w * 0.04), round(top * 0.2)), p["caption"], font=_font(top * 0.45), fill=ink)
    if bottom:
        draw_.text((round(w * 0.04), top + h + round(bottom * 0.2)), "top text" if p["caption"] == "bottom text" else "bottom text",
                   font=_font(bottom * 0.45), fill=ink)
    return Generated(canvas, _rel((0, top, w, top + h), canvas.size))


def _letterbox(im, p, pool, used):
    aw, ah = (int(v) for v in p["aspect"].split(":"))
    w, h = im.size
    target = aw / ah
    # The canvas of the target aspect holding the photo with at least ``margin`` free on the tight side.
    cw = max(w * (1 + p["margin"]), h * (1 + p["margin"]) * target)
    ch = cw / target
    cw, ch = round(cw), round(ch)
    if p["fill"] == "blurred":
        canvas = ImageOps.fit(im, (cw, ch), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(max(cw, ch) / 30))
        canvas = ImageEnhance.Brightness(canvas).enhance(0.8)
    else:
        canvas = Image.new("RGB", (cw, ch), FILLS[p["fill"]])
    x, y = (cw - w) // 2, (ch - h) // 2
    canvas.paste(im, (x, y))
    return Generated(canvas, _rel((x, y, x + w, y + h), canvas.size))


def _screenshot(im, p, pool, used):
    pw = p["page_px"]
    ph = round(pw * 0.62)
    page = Image.new("RGB", (pw, ph), (255, 255, 255))
    d = ImageDraw.Draw(page)
    top = 0
    if p["chrome"]:  # a browser's tab strip and address bar
        top = round(ph * 0.09)
        d.rectangle((0, 0, pw, top), fill=(222, 225, 230))
        d.rounded_rectangle((round(pw * 0.08), round(top * 0.5), round(pw * 0.7), round(top * 0.9)), radius=8, fill=(255, 255, 255))
        d.text((round(pw * 0.1), round(top * 0.55)), "https://example.com/blog/2026/12/holiday", font=_font(top * 0.28), fill=(60, 60, 60))
    iw = round(pw * p["share"])
    ih = round(im.height * iw / im.width)
    room = ph - top - 20
    if ih > room:
        ih = room
        iw = round(im.width * ih / im.height)
    x = 20 if p["side"] == "left" else pw - 20 - iw
    y = top + 10 + round((room - ih) * p["y"])
    page.paste(im.resize((iw, ih), Image.Resampling.LANCZOS), (x, y))
    tx0 = x + iw + 30 if p["side"] == "left" else 30
    tx1 = pw - 30 if p["side"] == "left" else x - 30
    font = _font(max(12, pw // 70))
    d.text((tx0, top + 20), "Our week on the coast", font=_font(max(16, pw // 40)), fill=(20, 20, 20))
    words, line, ty = PARAGRAPH.split() * 3, "", top + 20 + max(16, pw // 40) * 2
    for word in words:
        if d.textlength(line + " " + word, font=font) > tx1 - tx0:
            d.text((tx0, ty), line, font=font, fill=(50, 50, 50))
            line, ty = word, ty + round(font.size * 1.5)
            if ty > ph - font.size * 2:
                break
        else:
            line = (line + " " + word).strip()
    return Generated(page, _rel((x, y, x + iw, y + ih), page.size))


def _tiled_watermark(im, p, pool, used):
    w, h = im.size
    font = _font(p["font_px"])
    tile_w = round(ImageDraw.Draw(im).textlength(p["text"], font=font) * p["spacing"])
    tile_h = round(p["font_px"] * p["spacing"] * 1.5)
    side = round(math.hypot(w, h))
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    for row, y in enumerate(range(0, side, tile_h)):
        for x in range(-(row % 2) * tile_w // 2, side, tile_w):
            d.text((x, y), p["text"], font=font, fill=(255, 255, 255, p["alpha"]), stroke_width=1, stroke_fill=(0, 0, 0, p["alpha"] // 2))
    layer = layer.rotate(p["degrees"], Image.Resampling.BICUBIC)
    left, top = (side - w) // 2, (side - h) // 2
    layer = layer.crop((left, top, left + w, top + h))
    return Generated(Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB"))


def _hue(im, degrees):
    h, s, v = im.convert("HSV").split()
    shift = round(degrees / 360 * 256)
    return Image.merge("HSV", (h.point(lambda x: (x + shift) % 256), s, v)).convert("RGB")


def _vignette(im, strength):
    w, h = im.size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2)) / math.sqrt(2)
    gain = 1 - strength * r ** 2
    return Image.fromarray(np.clip(np.asarray(im, np.float32) * gain[..., None], 0, 255).astype(np.uint8))


def _jpeg(im, quality):
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def _chain(im, p, pool, used):
    out = im
    for step, q in p["steps"]:
        if step == "crop":
            out = out.crop(_crop_box(out.size, q["keep"], q["aspect"], q["x"], q["y"]))
        elif step == "hue shift":
            out = _hue(out, q["degrees"])
        elif step == "scale":
            out = out.resize((max(8, round(out.width * q["factor"])), max(8, round(out.height * q["factor"]))), Image.Resampling.LANCZOS)
        elif step == "jpeg":
            out = _jpeg(out, q["quality"])
        elif step == "blur":
            out = out.filter(ImageFilter.GaussianBlur(q["radius"]))
        elif step == "noise":
            out = _noise(out, q, pool, used).image
        elif step == "rotation":
            out = _rotation(out, q, pool, used).image
        elif step == "contrast":
            out = ImageEnhance.Brightness(ImageEnhance.Contrast(out).enhance(q["contrast"])).enhance(q["brightness"])
        elif step == "mirror":
            out = ImageOps.mirror(out)
        elif step == "vignette":
            out = _vignette(out, q["strength"])
    return Generated(out)


EDITS: dict[str, Callable] = {
    "grid": _grid, "crop": _crop, "turn, mirror and crop": _turn_mirror_crop, "rotation": _rotation, "perspective": _perspective,
    "blur": _blur, "noise": _noise, "thumbnail": _thumbnail, "embed": _embed, "meme bars": _meme, "letterbox": _letterbox,
    "screenshot": _screenshot, "tiled watermark": _tiled_watermark, CHAIN: _chain,
}


def apply(name: str, photo: Image.Image, params: dict, pool: Pool) -> tuple[Generated, list[str]]:
    """The edited image, and the names of the pool's photos it used besides ``photo``."""
    used: list[str] = []
    return EDITS[name](photo, params, pool, used), used
