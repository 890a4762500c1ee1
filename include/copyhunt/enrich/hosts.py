"""Host names and registrable domains of URLs (tldextract's bundled suffix list, never the network)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_tld = None


def registrable_domain(host: str) -> str:
    """example.co.uk for shop.example.co.uk; uses tldextract's bundled suffix list, no network."""
    global _tld
    if _tld is None:
        import tldextract

        # Private suffixes too: alice.github.io and bob.github.io are two sites, not one.
        _tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True)
    host = (host or "").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host.strip("[]")))  # an address is its own site
    except ValueError:
        pass
    parts = _tld(host)
    if parts.domain and parts.suffix:
        return f"{parts.domain}.{parts.suffix}"
    # Reserved names such as .test have no public suffix: the last two labels are the site.
    labels = [p for p in host.split(".") if p]
    return ".".join(labels[-2:]) if labels else ""


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
