"""The marketplace seller a product page names (JSON-LD Offer.seller, else microdata)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

from copyhunt.enrich.operator import postal_address
from copyhunt.enrich.page import Page, absolute_url, as_page, bounded, jsonld_types, text_of

@dataclass(frozen=True)
class Seller:
    """The seller a product page names (JSON-LD Offer.seller or microdata), and where it is described."""

    name: str
    source: str
    url: str | None = None  # the seller's own page, absolute
    address: str | None = None


def _offers(product: Mapping) -> Iterator[dict]:
    offers = product.get("offers")
    for offer in offers if isinstance(offers, list) else [offers]:
        if isinstance(offer, dict):
            yield offer
            inner = offer.get("offers")  # AggregateOffer
            if isinstance(inner, list):
                yield from (o for o in inner[:50] if isinstance(o, dict))


def seller_from_page(html: Page | bytes | str | None, page_url: str = "") -> Seller | None:
    """The marketplace seller of a product page: JSON-LD Product offers.seller, else microdata."""
    page = as_page(html)
    if page.doc is None:
        return None
    for obj in page.jsonld:
        if not jsonld_types(obj) & {"Product", "Offer", "IndividualProduct", "ProductModel"}:
            continue
        for offer in _offers(obj) if "Offer" not in jsonld_types(obj) else [obj]:
            seller = offer.get("seller")
            if isinstance(seller, list) and seller:
                seller = seller[0]
            if isinstance(seller, str) and (name := bounded(seller)):
                return Seller(name, "json-ld:Offer.seller")
            if isinstance(seller, dict) and (name := bounded(seller.get("legalName") or seller.get("name"))):
                url = absolute_url(seller.get("url") or seller.get("@id"), page_url)
                return Seller(name, "json-ld:Offer.seller", url, postal_address(seller.get("address")))
    for el in page.doc.xpath('//*[@itemprop="seller"]')[:5]:
        names = el.xpath('.//*[@itemprop="name"]')
        name = bounded((names[0].get("content") or text_of(names[0])) if names else text_of(el))
        if name:
            links = el.xpath('.//*[@itemprop="url"]/@href') or el.xpath(".//a/@href")
            return Seller(name, "microdata:Offer.seller", absolute_url(links[0] if links else None, page_url))
    return None
