"""The size a page displays an image at, from the width and height its markup declares."""

from __future__ import annotations

import re
from typing import Any

from copyhunt.enrich.page import Page, absolute_url, as_page

def _dimension(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*(\d{1,5})\s*(?:px)?\s*", value)
    return int(m.group(1)) if m and 0 < int(m.group(1)) <= 20000 else None


def display_size(html: Page | bytes | str | None, page_url: str, image_url: str) -> tuple[int | None, int | None, str]:
    """(width, height, source) the page displays the image at, from its <img> width/height.

    The largest declared size among the elements that show this image wins; (None, None, reason)
    when the page declares none (CSS backgrounds, srcset-only, og:image share previews).
    """
    page = as_page(html)
    if page.doc is None:
        return None, None, "unknown:no-html"
    best: tuple[int, int, int] | None = None
    shown_as: set[str] = set()
    for el in page.doc.xpath("(//img|//source|//meta[@content]|//*[@style]|//*[@data-src])[position() <= 5000]"):
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        refs = [el.get(a) for a in ("src", "data-src", "data-lazy-src", "data-original")]
        for a in ("srcset", "data-srcset"):
            refs.extend(part.strip().split(" ")[0] for part in (el.get(a) or "").split(",") if part.strip())
        if tag == "meta" and (el.get("property") or el.get("name") or "").lower() in ("og:image", "twitter:image"):
            refs.append(el.get("content"))
        if el.get("style"):
            refs.extend(re.findall(r"url\(\s*['\"]?([^'\")]+)", el.get("style") or ""))
        if not any(absolute_url(r, page_url) == image_url for r in refs if r):
            continue
        shown_as.add("og:image" if tag == "meta" else tag)
        w, h = _dimension(el.get("width")), _dimension(el.get("height"))
        if tag == "img" and (w or h):
            longest = max(w or 0, h or 0)
            if best is None or longest > best[0]:
                best = (longest, w or 0, h or 0)
    if best is not None:
        return best[1] or None, best[2] or None, "img-attributes"
    if not shown_as:
        return None, None, "unknown:image-not-referenced-in-html"
    return None, None, "unknown:no-declared-size(" + ",".join(sorted(shown_as)) + ")"
