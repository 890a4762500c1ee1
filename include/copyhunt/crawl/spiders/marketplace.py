"""The marketplace spider: walk listing pagination to the product pages, and record who sells.

Everything the site spider does (pages, images, links within the seeds' domains), plus:

* a page whose structured data describes a Product is a ``product`` page, and its row carries
  the seller's name and seller page from JSON-LD (Product/Offer/seller) or, failing that,
  microdata (:func:`copyhunt.crawl.market.product_sellers`);
* a page with pagination links is a ``listing``; following its pagination does not count
  against the depth limit (a marketplace lists thousands of items across hundreds of pages, each
  page one step from the home page in the sense that matters), but stops at a listing page that
  links to nothing the listing's earlier pages did not: an endless pagination (``?page=N`` for
  every N, empty or repeating the last page) is a trap.

Which seeds go to this spider is decided per host by process.py (a ``marketplace URL`` line in
the seeds file, or ``settings.crawl_marketplace_hosts``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from lxml import etree
from scrapy.http import Response

from copyhunt.crawl.items import ErrorItem, PageItem
from copyhunt.crawl.market import is_product_page, listing_key, pagination_links, product_sellers
from copyhunt.crawl.middlewares import META_PAGINATION_HOPS
from copyhunt.crawl.pages import extract_links
from copyhunt.crawl.results import CrawlRun
from copyhunt.crawl.spiders.site import SiteSpider

_META_PAGINATION = "copyhunt_pagination_links"  # cached per response: both hooks need them


class MarketplaceSpider(SiteSpider):
    name = "marketplace"

    def __init__(self, seeds: Iterable[str] = (), crawl_run: CrawlRun | None = None, **kwargs: Any):
        super().__init__(seeds, crawl_run, **kwargs)
        self.requested_pages: set[str] = set(self.seeds)  # pagination links already followed
        self.listing_links: dict[tuple[Any, ...], set[str]] = {}  # listing -> links its pages showed

    def _pagination(self, response: Response, doc: etree._Element) -> list[str]:
        if _META_PAGINATION not in response.meta:
            response.meta[_META_PAGINATION] = pagination_links(doc, response.url)
        return response.meta[_META_PAGINATION]

    def page_item(self, response: Response, url: str, doc: etree._Element) -> PageItem:
        item = super().page_item(response, url, doc)
        sellers = product_sellers(doc, response.url)
        if sellers or is_product_page(doc):
            item.page_kind = "product"
            if sellers:
                first = sellers[0]
                item.seller_name, item.seller_url, item.seller_source = first.name, first.url, first.source
        elif response.meta.get(META_PAGINATION_HOPS, 0) or self._pagination(response, doc):
            item.page_kind = "listing"
        return item

    def follow(self, response: Response, url: str, doc: etree._Element) -> Iterator[Any]:
        hops = response.meta.get(META_PAGINATION_HOPS, 0)
        pagination = self._pagination(response, doc)
        paging = set(pagination)
        others = [link for link in extract_links(doc, response.url) if link not in paging]
        for link in others:
            if link not in self.seen_pages:
                yield self.page_request(link, response, **{META_PAGINATION_HOPS: hops})
        if not pagination:
            return
        shown = self.listing_links.setdefault(listing_key(url), set())
        fresh = set(others) - shown
        shown.update(others)
        unseen = [link for link in pagination if link not in self.requested_pages]
        if hops and not fresh and unseen:
            # Reached by pagination, lists nothing the listing's earlier pages did not, and still
            # offers more pages: the listing has ended but its pagination has not.
            if self.crawler.stats is not None:
                self.crawler.stats.inc_value("copyhunt/dropped/endless-pagination")
            yield ErrorItem(unseen[0], "trap:endless-pagination", f"{url} lists nothing new")
            return
        self.requested_pages.update(pagination)
        for link in pagination:
            yield self.page_request(link, response, **{META_PAGINATION_HOPS: hops + 1})
