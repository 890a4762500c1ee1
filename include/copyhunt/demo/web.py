"""The demo web: five generated websites with planted copies of the demo customers' images.

build() writes, into ``out_dir``:

* ``sites/<host>/...``  the files of each site (HTML pages, images, robots.txt, sitemap.xml, CSS);
* ``manifest.json``     the routing table: for every host, URL (path + canonical query) -> file,
                        Content-Type, ETag and Last-Modified;
* ``seeds.txt``         one start URL per site (``http://alpine-blog.test/`` ...);
* ``truth.json``        every planted copy a robots-obeying crawler can reach, sorted:
                        ``{page_url, image_url, customer_id, image_id, transform, embed}``;
* ``blocked.json``      planted copies reachable only under ``/private/``, which robots.txt
                        disallows: a crawler that reports one of them ignored robots.txt;
* ``sites.json``        one line per site: host, kind, operator, page counts.

The sites: two blogs (``alpine-blog.test`` in German with an Impressum, ``urban-eats.test``), a
news site (``daily-courier.test``; alpine-lens licenses its images to it, one of its copies is dated
before the licence starts), a print shop (``nordic-prints.test``) and a marketplace
(``bazaar-market.test``) with paginated listings, products and sellers. Output is a pure function
of the seed and the inputs (customers file, asset images, this module's source): seeded
``random.Random`` per site, fixed encoder settings, no clock. A rebuild is skipped when ``out_dir``
already holds a completed build of the same seed and inputs.

serve() runs a small HTTP forward proxy on loopback that answers for the demo hosts, so a crawler
sees real-looking URLs while ``http_proxy`` points at it (absolute-URI requests, as Scrapy sends
them; origin-form requests are dispatched by their Host header).

Run it: ``copyhunt demo-web`` (run_demo_web), or ``python -m copyhunt.demo.web --out data/demo-web``;
then ``curl -x http://127.0.0.1:8899 http://alpine-blog.test/``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import html
import io
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import threading
import uuid
from dataclasses import asdict, dataclass, field
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from PIL import Image, ImageDraw, ImageEnhance, ImageOps, ImageStat

from copyhunt.demo.customers import RegisteredImage, load_customers, repo_root

log = logging.getLogger(__name__)

# Bump when the generated output changes in a way the source hash would not show.
GENERATOR_VERSION = 1
MARKER = ".complete.json"
MANIFEST = "manifest.json"
SITES_DIR = "sites"

# Fixed encoder settings: part of the output format, so same inputs give the same bytes.
PLANTED_JPEG_QUALITY = 88
UNRELATED_JPEG_QUALITY = 78
RECOMPRESS_QUALITIES = (30, 45)  # two lossy passes, like an image re-saved by a CMS and a CDN
WEBP_QUALITY = 80
CROP_KEEP_AREA = 0.70
PAD_FRACTION = 0.15
# Crops flatter than this (grey sky, plain wall) are redrawn: they look like nothing and give
# degenerate perceptual hashes, which would make the unrelated photos a poor background.
MIN_PHOTO_STDDEV = 30.0

# A 1x1 transparent GIF, the spacer lazy-loading scripts put in src until data-src is swapped in.
BLANK_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
BLANK_GIF_DATA_URI = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"

UNRELATED_ASSETS = (
    *(f"assets/images/labelme/{n}.jpg" for n in ("q0003", "q0004", "q0122", "q0291", "q0746", "q1050", "q2821")),
    "assets/images/bridge/bridge-1-original.jpg",
    "assets/images/threatexchange-misc-pen-and-coaster.png",
)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".xml": "application/xml",
}

TRANSFORMS = (
    "exact", "scaled_down", "scaled_up", "cropped", "grayscale", "sepia", "hue_shift", "brightened",
    "mirrored", "padded_white", "padded_black", "recompressed", "collage",
)
EMBEDS = ("img_src", "srcset", "og_image", "data_src", "css_background")


# ==== public results ==============================================================================
@dataclass(frozen=True, order=True)
class PlantedCopy:
    """One (page, image) pair where a customer's image, transformed, is shown."""

    page_url: str
    image_url: str
    customer_id: str
    image_id: str
    transform: str  # one of TRANSFORMS
    embed: str  # how the page references it: one of EMBEDS


@dataclass(frozen=True)
class SiteInfo:
    host: str
    name: str
    kind: str  # blog | news | shop | marketplace
    operator: str
    start_url: str
    pages: int  # HTML pages a robots-obeying crawler can reach
    pages_with_images: int  # of those, pages showing at least one content image
    private_pages: int  # HTML pages under /private/ (disallowed by robots.txt)


@dataclass(frozen=True)
class DemoWeb:
    root: Path
    seed: int
    sites: tuple[SiteInfo, ...]
    truth: tuple[PlantedCopy, ...]
    blocked: tuple[PlantedCopy, ...]
    rebuilt: bool  # False when a completed build of the same inputs was reused

    @property
    def seeds_file(self) -> Path:
        return self.root / "seeds.txt"

    @property
    def truth_file(self) -> Path:
        return self.root / "truth.json"

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(s.host for s in self.sites)

    def site_dir(self, host: str) -> Path:
        return self.root / SITES_DIR / host


# ==== URLs and files ==============================================================================
def canonical_query(query: str) -> str:
    """Sorted, re-encoded query string, so ``b=2&a=1`` and ``a=1&b=2`` name the same page."""
    return urlencode(sorted(parse_qsl(query, keep_blank_values=True)))


def route_key(path: str, query: str = "") -> str:
    """The manifest key of a URL: decoded path plus canonical query."""
    path = unquote(path) or "/"
    q = canonical_query(query)
    return f"{path}?{q}" if q else path


def _file_for(path: str, query: str = "") -> str:
    """Where a URL's bytes live inside the site folder: ``/`` -> index.html, ``/about`` -> about.html,
    ``/x/`` -> x/index.html, ``/listings?page=2`` -> listings@page=2.html."""
    rel = path.lstrip("/")
    if not rel or rel.endswith("/"):
        rel += "index.html"
    elif "." not in rel.rsplit("/", 1)[-1]:
        rel += ".html"
    q = canonical_query(query)
    if q:
        stem, _, ext = rel.rpartition(".")
        rel = f"{stem}@{quote(q, safe='=&')}.{ext}"
    return rel


def _http_date(when: dt.datetime) -> str:
    return format_datetime(when.astimezone(dt.timezone.utc), usegmt=True)


# ==== images ======================================================================================
def _encode(img: Image.Image, fmt: str, quality: int = PLANTED_JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        # optimize/progressive off: fewer encoder code paths, stable bytes across runs.
        img.save(buf, "JPEG", quality=quality, optimize=False, progressive=False)
    elif fmt == "png":
        img.save(buf, "PNG")
    elif fmt == "webp":
        img.save(buf, "WEBP", quality=WEBP_QUALITY, method=4)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P"):
            # Flatten transparency onto white, as a browser shows it on a white page.
            rgba = im.convert("RGBA")
            base = Image.new("RGB", rgba.size, (255, 255, 255))
            base.paste(rgba, mask=rgba.getchannel("A"))
            return base
        return im.convert("RGB")


def _fit_width(img: Image.Image, width: int) -> Image.Image:
    height = max(1, round(img.height * width / img.width))
    return img.resize((width, height), Image.Resampling.LANCZOS)


def _crop_area(img: Image.Image, rng: random.Random, keep: float) -> Image.Image:
    side = math.sqrt(keep)
    w, h = round(img.width * side), round(img.height * side)
    x0, y0 = rng.randint(0, img.width - w), rng.randint(0, img.height - h)
    return img.crop((x0, y0, x0 + w, y0 + h))


def _hue_shift(img: Image.Image, degrees: float) -> Image.Image:
    h, s, v = img.convert("HSV").split()
    shift = round(degrees / 360 * 256)
    h = h.point(lambda x: (x + shift) % 256)
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def _sepia(img: Image.Image) -> Image.Image:
    return ImageOps.colorize(ImageOps.grayscale(img), black="#2b1d0e", white="#fff3dc", mid="#a27c56")


def _pad(img: Image.Image, fill: str) -> Image.Image:
    return ImageOps.expand(img, border=round(PAD_FRACTION * img.width), fill=fill)


# Pure image -> image transforms; "exact" copies the file's bytes and "collage" needs the photo
# pool, so both are handled in _Builder.planted_image.
_PIXEL_TRANSFORMS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "scaled_down": lambda im, rng: _fit_width(im, 180),
    "scaled_up": lambda im, rng: _fit_width(im, 600),
    "cropped": lambda im, rng: _crop_area(im, rng, CROP_KEEP_AREA),
    "grayscale": lambda im, rng: ImageOps.grayscale(im),
    "sepia": lambda im, rng: _sepia(im),
    "hue_shift": lambda im, rng: _hue_shift(im, 50),
    "brightened": lambda im, rng: ImageEnhance.Brightness(im).enhance(1.35),
    "mirrored": lambda im, rng: ImageOps.mirror(im),
    "padded_white": lambda im, rng: _pad(im, "white"),
    "padded_black": lambda im, rng: _pad(im, "black"),
    "recompressed": lambda im, rng: im,  # the damage is done by the encoder, see planted_image
}


class _PhotoPool:
    """Unrelated photos: varied crops and sizes of the shipped non-customer images."""

    def __init__(self, paths: Iterable[Path]):
        self.sources = []
        for p in paths:
            img = _rgb(p)
            if img.width <= 300:
                # The small regression-test photos carry thin black edges; trim them.
                img = img.crop((8, 8, img.width - 8, img.height - 8))
            self.sources.append(img)

    def photo(self, rng: random.Random, width: int | None = None, aspect: float | None = None) -> Image.Image:
        aspect = aspect or rng.choice((0.5625, 0.66, 0.75, 1.0, 1.25))
        for _ in range(25):
            src = rng.choice(self.sources)
            # Large sources give distinct pictures from small crops; the small ones need big crops.
            frac = rng.uniform(0.3, 0.65) if src.width > 600 else rng.uniform(0.6, 0.95)
            cw = max(48, round(src.width * frac))
            ch = min(src.height, max(48, round(cw * aspect)))
            cw = min(cw, round(ch / aspect)) if ch == src.height else cw
            x0, y0 = rng.randint(0, src.width - cw), rng.randint(0, src.height - ch)
            img = src.crop((x0, y0, x0 + cw, y0 + ch))
            if ImageStat.Stat(img.convert("L")).stddev[0] >= MIN_PHOTO_STDDEV:
                break
        if rng.random() < 0.3:
            img = ImageOps.mirror(img)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
        return _fit_width(img, width or rng.choice((240, 280, 320, 360, 400, 440)))


def _logo(rng: random.Random, colour: tuple[int, int, int], shape: str, size: tuple[int, int] = (160, 40)) -> bytes:
    """A small drawn logo or avatar (no text: fonts differ between machines)."""
    img = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(img)
    w, h = size
    light = tuple(min(255, c + 110) for c in colour)
    if shape == "mountains":
        draw.polygon([(8, h - 6), (34, 8), (60, h - 6)], fill=light)
        draw.polygon([(40, h - 6), (62, 16), (84, h - 6)], fill=(255, 255, 255))
    elif shape == "bowl":
        draw.pieslice([10, -h // 2, 10 + h, h - 4], 0, 180, fill=light)
    elif shape == "columns":
        for i in range(5):
            draw.rectangle([10 + i * 12, 10, 16 + i * 12, h - 8], fill=light)
    elif shape == "frame":
        draw.rectangle([8, 6, 8 + h, h - 6], outline=(255, 255, 255), width=4)
    else:  # identicon-like avatar: a seeded 5x5 symmetric pattern
        cell = min(w, h) // 6
        for y in range(5):
            for x in range(3):
                if rng.random() < 0.5:
                    for xx in {x, 4 - x}:
                        draw.rectangle([cell // 2 + xx * cell, cell // 2 + y * cell,
                                        cell // 2 + (xx + 1) * cell - 1, cell // 2 + (y + 1) * cell - 1], fill=light)
    return _encode(img, "png")


# ==== text ========================================================================================
_TEXT: dict[str, tuple[str, ...]] = {
    "travel-de": (
        "Wir waren früh dort, noch vor den Reisegruppen, und hatten den Ort fast für uns allein.",
        "Das Licht wechselte alle paar Minuten, deshalb sind wir viel länger geblieben als geplant.",
        "Einheimische haben uns verraten, dass die beste Reisezeit direkt nach der Regenzeit ist.",
        "Die Preise sind seit letztem Jahr etwas gestiegen, aber es lohnt sich immer noch.",
        "Wer nur einen Nachmittag hat, beginnt am besten in der Altstadt.",
        "Bequeme Schuhe sind Pflicht: Das Kopfsteinpflaster ist schön, aber gnadenlos.",
        "An der Ecke gibt es ein kleines Café mit dem besten Kaffee der Stadt.",
        "Die ganze Tour dauerte etwa drei Stunden, inklusive einer langen Mittagspause.",
        "Am zweiten Tag hat es geregnet, was sich als Glücksfall herausstellte.",
        "Unsere Unterkunft lag etwas außerhalb, dafür war es nachts herrlich ruhig.",
        "Im nächsten Beitrag zeigen wir euch, wie ihr die Route selbst planen könnt.",
    ),
    "shop-de": (
        "Jeder Druck wird von Hand geprüft, bevor er unsere Werkstatt verlässt.",
        "Der Versand innerhalb Deutschlands dauert in der Regel zwei bis drei Werktage.",
        "Wir drucken auf säurefreiem Papier mit pigmentbasierten Tinten.",
        "Passende Rahmen in Eiche, Schwarz und Weiß finden Sie im Zubehör.",
        "Alle Motive sind in limitierter Auflage erhältlich.",
        "Bei Fragen zur Größe beraten wir Sie gern telefonisch.",
    ),
    "food-en": (
        "Most of the ingredients are easy to find in any larger supermarket.",
        "Do not skip the resting time; it makes all the difference.",
        "The recipe scales well, so it is a good choice for a crowd.",
        "Our readers sent us dozens of variations, and we tried as many as we could.",
        "Toast the spices first: it takes a minute and doubles the flavour.",
        "Leftovers keep for three days in the fridge and taste even better.",
        "We made this four times before we were happy with the balance.",
    ),
    "news-en": (
        "Officials said the work would be finished before the end of the year.",
        "A spokesperson declined to comment on the figures.",
        "Visitor numbers rose sharply in the first half of the year, according to the report.",
        "Residents have been invited to a public meeting next month.",
        "The decision follows months of debate in the council chamber.",
        "Police advised drivers to allow extra time for their journeys.",
        "Further details are expected to be announced on Monday.",
    ),
    "market-en": (
        "Items are described honestly; please ask if you have any questions.",
        "Shipping within Europe usually takes three to five working days.",
        "Every piece is checked by hand before it is posted.",
        "Combined postage is available when you buy more than one item.",
        "Collection in person is welcome by appointment.",
        "Our community of sellers keeps growing every month.",
    ),
}


_MONTHS_DE = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
              "Oktober", "November", "Dezember")


def _paragraphs(rng: random.Random, topic: str, n: int = 2) -> str:
    bank = _TEXT[topic]
    out = []
    for _ in range(n):
        out.append("<p>" + html.escape(" ".join(rng.sample(bank, rng.randint(2, 4)))) + "</p>")
    return "\n".join(out)


def _human_date(day: dt.date, lang: str) -> str:
    if lang == "de":
        return f"{day.day}. {_MONTHS_DE[day.month - 1]} {day.year}"
    return f"{day.strftime('%B')} {day.day}, {day.year}"


# ==== pages =======================================================================================
@dataclass
class _Page:
    path: str
    title: str
    body: str
    og_type: str = "website"
    published: dt.datetime | None = None
    og_image: str | None = None  # absolute URL
    jsonld: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""
    refs: list[tuple[str, str]] = field(default_factory=list)  # (absolute image URL, embed)
    query: str = ""


@dataclass
class _Site:
    host: str
    name: str
    kind: str
    lang: str
    tz: dt.timezone
    operator: str
    colour: tuple[int, int, int]
    logo_shape: str
    topic: str  # which text bank the filler paragraphs come from
    nav: list[tuple[str, str]]
    footer: list[tuple[str, str]]
    og_site_name: bool = False
    robots_extra: str = ""
    launched: dt.date = dt.date(2025, 6, 1)
    files: dict[str, tuple[str, bytes, dt.datetime]] = field(default_factory=dict)  # route -> (file, bytes, mtime)
    pages: list[_Page] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # replaced by _Builder.site

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def when(self, day: dt.date, hour: int = 8, minute: int = 0) -> dt.datetime:
        return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=self.tz)

    def add_file(self, path: str, data: bytes, modified: dt.datetime, query: str = "") -> str:
        key = route_key(path, query)
        if key in self.files:
            raise AssertionError(f"{self.host}{key} written twice")
        self.files[key] = (_file_for(path, query), data, modified)
        return path

    def add_page(self, page: _Page) -> None:
        modified = page.published or self.when(self.launched)
        self.add_file(page.path, _render(self, page).encode("utf-8"), modified, page.query)
        self.pages.append(page)


def _jsonld_script(obj: dict[str, Any]) -> str:
    text = json.dumps({"@context": "https://schema.org", **obj}, ensure_ascii=False, sort_keys=True, indent=1)
    return '<script type="application/ld+json">\n' + text.replace("</", "<\\/") + "\n</script>"


def _render(site: _Site, page: _Page) -> str:
    e = html.escape
    canonical = site.url(page.path + (f"?{page.query}" if page.query else ""))
    head = [
        '<meta charset="utf-8">',
        f"<title>{e(page.title)} | {e(site.name)}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="description" content="{e(page.description or page.title)}">',
        f'<link rel="canonical" href="{e(canonical)}">',
        '<link rel="stylesheet" href="/static/site.css">',
        f'<meta property="og:type" content="{page.og_type}">',
        f'<meta property="og:title" content="{e(page.title)}">',
        f'<meta property="og:url" content="{e(canonical)}">',
    ]
    if site.og_site_name:
        head.append(f'<meta property="og:site_name" content="{e(site.name)}">')
    if page.og_image:
        head.append(f'<meta property="og:image" content="{e(page.og_image)}">')
    if page.published:
        head.append(f'<meta property="article:published_time" content="{page.published.isoformat()}">')
    head.extend(_jsonld_script(obj) for obj in page.jsonld)
    nav = " ".join(f'<a href="{e(href)}">{e(label)}</a>' for href, label in site.nav)
    foot = " · ".join(f'<a href="{e(href)}">{e(label)}</a>' for href, label in site.footer)
    return (
        f'<!DOCTYPE html>\n<html lang="{site.lang}">\n<head>\n' + "\n".join(head) + "\n</head>\n<body>\n"
        f'<header><a class="logo" href="/">'
        f'<img src="/static/logo.png" alt="{e(site.name)}" width="160" height="40"></a>\n'
        f"<nav>{nav}</nav></header>\n<main>\n{page.body}\n</main>\n"
        f"<footer><p>{foot}</p><p>&copy; {e(site.operator)}</p></footer>\n</body>\n</html>\n"
    )


def _figure(src: str, alt: str, size: tuple[int, int], caption: str = "") -> str:
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}" width="{size[0]}" '
            f'height="{size[1]}" loading="lazy">{cap}</figure>')


def _card(site: _Site, path: str, title: str, image: str, when: dt.datetime | None = None, extra: str = "") -> str:
    """A teaser card on a listing page: thumbnail (the same image URL, sized by the browser) and title."""
    e = html.escape
    date = _time(site, when) if when else ""
    return (f'<div><a href="{e(path)}"><img src="{e(image)}" alt="{e(title)}" width="220"></a>'
            f'<h2><a href="{e(path)}">{e(title)}</a></h2>{date}{extra}</div>')


def _cards_page(site: _Site, path: str, title: str, heading: str, cards: Sequence[tuple[Any, str, str]],
                after: str = "", **page: Any) -> None:
    """A listing page: ``heading`` over teaser cards (``(sort key, card html, image path)``)."""
    site.add_page(_Page(path, title, f"<h1>{heading}</h1>\n<div class=\"cards\">" + "".join(c for _, c, _ in cards)
                        + "</div>" + after, refs=[(site.url(img), "img_src") for _, _, img in cards], **page))


def _time(site: _Site, when: dt.datetime, prefix: str = "") -> str:
    return (f'<p class="meta">{html.escape(prefix)}<time datetime="{when.isoformat()}">'
            f"{_human_date(when.date(), site.lang)}</time></p>")


# ==== the builder =================================================================================
@dataclass(frozen=True)
class _Plant:
    image_id: str
    transform: str
    embed: str
    filename: str  # file name on the thief's site; the extension picks the format


class _Builder:
    """Holds the shared state of one build: customers' images, the photo pool, planted URLs."""

    def __init__(self, seed: int, images: dict[str, RegisteredImage], pool: _PhotoPool):
        self.seed = seed
        self.images = images
        self.pool = pool
        self.planted: dict[str, tuple[str, str, str]] = {}  # image URL -> (customer, image, transform)
        self.sizes: dict[str, tuple[int, int]] = {}  # image URL -> (width, height)
        self.sites: list[_Site] = []

    def site(self, accent: str, **kwargs: Any) -> _Site:
        """A new site with its logo, stylesheet (``accent`` colour) and spacer GIF written."""
        # One generator per site, seeded by name: adding a site does not change the others.
        site = _Site(**kwargs, rng=random.Random(f"copyhunt-demo-web:{self.seed}:{kwargs['host']}"))
        self.sites.append(site)
        _common_files(site, accent)
        return site

    def photo(self, site: _Site, path: str, day: dt.date, width: int | None = None,
              aspect: float | None = None) -> str:
        """Write an unrelated photo at ``path``; return its path."""
        img = self.pool.photo(site.rng, width, aspect)
        site.add_file(path, _encode(img, "jpeg", UNRELATED_JPEG_QUALITY), site.when(day))
        self.sizes[site.url(path)] = img.size
        return path

    def planted_image(self, site: _Site, path: str, plant: _Plant, day: dt.date) -> str:
        """Write a transformed copy of a customer's image at ``path``; return its path."""
        if plant.image_id not in self.images:
            raise ValueError(f"the demo web plants image {plant.image_id!r}, which the customers file lacks")
        if plant.transform not in TRANSFORMS or plant.embed not in EMBEDS:
            raise AssertionError(f"unknown transform or embed in {plant}")
        reg = self.images[plant.image_id]
        fmt = {"jpg": "jpeg", "png": "png", "webp": "webp"}[path.rsplit(".", 1)[-1]]
        if plant.transform == "exact":
            data = reg.path.read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                size = im.size
        else:
            src = _rgb(reg.path)
            quality = PLANTED_JPEG_QUALITY
            if plant.transform == "collage":
                img = self._collage(site.rng, src)
            elif plant.transform == "recompressed":
                img = src
                for q in RECOMPRESS_QUALITIES[:-1]:
                    img = Image.open(io.BytesIO(_encode(img, "jpeg", q)))
                quality = RECOMPRESS_QUALITIES[-1]
            else:
                img = _PIXEL_TRANSFORMS[plant.transform](src, site.rng)
            data = _encode(img, fmt, quality)
            size = img.size
        site.add_file(path, data, site.when(day))
        url = site.url(path)
        self.planted[url] = (reg.customer_id, reg.image_id, plant.transform)
        self.sizes[url] = size
        return path

    def _collage(self, rng: random.Random, src: Image.Image) -> Image.Image:
        """A 2x2 grid: the customer's picture in one cell, unrelated photos in the others."""
        cell, gap = (280, 210), 6
        canvas = Image.new("RGB", (2 * cell[0] + 3 * gap, 2 * cell[1] + 3 * gap), (250, 250, 250))
        slot = rng.randrange(4)
        for i in range(4):
            if i == slot:
                tile = Image.new("RGB", cell, (250, 250, 250))
                fitted = ImageOps.contain(src, cell, Image.Resampling.LANCZOS)
                tile.paste(fitted, ((cell[0] - fitted.width) // 2, (cell[1] - fitted.height) // 2))
            else:
                tile = ImageOps.fit(self.pool.photo(rng, 320), cell, Image.Resampling.LANCZOS)
            canvas.paste(tile, (gap + (i % 2) * (cell[0] + gap), gap + (i // 2) * (cell[1] + gap)))
        return canvas

    def embed(self, site: _Site, page_refs: list[tuple[str, str]], src: str, embed: str, alt: str,
              caption: str = "") -> str:
        """HTML that shows image ``src`` (a path on this site or an absolute URL) the given way."""
        url = src if src.startswith("http") else site.url(src)
        page_refs.append((url, embed))
        size = self.sizes[url]
        e = html.escape
        if embed == "img_src":
            return _figure(src, alt, size, caption)
        if embed == "srcset":
            # The src is a spacer; only a crawler that reads srcset finds the picture.
            return (f'<figure><img src="/static/blank.gif" srcset="{e(src)} {size[0]}w" '
                    f'sizes="(max-width: {size[0]}px) 100vw, {size[0]}px" alt="{e(alt)}" '
                    f'width="{size[0]}" height="{size[1]}"><figcaption>{e(caption)}</figcaption></figure>')
        if embed == "data_src":
            return (f'<figure><img class="lazyload" src="{BLANK_GIF_DATA_URI}" data-src="{e(src)}" '
                    f'alt="{e(alt)}" width="{size[0]}" height="{size[1]}"><figcaption>{e(caption)}</figcaption></figure>')
        if embed == "css_background":
            return (f'<div class="hero" role="img" aria-label="{e(alt)}" style="background-image: '
                    f"url('{e(src)}'); height: {size[1]}px\"></div>")
        raise AssertionError(f"embed {embed!r} is not rendered in the body")

    def truth(self) -> tuple[list[PlantedCopy], list[PlantedCopy]]:
        """(reachable, blocked) planted copies, derived from what the pages actually reference."""
        reachable: dict[tuple[str, str], PlantedCopy] = {}
        blocked: dict[tuple[str, str], PlantedCopy] = {}
        for site in self.sites:
            for page in site.pages:
                # Body references first: a page that shows an image and also names it in og:image
                # is one copy, found by the body embed.
                refs = list(page.refs)
                if page.og_image:
                    refs.append((page.og_image, "og_image"))
                page_url = site.url(page.path + (f"?{page.query}" if page.query else ""))
                for image_url, embed in refs:
                    if image_url not in self.planted:
                        continue
                    customer_id, image_id, transform = self.planted[image_url]
                    copies = blocked if page.path.startswith("/private/") else reachable
                    copies.setdefault((page_url, image_url),
                                      PlantedCopy(page_url, image_url, customer_id, image_id, transform, embed))
        return sorted(reachable.values()), sorted(blocked.values())


def _common_files(site: _Site, css_accent: str) -> None:
    launched = site.when(site.launched)
    site.add_file("/static/logo.png", _logo(site.rng, site.colour, site.logo_shape), launched)
    site.add_file("/static/blank.gif", BLANK_GIF, launched)
    css = (
        "body{font-family:Georgia,serif;max-width:52rem;margin:0 auto;padding:0 1rem;color:#222}\n"
        f"header{{display:flex;gap:1rem;align-items:center;border-bottom:3px solid {css_accent}}}\n"
        "nav a{margin-right:.8rem}\nfigure{margin:1rem 0}\nfigure img{max-width:100%;height:auto}\n"
        ".hero{background-size:cover;background-position:center;margin:1rem 0}\n"
        ".cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(12rem,1fr));gap:1rem}\n"
        "footer{margin-top:2rem;border-top:1px solid #ccc;font-size:.9em}\n"
    )
    site.add_file("/static/site.css", css.encode(), launched)


def _finish_site(site: _Site) -> None:
    """robots.txt and sitemap.xml, written last because the sitemap lists every public page."""
    robots = (
        "User-agent: *\nDisallow: /private/\n" + site.robots_extra
        + f"\nSitemap: {site.url('/sitemap.xml')}\n"
    )
    launched = site.when(site.launched)
    site.add_file("/robots.txt", robots.encode(), launched)
    entries = []
    for page in sorted(site.pages, key=lambda p: (p.path, p.query)):
        if page.path.startswith("/private/"):
            continue
        loc = html.escape(site.url(page.path + (f"?{page.query}" if page.query else "")))
        last = (page.published or launched).date().isoformat()
        entries.append(f"  <url><loc>{loc}</loc><lastmod>{last}</lastmod></url>")
    sitemap = ('<?xml version="1.0" encoding="UTF-8"?>\n'
               '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n' + "\n".join(entries) + "\n</urlset>\n")
    site.add_file("/sitemap.xml", sitemap.encode(), launched)


def _article_jsonld(site: _Site, page_url: str, headline: str, when: dt.datetime, author: str,
                    image: str, kind: str = "BlogPosting", publisher: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "@type": kind, "headline": headline, "datePublished": when.isoformat(),
        "dateModified": when.isoformat(), "author": {"@type": "Person", "name": author},
        "image": image, "mainEntityOfPage": page_url, "inLanguage": site.lang,
    }
    if publisher:
        obj["publisher"] = publisher
    return obj


def _add_article(site: _Site, path: str, title: str, body: str, when: dt.datetime, image: str, author: str,
                 refs: list[tuple[str, str]], og_image: str | None = None, kind: str = "BlogPosting",
                 publisher: dict[str, Any] | None = None) -> tuple[dt.date, str, str]:
    """An article page with its JSON-LD; returns its teaser card for listing pages."""
    site.add_page(_Page(path, title, body, "article", when, og_image or site.url(image),
                        [_article_jsonld(site, site.url(path), title, when, author, site.url(image), kind, publisher)],
                        refs=refs))
    return when.date(), _card(site, path, title, image, when), image


def _short_post(b: _Builder, site: _Site, path: str, title: str, when: dt.datetime, image_path: str, author: str,
                publisher: dict[str, Any], extra: str = "") -> None:
    """A short news post: date, one photo, two paragraphs (and ``extra`` HTML)."""
    refs: list[tuple[str, str]] = []
    pic = b.photo(site, image_path, when.date())
    body = (f"<article><h1>{html.escape(title)}</h1>\n{_time(site, when)}\n"
            f"{b.embed(site, refs, pic, 'img_src', title)}\n{_paragraphs(site.rng, site.topic, 2)}{extra}</article>")
    _add_article(site, path, title, body, when, pic, author, refs, publisher=publisher)


def _blocked_drafts(b: _Builder, site: _Site, drafts: list[tuple[str, str, dt.date, _Plant | None]],
                    heading: str, intro: str) -> None:
    """The /private/ area: linked from the footer, disallowed in robots.txt."""
    items = []
    for slug, title, day, plant in drafts:
        refs: list[tuple[str, str]] = []
        photo = b.photo(site, f"/private/media/{slug}-1.jpg", day)
        body = [f"<h1>{html.escape(title)}</h1>", _time(site, site.when(day)),
                b.embed(site, refs, photo, "img_src", title), _paragraphs(site.rng, site.topic, 1)]
        if plant:
            path = b.planted_image(site, f"/private/media/{plant.filename}", plant, day)
            body.append(b.embed(site, refs, path, plant.embed, title))
        site.add_page(_Page(f"/private/{slug}", title, "\n".join(body), refs=refs,
                            published=site.when(day)))
        items.append(f'<li><a href="/private/{slug}">{html.escape(title)}</a></li>')
    site.add_page(_Page("/private/", heading, f"<h1>{html.escape(heading)}</h1>\n<p>{html.escape(intro)}</p>\n"
                                               f"<ul>{''.join(items)}</ul>"))


# ---- alpine-blog.test: a German travel blog with an Impressum, WordPress-style upload paths -----
def _alpine_blog(b: _Builder) -> None:
    tz = dt.timezone(dt.timedelta(hours=1))
    site = b.site(
        accent="#2e5e4e",
        host="alpine-blog.test", topic="travel-de", name="Bergblick – Reiseblog", kind="blog", lang="de", tz=tz,
        operator="Bergblick Medien UG (haftungsbeschränkt)", colour=(46, 94, 78), logo_shape="mountains",
        nav=[("/", "Start"), ("/seite/2", "Ältere Beiträge"), ("/ueber-uns", "Über uns"), ("/impressum", "Impressum")],
        footer=[("/impressum", "Impressum"), ("/datenschutz", "Datenschutz"), ("/private/", "Intern"),
                ("http://urban-eats.test/", "Urban Eats"), ("http://daily-courier.test/", "The Daily Courier")],
        robots_extra="Disallow: /wp-admin/\nAllow: /wp-admin/admin-ajax.php\n",
    )
    posts = [
        ("wochenende-in-muenchen", "Ein Wochenende in München", dt.date(2026, 2, 14),
         _Plant("alp-adac-hq", "exact", "img_src", "muenchen-architektur.jpg")),
        ("roadtrip-aragonien", "Roadtrip durch Aragonien", dt.date(2026, 3, 2),
         _Plant("alp-luesma-church", "cropped", "img_src", "aragonien-kirche-1024x768.jpg")),
        ("zwischenstopp-bahrain", "Zwischenstopp in Bahrain", dt.date(2026, 3, 28),
         _Plant("alp-bahrain-fort", "scaled_down", "srcset", "bahrain-fort-180x101.jpg")),
        ("die-burgen-von-gondar", "Die Burgen von Gondar", dt.date(2026, 4, 19),
         _Plant("alp-fasil-ghebbi", "mirrored", "img_src", "IMG_4821.jpg")),
        ("im-schmetterlingshaus", "Im Schmetterlingshaus", dt.date(2026, 5, 10),
         _Plant("jn-pasha-butterfly", "recompressed", "og_image", "schmetterling-share.jpg")),
        ("wandern-am-koenigssee", "Wandern am Königssee", dt.date(2026, 6, 7), None),
        ("herbstlicht-im-allgaeu", "Herbstlicht im Allgäu", dt.date(2026, 9, 21), None),
    ]
    author = "Lena Hofer"
    cards: list[tuple[dt.date, str, str]] = []
    for i, (slug, title, day, plant) in enumerate(posts):
        when = site.when(day, 7, 30)
        up = f"/wp-content/uploads/{day:%Y/%m}"
        teaser = b.photo(site, f"{up}/{slug}-titel.jpg", day, 440)
        path = f"/{day:%Y/%m}/{slug}/"
        refs: list[tuple[str, str]] = []
        body = [f"<article><h1>{html.escape(title)}</h1>", _time(site, when, "Veröffentlicht am "),
                b.embed(site, refs, teaser, "img_src", title), _paragraphs(site.rng, site.topic, 2)]
        og_image = site.url(teaser)
        if plant:
            planted = b.planted_image(site, f"{up}/{plant.filename}", plant, day)
            if plant.embed == "og_image":
                og_image = site.url(planted)  # shared to social media only, not shown in the post
            else:
                body.append(b.embed(site, refs, planted, plant.embed, title, "Foto: Bergblick"))
        body.append(b.embed(site, refs, b.photo(site, f"{up}/{slug}-2.jpg", day), "img_src", title))
        body.append(_paragraphs(site.rng, site.topic, 1))
        nav = []
        if i > 0:
            prev_slug, prev_title, prev_day, _ = posts[i - 1]
            nav.append(f'<a rel="prev" href="/{prev_day:%Y/%m}/{prev_slug}/">« {html.escape(prev_title)}</a>')
        if i + 1 < len(posts):
            next_slug, next_title, next_day, _ = posts[i + 1]
            nav.append(f'<a rel="next" href="/{next_day:%Y/%m}/{next_slug}/">{html.escape(next_title)} »</a>')
        body.append(f'<p class="postnav">{" | ".join(nav)}</p></article>')
        cards.append(_add_article(site, path, title, "\n".join(body), when, teaser, author, refs, og_image))
    cards.sort(reverse=True)
    for n, chunk in enumerate((cards[:4], cards[4:]), start=1):
        path = "/" if n == 1 else f"/seite/{n}"
        more = ('<p><a href="/seite/2">Ältere Beiträge »</a></p>' if n == 1
                else '<p><a href="/">« Neuere Beiträge</a></p>')
        _cards_page(site, path, site.name if n == 1 else f"Seite {n}", "Neueste Beiträge" if n == 1 else f"Seite {n}",
                    chunk, "\n" + more)
    refs = []
    portrait = b.photo(site, "/wp-content/uploads/2025/06/team.jpg", site.launched, 320)
    site.add_page(_Page("/ueber-uns", "Über uns",
                        "<h1>Über uns</h1>\n" + b.embed(site, refs, portrait, "img_src", "Lena Hofer")
                        + "\n<p>Bergblick ist der Reiseblog von Lena Hofer. Alle Angaben zum Betreiber finden Sie im "
                        '<a href="/impressum">Impressum</a>.</p>', refs=refs))
    site.add_page(_Page("/impressum", "Impressum", _impressum(
        "Bergblick Medien UG (haftungsbeschränkt)", ["Alpenstraße 12", "83471 Berchtesgaden", "Deutschland"],
        "Lena Hofer (Geschäftsführerin)", "+49 8652 555 0142", "redaktion@alpine-blog.test",
        "Amtsgericht Traunstein", "HRB 00142", "DE000000142")))
    site.add_page(_Page("/datenschutz", "Datenschutzerklärung", "<h1>Datenschutzerklärung</h1>\n"
                        "<p>Diese Website speichert keine personenbezogenen Daten über den Besuch hinaus.</p>"))
    _blocked_drafts(b, site, [
        ("entwurf-moskau", "Entwurf: Moskau im Winter", dt.date(2026, 10, 2),
         _Plant("alp-st-basil", "exact", "img_src", "moskau-basilius.jpg")),
        ("entwurf-notizen", "Notizen für die nächste Reise", dt.date(2026, 10, 5), None),
    ], "Interner Bereich", "Entwürfe, nicht veröffentlicht.")
    _finish_site(site)


def _impressum(company: str, address: list[str], represented: str, phone: str, email: str,
               court: str, register: str, vat: str) -> str:
    e = html.escape
    tel = "".join(c for c in phone if c.isdigit() or c == "+")
    return (
        "<h1>Impressum</h1>\n<p>Angaben gemäß § 5 DDG</p>\n"
        f"<p>{e(company)}<br>{'<br>'.join(e(a) for a in address)}</p>\n"
        f"<p>Vertreten durch: {e(represented)}</p>\n"
        f'<h2>Kontakt</h2>\n<p>Telefon: <a href="tel:{tel}">{e(phone)}</a><br>'
        f'E-Mail: <a href="mailto:{e(email)}">{e(email)}</a></p>\n'
        f"<h2>Registereintrag</h2>\n<p>Registergericht: {e(court)}<br>Registernummer: {e(register)}</p>\n"
        f"<h2>Umsatzsteuer-ID</h2>\n<p>Umsatzsteuer-Identifikationsnummer gemäß § 27a UStG: {e(vat)}</p>\n"
        f"<p>Verantwortlich für den Inhalt nach § 18 Abs. 2 MStV: {e(represented.split(' (')[0])}, "
        "Anschrift wie oben.</p>"
    )


# ---- nordic-prints.test: a German print shop; one of its prints is hot-linked by urban-eats -----
def _nordic_prints(b: _Builder) -> str:
    """Build the shop; return the absolute URL of the print urban-eats.test hot-links."""
    tz = dt.timezone(dt.timedelta(hours=1))
    org = {"@type": "Organization", "name": "Nordic Prints GmbH", "url": "http://nordic-prints.test/",
           "email": "shop@nordic-prints.test", "telephone": "+49 40 555 0199",
           "address": {"@type": "PostalAddress", "streetAddress": "Am Sandtorkai 99", "postalCode": "20457",
                       "addressLocality": "Hamburg", "addressCountry": "DE"}}
    site = b.site(
        accent="#1e3c6e",
        host="nordic-prints.test", topic="shop-de", name="Nordic Prints", kind="shop", lang="de", tz=tz,
        operator="Nordic Prints GmbH", colour=(30, 60, 110), logo_shape="frame", og_site_name=True,
        nav=[("/", "Start"), ("/shop/", "Alle Drucke"), ("/journal/", "Journal"), ("/impressum", "Impressum")],
        footer=[("/impressum", "Impressum"), ("/agb", "AGB"), ("/private/", "Händlerbereich")],
        robots_extra="Disallow: /warenkorb\n",
    )
    products = [
        ("sonnenuntergang-ueber-conques", "Sonnenuntergang über Conques – Fine Art Print", "49.00",
         dt.date(2026, 2, 20),
         _Plant("jn-conques-sunset", "padded_white", "img_src", "conques-passepartout.png")),
        ("burg-in-gondar-sepia", "Burg in Gondar – Sepia-Edition", "39.00", dt.date(2026, 3, 5),
         _Plant("alp-fasil-ghebbi", "sepia", "img_src", "gondar-sepia.jpg")),
        ("schmetterlingsstudie", "Schmetterlingsstudie", "29.00", dt.date(2026, 3, 18),
         _Plant("jn-pasha-butterfly", "scaled_up", "srcset", "schmetterling-600.webp")),
        ("bruecke-im-abendlicht", "Brücke im Abendlicht", "34.00", dt.date(2026, 4, 2), None),
        ("stillleben-mit-stift", "Stillleben mit Stift", "24.00", dt.date(2026, 4, 30), None),
        ("waldweg", "Waldweg", "27.00", dt.date(2026, 5, 14), None),
    ]
    hotlinked = ""
    rows: list[str] = []
    featured: list[str] = []
    featured_refs: list[tuple[str, str]] = []
    for slug, title, price, day, plant in products:
        path = f"/shop/{slug}"
        refs: list[tuple[str, str]] = []
        if plant:
            image = b.planted_image(site, f"/media/products/{plant.filename}", plant, day)
            shown = b.embed(site, refs, image, plant.embed, title)
            if plant.image_id == "alp-fasil-ghebbi":
                hotlinked = site.url(image)
        else:
            image = b.photo(site, f"/media/products/{slug}.jpg", day, 400)
            shown = b.embed(site, refs, image, "img_src", title)
            # Only the shop's own photos are featured on the home page.
            featured.append(_card(site, path, title, image, extra=f"<p>{price} €</p>"))
            featured_refs.append((site.url(image), "img_src"))
        detail = b.photo(site, f"/media/products/{slug}-raum.jpg", day, 320)
        product = {"@type": "Product", "name": title, "image": site.url(image), "sku": f"NP-{slug[:12].upper()}",
                   "brand": {"@type": "Brand", "name": "Nordic Prints"},
                   "description": "Fine-Art-Druck auf Hahnemühle-Papier, 30 × 40 cm.",
                   "offers": {"@type": "Offer", "price": price, "priceCurrency": "EUR",
                              "availability": "https://schema.org/InStock", "url": site.url(path),
                              "seller": {"@type": "Organization", "name": "Nordic Prints GmbH"}}}
        body = (f"<h1>{html.escape(title)}</h1>\n{shown}\n<p class=\"price\">{price} € inkl. MwSt.</p>\n"
                f"{_time(site, site.when(day), 'Im Sortiment seit ')}\n{_paragraphs(site.rng, site.topic, 1)}\n"
                f"{b.embed(site, refs, detail, 'img_src', 'Wandbeispiel', 'So wirkt der Druck an der Wand')}\n"
                '<p><a href="/shop/">« Alle Drucke</a></p>')
        site.add_page(_Page(path, title, body, "product", og_image=site.url(detail), jsonld=[product], refs=refs))
        rows.append(f'<li><a href="{path}">{html.escape(title)}</a> – {price} €</li>')
    site.add_page(_Page("/shop/", "Alle Drucke", "<h1>Alle Drucke</h1>\n<ul>" + "".join(rows) + "</ul>"))
    refs = list(featured_refs)
    banner = b.photo(site, "/media/banner-winter.jpg", site.launched, 440, 0.5)
    site.add_page(_Page("/", "Nordic Prints – Kunstdrucke aus Hamburg",
                        "<h1>Kunstdrucke aus Hamburg</h1>\n" + b.embed(site, refs, banner, "img_src", "")
                        + '\n<h2>Empfohlen</h2>\n<div class="cards">' + "".join(featured) + "</div>\n"
                        + '<h2>Alle Drucke</h2>\n<ul>' + "".join(rows) + "</ul>\n"
                        + '<p>Neu im <a href="/journal/">Journal</a>.</p>',
                        og_image=site.url(banner), jsonld=[org], refs=refs))
    journal = [("rahmen-richtig-waehlen", "Den richtigen Rahmen wählen", dt.date(2026, 4, 12)),
               ("neue-kollektion-herbst", "Unsere Herbstkollektion", dt.date(2026, 9, 1))]
    items = []
    for slug, title, day in journal:
        path = f"/journal/{slug}"
        _short_post(b, site, path, title, site.when(day, 10), f"/media/journal/{slug}.jpg", "Team Nordic Prints", org)
        items.append(f'<li><a href="{path}">{html.escape(title)}</a> ({_human_date(day, "de")})</li>')
    site.add_page(_Page("/journal/", "Journal", "<h1>Journal</h1>\n<ul>" + "".join(items) + "</ul>"))
    site.add_page(_Page("/impressum", "Impressum", _impressum(
        "Nordic Prints GmbH", ["Am Sandtorkai 99", "20457 Hamburg", "Deutschland"], "Jonas Berg (Geschäftsführer)",
        "+49 40 555 0199", "shop@nordic-prints.test", "Amtsgericht Hamburg", "HRB 00199", "DE000000199"),
        jsonld=[org]))
    site.add_page(_Page("/agb", "Allgemeine Geschäftsbedingungen",
                        "<h1>AGB</h1>\n<p>Es gelten die gesetzlichen Bestimmungen.</p>"))
    _blocked_drafts(b, site, [("lagerliste", "Lagerliste Herbst", dt.date(2026, 9, 3), None)],
                    "Händlerbereich", "Nur für Händler.")
    _finish_site(site)
    return hotlinked


# ---- urban-eats.test: an English food blog with About and Contact pages -------------------------
def _urban_eats(b: _Builder, hotlinked: str) -> None:
    tz = dt.timezone(dt.timedelta(hours=-8))
    site = b.site(
        accent="#aa4628",
        host="urban-eats.test", topic="food-en", name="Urban Eats", kind="blog", lang="en", tz=tz,
        operator="Urban Eats Media LLC", colour=(170, 70, 40), logo_shape="bowl", og_site_name=True,
        nav=[("/", "Home"), ("/page/2", "More recipes"), ("/about", "About"), ("/contact", "Contact")],
        footer=[("/about", "About"), ("/contact", "Contact"), ("/private/", "Staff"),
                ("http://alpine-blog.test/", "Bergblick")],
    )
    recipes: list[tuple[str, str, dt.date, _Plant | str | None]] = [
        ("rooftop-dinner", "Rooftop dinner with a view", dt.date(2026, 1, 18),
         _Plant("jn-conques-sunset", "brightened", "img_src", "rooftop-sunset.jpg")),
        ("moscow-borscht", "Beet borscht, Moscow style", dt.date(2026, 2, 8),
         _Plant("alp-st-basil", "hue_shift", "css_background", "borscht-hero.jpg")),
        ("road-trip-sandwiches", "Road-trip sandwiches", dt.date(2026, 3, 15),
         _Plant("jn-cabrio", "scaled_up", "img_src", "roadtrip-car.jpg")),
        ("injera-night", "Injera night", dt.date(2026, 4, 4), hotlinked),
        ("weeknight-miso-ramen", "Weeknight miso ramen", dt.date(2026, 5, 22), None),
        ("summer-berry-tart", "Summer berry tart", dt.date(2026, 7, 3), None),
        ("roasted-pumpkin-soup", "Roasted pumpkin soup", dt.date(2026, 10, 11), None),
    ]
    author = "Maya Chen"
    cards: list[tuple[dt.date, str, str]] = []
    for slug, title, day, plant in recipes:
        when = site.when(day, 9, 15)
        path = f"/recipes/{slug}"
        refs: list[tuple[str, str]] = []
        teaser = b.photo(site, f"/images/recipes/{slug}.jpg", day, 400)
        body = [f"<article><h1>{html.escape(title)}</h1>", _time(site, when, "Posted "),
                b.embed(site, refs, teaser, "img_src", title), _paragraphs(site.rng, site.topic, 2)]
        if isinstance(plant, _Plant):
            planted = b.planted_image(site, f"/images/recipes/{plant.filename}", plant, day)
            body.append(b.embed(site, refs, planted, plant.embed, title, "The perfect setting"))
        elif isinstance(plant, str) and plant:
            # Hot-linked from another site: the image URL is on nordic-prints.test.
            body.append(b.embed(site, refs, plant, "img_src", "Castle", "Inspiration for tonight"))
        if slug == "roasted-pumpkin-soup":
            # A dead link, as every old blog has one.
            body.append('<p>Still hungry? Try last year\'s <a href="/recipes/old-lasagna">lasagna</a>.</p>')
        body.append(_paragraphs(site.rng, site.topic, 1) + "</article>")
        cards.append(_add_article(site, path, title, "\n".join(body), when, teaser, author, refs))
    cards.sort(reverse=True)
    for n, chunk in enumerate((cards[:4], cards[4:]), start=1):
        path = "/" if n == 1 else f"/page/{n}"
        more = '<p><a href="/page/2">Older recipes »</a></p>' if n == 1 else '<p><a href="/">« Newer recipes</a></p>'
        _cards_page(site, path, "Urban Eats" if n == 1 else f"Recipes, page {n}",
                    "Latest recipes" if n == 1 else f"Page {n}", chunk, "\n" + more)
    refs = []
    kitchen = b.photo(site, "/images/about/kitchen.jpg", site.launched, 360)
    site.add_page(_Page("/about", "About",
                        "<h1>About Urban Eats</h1>\n" + b.embed(site, refs, kitchen, "img_src", "Our kitchen")
                        + "\n<p>Urban Eats is written by Maya Chen and published by Urban Eats Media LLC, "
                        "2150 Example Street, Portland, OR 97201, USA.</p>\n"
                        '<p>Questions? See our <a href="/contact">contact page</a>.</p>', refs=refs))
    site.add_page(_Page("/contact", "Contact", "<h1>Contact</h1>\n<p>Urban Eats Media LLC<br>2150 Example Street<br>"
                        "Portland, OR 97201, USA</p>\n"
                        '<p>Email: <a href="mailto:hello@urban-eats.test">hello@urban-eats.test</a>'
                        '<br>Phone: <a href="tel:+15035550147">+1 503 555 0147</a></p>\n'
                        '<form action="/contact" method="post"><input name="email"><textarea name="message"></textarea>'
                        "<button>Send</button></form>"))
    _blocked_drafts(b, site, [("menu-ideas", "Menu ideas (draft)", dt.date(2026, 10, 20), None)],
                    "Staff area", "Drafts and notes; not for publication.")
    _finish_site(site)


# ---- daily-courier.test: a news site; alpine-lens licenses its images to it ---------------------
def _daily_courier(b: _Builder) -> None:
    tz = dt.timezone.utc
    org = {"@type": "NewsMediaOrganization", "name": "The Daily Courier", "legalName": "Courier Media Group Ltd.",
           "url": "http://daily-courier.test/", "logo": "http://daily-courier.test/static/logo.png",
           "email": "newsroom@daily-courier.test", "telephone": "+44 20 7946 0123",
           "address": {"@type": "PostalAddress", "streetAddress": "1 Example Square", "postalCode": "EC1A 1AA",
                       "addressLocality": "London", "addressCountry": "GB"}}
    publisher = {"@type": "Organization", "name": "The Daily Courier",
                 "logo": {"@type": "ImageObject", "url": "http://daily-courier.test/static/logo.png"}}
    sections = {"world": "World", "business": "Business", "local": "Local"}
    site = b.site(
        accent="#141414",
        host="daily-courier.test", topic="news-en", name="The Daily Courier", kind="news", lang="en-GB", tz=tz,
        operator="Courier Media Group Ltd.", colour=(20, 20, 20), logo_shape="columns", og_site_name=True,
        nav=[("/", "Front page"), *((f"/section/{k}", v) for k, v in sections.items()), ("/about", "About us")],
        footer=[("/about", "About us"), ("/contact", "Contact"), ("/private/", "Newsroom")],
        robots_extra="Disallow: /search\n\nUser-agent: BadBot\nDisallow: /\n",
        launched=dt.date(2025, 9, 1),
    )
    articles = [
        ("red-square-cathedral-reopens", "Red Square cathedral reopens after restoration", dt.date(2026, 3, 9), "world",
         _Plant("alp-st-basil", "exact", "img_src", "st-basils.jpg"), "Photo: Alpine Lens Agency"),
        ("gulf-heritage-tourism-boom", "Gulf heritage sites see tourism boom", dt.date(2025, 11, 20), "world",
         _Plant("alp-bahrain-fort", "padded_black", "img_src", "bahrain-fort-wide.jpg"), "Photo: Alpine Lens Agency"),
        ("air-show-record-crowds", "Air show draws record crowds", dt.date(2026, 5, 16), "world",
         _Plant("jn-tu160", "cropped", "img_src", "airshow.jpg"), "Photo: agency"),
        ("lima-convoy-traffic", "Presidential convoy snarls Lima traffic", dt.date(2026, 6, 2), "world",
         _Plant("jn-lima-escort", "grayscale", "data_src", "lima-convoy.jpg"), "Photo: reader submission"),
        ("motor-club-record-membership", "Motor club reports record membership", dt.date(2026, 7, 21), "business",
         _Plant("alp-adac-hq", "scaled_down", "img_src", "motor-club-hq-thumb.jpg"), "Photo: Alpine Lens Agency"),
        ("council-approves-bridge-repairs", "Council approves bridge repairs", dt.date(2026, 8, 4), "local", None, ""),
        ("markets-report-busy-summer", "Local markets report a busy summer", dt.date(2026, 8, 30), "local", None, ""),
        ("storms-expected-this-weekend", "Storms expected this weekend", dt.date(2026, 9, 12), "local", None, ""),
    ]
    reporters = ("Sam Okafor", "Priya Raman", "Tom Whitaker")
    listing: dict[str, list[tuple[dt.date, str, str]]] = {k: [] for k in sections}
    front: list[tuple[dt.date, str, str]] = []
    for i, (slug, title, day, section, plant, credit) in enumerate(articles):
        when = site.when(day, 6 + i % 5, 5 * i % 60)
        path = f"/news/{day:%Y/%m}/{slug}"
        media = f"/media/{day:%Y/%m}"
        refs: list[tuple[str, str]] = []
        teaser = b.photo(site, f"{media}/{slug}-lead.jpg", day, 440, 0.5625)
        body = [f"<article><h1>{html.escape(title)}</h1>",
                f'<p class="byline">By {reporters[i % 3]} · <a href="/section/{section}">{sections[section]}</a></p>',
                _time(site, when), b.embed(site, refs, teaser, "img_src", title), _paragraphs(site.rng, site.topic, 2)]
        if plant:
            planted = b.planted_image(site, f"{media}/{plant.filename}", plant, day)
            body.append(b.embed(site, refs, planted, plant.embed, title, credit))
        body.append(_paragraphs(site.rng, site.topic, 1) + "</article>")
        card = _add_article(site, path, title, "\n".join(body), when, teaser, reporters[i % 3], refs,
                            kind="NewsArticle", publisher=publisher)
        listing[section].append(card)
        front.append(card)
    for key, label in sections.items():
        _cards_page(site, f"/section/{key}", label, label, sorted(listing[key], reverse=True))
    # The front page lists its cards newest first, but its refs in the order the articles were written.
    site.add_page(_Page("/", "The Daily Courier", "<h1>Today's news</h1>\n<div class=\"cards\">"
                        + "".join(c for _, c, _ in sorted(front, reverse=True)) + "</div>", jsonld=[org],
                        refs=[(site.url(img), "img_src") for _, _, img in front]))
    site.add_page(_Page("/about", "About us", "<h1>About the Daily Courier</h1>\n<p>The Daily Courier is published by "
                        "Courier Media Group Ltd., 1 Example Square, London EC1A 1AA, United Kingdom. Registered in "
                        "England and Wales, company number 00000123.</p>\n"
                        '<p>Editor: Helen Marsh. <a href="/contact">Contact the newsroom</a>.</p>', jsonld=[org]))
    site.add_page(_Page("/contact", "Contact", "<h1>Contact</h1>\n<p>Newsroom: "
                        '<a href="mailto:newsroom@daily-courier.test">newsroom@daily-courier.test</a>, '
                        '<a href="tel:+442079460123">+44 20 7946 0123</a></p>\n<p>Picture desk: '
                        '<a href="mailto:pictures@daily-courier.test">pictures@daily-courier.test</a></p>'))
    _blocked_drafts(b, site, [("embargoed-budget-story", "EMBARGOED: budget story", dt.date(2026, 9, 30), None)],
                    "Newsroom", "Internal: embargoed copy.")
    _finish_site(site)


# ---- bazaar-market.test: a marketplace with listings pages, items and sellers -------------------
def _bazaar_market(b: _Builder) -> None:
    tz = dt.timezone(dt.timedelta(hours=1))
    org = {"@type": "Organization", "name": "Bazaar Market", "legalName": "Bazaar Market Ltd.",
           "url": "http://bazaar-market.test/", "email": "support@bazaar-market.test",
           "address": {"@type": "PostalAddress", "streetAddress": "5 Harbour Road", "postalCode": "D02 XY00",
                       "addressLocality": "Dublin", "addressCountry": "IE"}}
    site = b.site(
        accent="#78288a",
        host="bazaar-market.test", topic="market-en", name="Bazaar Market", kind="marketplace", lang="en", tz=tz,
        operator="Bazaar Market Ltd.", colour=(120, 40, 130), logo_shape="frame", og_site_name=True,
        nav=[("/", "Home"), ("/listings", "All listings"), ("/news/", "Blog"), ("/about", "About")],
        footer=[("/about", "About"), ("/private/", "Seller dashboard")],
        robots_extra="Disallow: /cart\nDisallow: /search\n",
    )
    sellers = {
        "retro-garage": ("Retro Garage", "Stuttgart", "DE", dt.date(2024, 5, 2)),
        "posterworld": ("PosterWorld24", "Valencia", "ES", dt.date(2025, 1, 15)),
        "lens-and-light": ("Lens & Light Studio", "Lyon", "FR", dt.date(2023, 11, 8)),
        "home-finds": ("Home Finds", "Leeds", "GB", dt.date(2025, 8, 21)),
    }
    items = [
        (1001, "Vintage desk lamp", "home-finds", None),
        (1002, "Framed city map", "posterworld", None),
        (1003, "Classic cabriolet poster A2", "retro-garage",
         _Plant("jn-cabrio", "mirrored", "img_src", "main.jpg")),
        (1004, "Handmade ceramic mug", "home-finds", None),
        (1005, "Bridge photo canvas 60x40", "lens-and-light", None),
        (1006, "Retro racing jacket", "retro-garage", None),
        (1007, "Postcard set: churches of Spain", "posterworld",
         _Plant("alp-luesma-church", "collage", "img_src", "main.jpg")),
        (1008, "Pen and coaster set", "home-finds", None),
        (1009, "Forest print, signed", "lens-and-light", None),
        (1010, "Garage sign, enamel", "retro-garage", None),
        (1011, "Travel poster collection", "posterworld", None),
        (1012, "Landscape photo book", "lens-and-light", None),
    ]
    first_day = dt.date(2026, 3, 1)
    cards: dict[int, str] = {}
    main_image: dict[int, str] = {}
    by_seller: dict[str, list[str]] = {k: [] for k in sellers}
    for n, (item_id, title, seller, plant) in enumerate(items):
        day = first_day + dt.timedelta(days=9 * n)
        slug = f"{item_id}-" + "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-").replace("--", "-")
        path = f"/item/{slug}"
        refs: list[tuple[str, str]] = []
        if plant:
            image = b.planted_image(site, f"/img/items/{item_id}/{plant.filename}", plant, day)
        else:
            image = b.photo(site, f"/img/items/{item_id}/main.jpg", day, 360)
        main_image[item_id] = image
        extra = b.photo(site, f"/img/items/{item_id}/detail.jpg", day, 240) if n % 2 == 0 else ""
        seller_name, city, country, _ = sellers[seller]
        price = f"{site.rng.randint(8, 120)}.{site.rng.choice(('00', '50', '99'))}"
        seller_url = site.url(f"/seller/{seller}")
        size = b.sizes[site.url(image)]
        refs.append((site.url(image), "img_src"))
        e = html.escape
        body = (
            f'<div itemscope itemtype="https://schema.org/Product">\n<h1 itemprop="name">{e(title)}</h1>\n'
            f'<figure><img itemprop="image" src="{image}" alt="{e(title)}" '
            f'width="{size[0]}" height="{size[1]}"></figure>\n'
            + (b.embed(site, refs, extra, "img_src", "Detail") + "\n" if extra else "")
            + f'<p itemprop="description">{e(site.rng.choice(_TEXT["market-en"]))}</p>\n'
            f'<meta itemprop="sku" content="BZ-{item_id}">\n'
            '<div itemprop="offers" itemscope itemtype="https://schema.org/Offer">\n'
            f'<p class="price"><span itemprop="price" content="{price}">€{price}</span>'
            '<meta itemprop="priceCurrency" content="EUR"> '
            '<link itemprop="availability" href="https://schema.org/InStock">in stock</p>\n'
            '<p>Sold by <span itemprop="seller" itemscope itemtype="https://schema.org/Organization">'
            f'<a itemprop="url" href="/seller/{seller}"><span itemprop="name">{e(seller_name)}</span></a></span>, '
            f"{e(city)}</p>\n</div>\n</div>\n"
            + _time(site, site.when(day, 12), "Listed on ")
            + '\n<p><a href="/listings">« Back to listings</a></p>'
        )
        product = {"@type": "Product", "name": title, "image": [site.url(image)], "sku": f"BZ-{item_id}",
                   "offers": {"@type": "Offer", "price": price, "priceCurrency": "EUR",
                              "availability": "https://schema.org/InStock", "url": site.url(path),
                              "seller": {"@type": "Organization", "name": seller_name, "url": seller_url,
                                         "address": {"@type": "PostalAddress", "addressLocality": city,
                                                     "addressCountry": country}}}}
        site.add_page(_Page(path, title, body, "product", og_image=site.url(image), jsonld=[product], refs=refs))
        cards[item_id] = _card(site, path, title, image, extra=f"<p>€{price} · {e(seller_name)}</p>")
        by_seller[seller].append(f'<li><a href="{path}">{e(title)}</a> – €{price}</li>')
    per_page = 4
    pages = [items[i:i + per_page] for i in range(0, len(items), per_page)]
    for n, chunk in enumerate(pages, start=1):
        query = "" if n == 1 else f"page={n}"
        pager = []
        if n > 1:
            pager.append(f'<a rel="prev" href="{"/listings" if n == 2 else f"/listings?page={n-1}"}">« Previous</a>')
        pager.extend(f'<a href="{"/listings" if k == 1 else f"/listings?page={k}"}">{k}</a>'
                     for k in range(1, len(pages) + 1))
        if n < len(pages):
            pager.append(f'<a rel="next" href="/listings?page={n+1}">Next »</a>')
        _cards_page(site, "/listings", f"All listings, page {n}", "All listings",
                    [(i, cards[i], main_image[i]) for i, *_ in chunk], f"\n<p class=\"pager\">{' '.join(pager)}</p>",
                    query=query)
    for slug, (name, city, country, since) in sellers.items():
        refs = []
        avatar = site.add_file(f"/img/sellers/{slug}.png", _logo(site.rng, (site.rng.randrange(40, 160),
                               site.rng.randrange(40, 160), site.rng.randrange(40, 160)), "avatar", (96, 96)),
                               site.when(since))
        b.sizes[site.url(avatar)] = (96, 96)
        seller = {"@type": "Organization", "name": name, "url": site.url(f"/seller/{slug}"), "image": site.url(avatar),
                  "address": {"@type": "PostalAddress", "addressLocality": city, "addressCountry": country}}
        body = (f"<h1>{html.escape(name)}</h1>\n" + b.embed(site, refs, avatar, "img_src", name)
                + f"\n<p>Based in {html.escape(city)} ({country}). "
                f'Member since <time datetime="{since.isoformat()}">{_human_date(since, "en")}</time>.</p>\n'
                f"<h2>Items</h2>\n<ul>{''.join(by_seller[slug])}</ul>")
        site.add_page(_Page(f"/seller/{slug}", name, body, "profile", jsonld=[seller], refs=refs))
    posts = [("seller-of-the-month-march", "Seller of the month: Lens & Light Studio", dt.date(2026, 3, 31)),
             ("spring-clean-sale", "Spring clean sale starts Friday", dt.date(2026, 4, 22))]
    post_items = []
    meet = ("\n<p>Meet our sellers: "
            + ", ".join(f'<a href="/seller/{s}">{html.escape(v[0])}</a>' for s, v in sellers.items()) + ".</p>")
    for slug, title, day in posts:
        path = f"/news/{slug}"
        _short_post(b, site, path, title, site.when(day, 11), f"/img/blog/{slug}.jpg", "Bazaar team",
                    {"@type": "Organization", "name": "Bazaar Market"}, meet)
        post_items.append(f'<li><a href="{path}">{html.escape(title)}</a></li>')
    site.add_page(_Page("/news/", "Blog", "<h1>Bazaar blog</h1>\n<ul>" + "".join(post_items) + "</ul>"))
    featured = (1001, 1005, 1010)
    refs = [(site.url(main_image[i]), "img_src") for i in featured]
    site.add_page(_Page("/", "Bazaar Market – buy and sell anything",
                        "<h1>Featured</h1>\n<div class=\"cards\">" + "".join(cards[i] for i in featured) + "</div>\n"
                        '<p><a href="/listings">Browse all listings »</a></p>\n<h2>Sellers</h2>\n<ul>'
                        + "".join(f'<li><a href="/seller/{s}">{html.escape(v[0])}</a></li>' for s, v in sellers.items())
                        + '</ul>\n<p>Latest from the <a href="/news/">blog</a>.</p>', jsonld=[org], refs=refs))
    site.add_page(_Page("/about", "About", "<h1>About Bazaar Market</h1>\n<p>Bazaar Market is operated by Bazaar Market "
                        "Ltd., 5 Harbour Road, Dublin D02 XY00, Ireland. Contact: "
                        '<a href="mailto:support@bazaar-market.test">support@bazaar-market.test</a>.</p>\n'
                        "<p>Sellers are responsible for the items and pictures they list.</p>", jsonld=[org]))
    _blocked_drafts(b, site, [("payouts", "Payout report", dt.date(2026, 9, 30), None)],
                    "Seller dashboard", "Sign in to see your payouts.")
    _finish_site(site)


# ==== build =======================================================================================
def _inputs_hash(seed: int, customers_file: Path, images: Iterable[RegisteredImage], unrelated: Iterable[Path]) -> str:
    """Everything the output depends on: seed, generator source, customers file and image bytes."""
    h = hashlib.sha256()
    h.update(f"v{GENERATOR_VERSION}:seed={seed}\n".encode())
    h.update(Path(__file__).read_bytes())
    h.update(customers_file.read_bytes())
    for img in sorted(images, key=lambda i: (i.customer_id, i.image_id)):
        h.update(f"{img.customer_id}/{img.image_id}\n".encode())
        h.update(img.path.read_bytes())
    for p in unrelated:
        h.update(p.read_bytes())
    return h.hexdigest()


def _generate(seed: int, images: dict[str, RegisteredImage], unrelated: list[Path]) -> _Builder:
    b = _Builder(seed, images, _PhotoPool(unrelated))
    _alpine_blog(b)
    hotlinked = _nordic_prints(b)
    _urban_eats(b, hotlinked)
    _daily_courier(b)
    _bazaar_market(b)
    return b


def _site_info(site: _Site, builder: _Builder) -> SiteInfo:
    public = [p for p in site.pages if not p.path.startswith("/private/")]
    with_images = sum(1 for p in public if p.refs or (p.og_image and p.og_image in builder.planted))
    return SiteInfo(site.host, site.name, site.kind, site.operator, site.url("/"), len(public), with_images,
                    len(site.pages) - len(public))


def _write(staging: Path, builder: _Builder, marker: dict[str, Any]) -> None:
    manifest: dict[str, dict[str, dict[str, str]]] = {}
    for site in builder.sites:
        routes: dict[str, dict[str, str]] = {}
        for key, (rel, data, modified) in sorted(site.files.items()):
            target = staging / SITES_DIR / site.host / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            suffix = Path(rel).suffix
            routes[key] = {
                "file": rel,
                "content_type": CONTENT_TYPES[suffix],
                "etag": '"' + hashlib.sha256(data).hexdigest()[:24] + '"',
                "last_modified": modified.astimezone(dt.timezone.utc).isoformat(),
            }
        manifest[site.host] = routes
    truth, blocked = builder.truth()
    sites = sorted((_site_info(s, builder) for s in builder.sites), key=lambda s: s.host)

    def dump(obj: Any) -> bytes:
        return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

    (staging / MANIFEST).write_bytes(dump(manifest))
    (staging / "truth.json").write_bytes(dump([asdict(t) for t in truth]))
    (staging / "blocked.json").write_bytes(dump([asdict(t) for t in blocked]))
    (staging / "sites.json").write_bytes(dump([asdict(s) for s in sites]))
    (staging / "seeds.txt").write_text("".join(s.start_url + "\n" for s in sites), encoding="utf-8")
    # The marker goes last: its presence means every other file is complete.
    (staging / MARKER).write_bytes(dump(marker))


def _load(out_dir: Path, seed: int, rebuilt: bool) -> DemoWeb:
    def read(name: str) -> Any:
        return json.loads((out_dir / name).read_text(encoding="utf-8"))

    return DemoWeb(
        root=out_dir, seed=seed,
        sites=tuple(SiteInfo(**s) for s in read("sites.json")),
        truth=tuple(PlantedCopy(**t) for t in read("truth.json")),
        blocked=tuple(PlantedCopy(**t) for t in read("blocked.json")),
        rebuilt=rebuilt,
    )


def _read_marker(out_dir: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) else None


def build(out_dir: Path, customers_file: Path, seed: int = 7) -> DemoWeb:
    """Generate the demo web into ``out_dir`` (or reuse a completed build of the same inputs)."""
    out_dir = Path(out_dir)
    root = repo_root()
    customers = load_customers(Path(customers_file), root)
    images = {img.image_id: img for c in customers for img in c.images}
    unrelated = [root / p for p in UNRELATED_ASSETS]
    missing = [str(p) for p in unrelated if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"demo web assets missing: {', '.join(missing)}")
    marker = {"generator": GENERATOR_VERSION, "seed": seed,
              "inputs": _inputs_hash(seed, Path(customers_file), images.values(), unrelated)}

    if _read_marker(out_dir) == marker:
        return _load(out_dir, seed, rebuilt=False)
    if out_dir.exists() and any(out_dir.iterdir()) and _read_marker(out_dir) is None:
        # Only ever replace our own output: out_dir may be a mistyped path to something precious.
        raise ValueError(f"{out_dir} exists, is not empty and is not a demo web build; refusing to replace it")

    builder = _generate(seed, images, unrelated)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        _write(staging, builder, marker)
        # Swap the finished tree into place so a reader never sees a half-written web.
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex}"
        if out_dir.exists():
            os.replace(out_dir, old)
        try:
            os.replace(staging, out_dir)
        except OSError:
            # Another process finished the same build first; keep theirs if it matches.
            if _read_marker(out_dir) != marker:
                raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _load(out_dir, seed, rebuilt=True)


# ==== serve =======================================================================================
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}


@dataclass(frozen=True)
class _Route:
    path: Path
    content_type: str
    etag: str
    last_modified: dt.datetime


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, dict[str, _Route]]
    root: Path

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A crawler that drops a connection mid-response is normal; do not print tracebacks.
        log.debug("demo web: error serving %s", client_address, exc_info=True)


class _ProxyServer6(_ProxyServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real sites and Scrapy use
    server_version = "copyhunt-demo-web/1"

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("demo web: " + format, *args)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _target(self) -> tuple[str, str, str]:
        """(host, path, query) from an absolute-URI request line or the Host header."""
        if self.path.startswith(("http://", "https://")):
            parts = urlsplit(self.path)
            host = parts.hostname or ""
        else:
            parts = urlsplit(self.path)
            host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        return host.lower().rstrip("."), parts.path or "/", parts.query

    def _serve(self, send_body: bool) -> None:
        host, path, query = self._target()
        routes = self.server.routes.get(host)
        if routes is None:
            if host in _LOOPBACK_NAMES and path == "/":
                self._help(send_body)
            elif host in _LOOPBACK_NAMES:
                self._simple(404, "Not found", "Use this server as an HTTP proxy for the demo hosts.", send_body)
            else:
                self._simple(502, "Bad gateway", f"The demo web has no site called {host or '(none)'}.", send_body)
            return
        key = route_key(path, query)
        route = routes.get(key)
        if route is None:
            # Redirect a missing or extra trailing slash, as most web servers do.
            alt = path[:-1] if path.endswith("/") and len(path) > 1 else path + "/"
            if not query and route_key(alt) in routes:
                self.send_response(301)
                self.send_header("Location", f"http://{host}{alt}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._simple(404, "Not found", f"http://{host}{path} does not exist.", send_body)
            return
        headers = {"ETag": route.etag, "Last-Modified": _http_date(route.last_modified),
                   # no-cache: clients may store but must revalidate, which exercises the 304 path.
                   "Cache-Control": "no-cache"}
        if self._not_modified(route):
            self.send_response(304)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            return
        data = route.path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if send_body:
            self.wfile.write(data)

    def _not_modified(self, route: _Route) -> bool:
        inm = self.headers.get("If-None-Match")
        if inm is not None:
            # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
            tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
            return "*" in tags or route.etag in tags
        ims = self.headers.get("If-Modified-Since")
        if ims:
            try:
                since = parsedate_to_datetime(ims)
            except (TypeError, ValueError):
                return False
            if since.tzinfo is None:
                since = since.replace(tzinfo=dt.timezone.utc)
            # HTTP dates have whole seconds.
            return route.last_modified.replace(microsecond=0) <= since
        return False

    def _simple(self, status: int, title: str, text: str, send_body: bool) -> None:
        heading = html.escape(title if status == 200 else f"{status} {title}")
        page = (f"<!DOCTYPE html>\n<html><head><title>{heading}</title></head>"
                f"<body><h1>{heading}</h1><p>{html.escape(text)}</p></body></html>\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        if send_body:
            self.wfile.write(page)

    def _help(self, send_body: bool) -> None:
        port = self.server.server_address[1]
        hosts = ", ".join(sorted(self.server.routes))
        self._simple(200, "copyhunt demo web",
                     f"This is an HTTP proxy for the demo sites {hosts}. Try: "
                     f"curl -x http://127.0.0.1:{port} http://alpine-blog.test/", send_body)


def _load_routes(root: Path) -> dict[str, dict[str, _Route]]:
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{root} has no {MANIFEST}; run build() first") from None
    return {
        host: {key: _Route(root / SITES_DIR / host / r["file"], r["content_type"], r["etag"],
                           dt.datetime.fromisoformat(r["last_modified"]))
               for key, r in routes.items()}
        for host, routes in manifest.items()
    }


class DemoWebServer:
    """The demo web's HTTP forward proxy, serving in a background thread."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0):
        server_cls = _ProxyServer6 if ":" in host else _ProxyServer
        self._httpd = server_cls((host, port), _Handler)
        self._httpd.routes = _load_routes(Path(root))
        self._httpd.root = Path(root)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"demo-web-{self.port}", daemon=True)
        self._thread.start()

    @property
    def proxy_url(self) -> str:
        return f"http://[{self.host}]:{self.port}" if ":" in self.host else f"http://{self.host}:{self.port}"

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(sorted(self._httpd.routes))

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> DemoWebServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve(root: Path, host: str = "127.0.0.1", port: int = 0) -> DemoWebServer:
    """Serve a built demo web (``root`` = build's out_dir) as an HTTP proxy; port 0 picks a free one."""
    return DemoWebServer(root, host, port)


def run_demo_web(out_dir: Path, customers_file: Path, host: str = "127.0.0.1", port: int = 8899,
                 seed: int = 7) -> int:
    """Build (if needed) and serve the demo web until SIGINT or SIGTERM; return an exit code."""
    web = build(Path(out_dir), Path(customers_file), seed)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with serve(web.root, host, port) as server:
            print(f"demo web {'built' if web.rebuilt else 'reused'} in {web.root}")
            print(f"proxy: {server.proxy_url}   (crawler: COPYHUNT_CRAWL_PROXY={server.proxy_url})")
            for s in web.sites:
                print(f"  {s.start_url:32} {s.kind:12} {s.pages:3} pages")
            print(f"seeds: {web.seeds_file}   truth: {web.truth_file} ({len(web.truth)} planted copies)")
            print(f"try: curl -x {server.proxy_url} http://alpine-blog.test/", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def _main(argv: list[str] | None = None) -> int:
    from copyhunt.config import load_settings

    settings = load_settings()
    parser = argparse.ArgumentParser(description="Build and serve the copyhunt demo web.")
    parser.add_argument("--out", type=Path, default=settings.seeds_path.parent)
    parser.add_argument("--customers", type=Path, default=settings.customers_path)
    parser.add_argument("--host", default=settings.demo_web_host)
    parser.add_argument("--port", type=int, default=settings.demo_web_port)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    return run_demo_web(args.out, args.customers, args.host, args.port, args.seed)


if __name__ == "__main__":
    raise SystemExit(_main())
