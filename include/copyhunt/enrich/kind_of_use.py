"""The kind of use a page makes of an image, as pricing needs it: product, editorial, social or commercial."""

from __future__ import annotations

from copyhunt.enrich.page import Page, as_page, jsonld_types

# Hosts whose pages are posts on a social network: priced as social media use.
SOCIAL_DOMAINS = frozenset({
    "facebook.com", "fb.com", "instagram.com", "twitter.com", "x.com", "pinterest.com", "pinterest.de", "pinterest.co.uk",
    "tiktok.com", "linkedin.com", "reddit.com", "tumblr.com", "threads.net", "vk.com", "bsky.app", "mastodon.social",
    "flickr.com", "youtube.com", "xing.com",
})
_EDITORIAL_TYPES = {"Article", "NewsArticle", "BlogPosting", "Blog", "Report", "ScholarlyArticle", "TechArticle", "LiveBlogPosting", "OpinionNewsArticle"}
_PRODUCT_TYPES = {"Product", "IndividualProduct", "ProductModel", "Offer", "AggregateOffer", "Vehicle", "Car"}


def page_kind(html: Page | bytes | str | None, registrable: str = "") -> tuple[str, str]:
    """(kind of use, why): product (shop or marketplace product photo), editorial (article or
    blog post), social (a social network), or commercial (any other site)."""
    if registrable in SOCIAL_DOMAINS:
        return "social", f"domain:{registrable}"
    page = as_page(html)
    if page.doc is None:
        return "commercial", "unknown:no-html(default)"
    types = set().union(*(jsonld_types(o) for o in page.jsonld)) if page.jsonld else set()
    if types & _PRODUCT_TYPES:
        return "product", "json-ld:" + sorted(types & _PRODUCT_TYPES)[0]
    if types & _EDITORIAL_TYPES:
        return "editorial", "json-ld:" + sorted(types & _EDITORIAL_TYPES)[0]
    og_type = [t.strip().lower() for t in page.doc.xpath('//meta[@property="og:type"]/@content')[:1]]
    if og_type and og_type[0] in ("product", "product.item", "og:product"):
        return "product", f"og:type={og_type[0]}"
    if og_type and og_type[0] == "article":
        return "editorial", "og:type=article"
    if page.doc.xpath('//*[@itemtype][contains(@itemtype, "schema.org/Product")]'):
        return "product", "microdata:Product"
    return "commercial", "default:no-product-or-article-markup"
