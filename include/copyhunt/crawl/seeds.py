"""Seeds and which spider crawls them; pure functions.

A seed is a start URL, optionally preceded by the spider to use::

    http://alpine-blog.test/                 the site spider (the default)
    marketplace http://bazaar-market.test/   the marketplace spider
    site http://shop.example/                the site spider, even if its host is listed below

A seed without a spider name goes to the marketplace spider when its host (or a parent domain of
it) is in ``marketplace_hosts`` (``settings.crawl_marketplace_hosts``, comma-separated). All seeds
of one host go to one spider, so two spiders never crawl the same site: if any seed of a host
names the marketplace spider, the host is a marketplace.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from copyhunt.crawl.urls import host_of

SPIDERS = ("site", "marketplace")
DEFAULT_SPIDER = "site"


class SeedError(ValueError):
    """A seed line names an unknown spider."""


def parse_seed(line: str) -> tuple[str | None, str]:
    """``(spider or None, url)`` from one seed line (``URL`` or ``SPIDER URL``)."""
    parts = line.split()
    if len(parts) == 2:
        if parts[0].lower() not in SPIDERS:
            raise SeedError(f"unknown spider {parts[0]!r} in seed {line.strip()!r}; one of {', '.join(SPIDERS)}")
        return parts[0].lower(), parts[1]
    if len(parts) == 1:
        return None, parts[0]
    raise SeedError(f"expected 'URL' or 'SPIDER URL', got {line.strip()!r}")


def read_seeds_file(path: Path) -> list[str]:
    """Seed lines of a file; blank lines and ``#`` comments ignored."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def parse_hosts(value: str | Iterable[str]) -> frozenset[str]:
    """Host names from ``"a.test, b.test"`` (or an iterable), lower case, without ``www.``."""
    items = value.split(",") if isinstance(value, str) else value
    out = set()
    for item in items:
        host = item.strip().lower().rstrip(".")
        if host:
            out.add(host[4:] if host.startswith("www.") else host)
    return frozenset(out)


def _listed(host: str, hosts: frozenset[str]) -> bool:
    return any(host == h or host.endswith("." + h) for h in hosts)


def assign_spiders(seeds: Iterable[str], marketplace_hosts: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Spider name -> its seed URLs (in the order given).

    A line that does not parse goes to the site spider as it is, which reports it as a
    ``bad-url`` error: one bad seed line costs that seed, not the run.
    """
    parsed: list[tuple[str | None, str]] = []
    for line in seeds:
        if not line or not line.strip():
            continue
        try:
            parsed.append(parse_seed(line))
        except SeedError:
            parsed.append(("site", line.strip()))
    named: dict[str, set[str]] = {}
    for spider, url in parsed:
        if spider is not None:
            named.setdefault(host_of(url), set()).add(spider)

    def spider_for(host: str) -> str:
        chosen = named.get(host, set())
        if "marketplace" in chosen:
            return "marketplace"
        if "site" in chosen:
            return "site"
        return "marketplace" if _listed(host, marketplace_hosts) else DEFAULT_SPIDER

    out: dict[str, list[str]] = {}
    for _, url in parsed:
        out.setdefault(spider_for(host_of(url)), []).append(url)
    return out
