"""Whether a page credits the author of an image (attribution)."""

from __future__ import annotations

import re
from typing import Iterable

from copyhunt.enrich.page import Page, as_page, bounded

# Words that describe a customer's business rather than name it: "Jana Novak Photography" is
# credited as "Foto: Jana Novak" as often as in full.
_GENERIC_NAME_WORDS = {"photography", "photo", "photos", "fotografie", "foto", "fotos", "studio", "studios", "agency",
                       "agentur", "images", "pictures", "bildagentur", "media", "medien", "gmbh", "ltd", "llc", "inc"}


def attribution(html: Page | bytes | str | None, author_names: Iterable[str]) -> tuple[bool, str]:
    """(credited, evidence): whether the page names the author anywhere in its visible text or an
    image's alt/title, with the text found (or what was looked for)."""
    page = as_page(html)
    variants: list[str] = []
    for name in author_names:
        name = bounded(name) or ""
        if not name:
            continue
        variants.append(name)
        words = name.split()
        while words and words[-1].casefold().strip(".") in _GENERIC_NAME_WORDS:
            words.pop()
        short = " ".join(words)
        if short and short != name and (len(words) >= 2 or len(short) >= 6):
            variants.append(short)
    if not variants:
        return False, "unknown:no-author-name"
    if page.doc is None:
        return False, "unknown:no-html"
    texts = [page.text] + [v for v in page.doc.xpath("//img/@alt|//img/@title")[:500] if isinstance(v, str)]
    for variant in dict.fromkeys(variants):
        pattern = re.compile(r"(?<!\w)" + re.escape(variant).replace(r"\ ", r"\s+") + r"(?!\w)", re.I)
        for text in texts:
            m = pattern.search(text)
            if m:
                start = max(0, m.start() - 40)
                return True, bounded(text[start:m.end() + 40], 120) or variant
    return False, "not-found:" + "|".join(dict.fromkeys(variants))[:200]
