"""Tests of the demo web: deterministic build, the proxy server on loopback, truth.json, customers.

Every HTTP test talks to a real DemoWebServer through urllib's ProxyHandler, the way the crawler
reaches the demo hosts; nothing is mocked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import io
import json
import urllib.error
import urllib.request
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator
from urllib.parse import urljoin, urlsplit

import pytest
from PIL import Image

from copyhunt.demo.customers import load_customers, repo_root
from copyhunt.demo.web import EMBEDS, TRANSFORMS, DemoWeb, DemoWebServer, build, serve

CUSTOMERS = repo_root() / "demo" / "customers.toml"
HOSTS = {"alpine-blog.test", "urban-eats.test", "daily-courier.test", "nordic-prints.test", "bazaar-market.test"}


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> DemoWeb:
    return build(tmp_path_factory.mktemp("demo") / "web", CUSTOMERS)


@pytest.fixture(scope="module")
def server(web: DemoWeb) -> Iterator[DemoWebServer]:
    with serve(web.root) as srv:
        yield srv


@pytest.fixture(scope="module")
def opener(server: DemoWebServer) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({"http": server.proxy_url}))


def fetch(opener: urllib.request.OpenerDirector, url: str, headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET through the proxy; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


class _Refs(HTMLParser):
    """Links and image references of a page, the way a crawler would collect them."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "img":
            self.images += [a[k] for k in ("src", "data-src") if a.get(k)]
            self.images += [c.strip().split()[0] for c in a.get("srcset", "").split(",") if c.strip()]
        if tag == "meta" and a.get("property") == "og:image":
            self.images.append(a.get("content", ""))
        if "background-image" in a.get("style", ""):
            self.images.append(a["style"].split("url(", 1)[1].split(")", 1)[0].strip("'\""))


def refs_of(html: str) -> _Refs:
    parser = _Refs()
    parser.feed(html)
    return parser


def manifest(web: DemoWeb) -> dict[str, dict[str, dict[str, str]]]:
    return json.loads((web.root / "manifest.json").read_text())


def public_pages(web: DemoWeb) -> Iterator[tuple[str, str]]:
    """(page URL, HTML) for every page a robots-obeying crawler may fetch, read from disk."""
    for host, routes in manifest(web).items():
        for key, route in routes.items():
            if route["content_type"].startswith("text/html") and not key.startswith("/private/"):
                yield f"http://{host}{key}", (web.site_dir(host) / route["file"]).read_text(encoding="utf-8")


def content_images(page_url: str, html: str) -> set[str]:
    """Absolute URLs of a page's images, without site furniture (logo, spacer) and data: URIs."""
    found = set()
    for src in refs_of(html).images:
        if src and not src.startswith("data:"):
            url = urljoin(page_url, src)
            if not urlsplit(url).path.startswith("/static/"):
                found.add(url)
    return found


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---- build ---------------------------------------------------------------------------------------
def test_build_is_deterministic(web: DemoWeb, tmp_path: Path) -> None:
    other = build(tmp_path / "a", CUSTOMERS)
    third = build(tmp_path / "b", CUSTOMERS)
    assert other.rebuilt and third.rebuilt
    assert file_hashes(web.root) == file_hashes(other.root) == file_hashes(third.root)


def test_build_reuses_a_completed_build_and_rebuilds_for_a_new_seed(tmp_path: Path) -> None:
    first = build(tmp_path / "web", CUSTOMERS)
    again = build(tmp_path / "web", CUSTOMERS)
    assert first.rebuilt and not again.rebuilt
    assert again.truth == first.truth and again.sites == first.sites
    reseeded = build(tmp_path / "web", CUSTOMERS, seed=8)
    assert reseeded.rebuilt
    assert file_hashes(tmp_path / "web") != file_hashes(build(tmp_path / "seed7", CUSTOMERS).root)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging directories left behind"


def test_build_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing"):
        build(tmp_path, CUSTOMERS)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_seeds_and_sites(web: DemoWeb) -> None:
    seeds = web.seeds_file.read_text().split()
    assert seeds == sorted(f"http://{h}/" for h in HOSTS)
    assert {s.host for s in web.sites} == HOSTS
    assert {s.kind for s in web.sites} == {"blog", "news", "shop", "marketplace"}


def test_build_is_small(web: DemoWeb) -> None:
    total = sum(p.stat().st_size for p in web.root.rglob("*") if p.is_file())
    assert total < 6 * 1024 * 1024


# ---- truth ---------------------------------------------------------------------------------------
def test_truth_covers_every_customer_image_transform_and_embed(web: DemoWeb) -> None:
    truth = json.loads(web.truth_file.read_text())
    assert truth == sorted(truth, key=lambda t: (t["page_url"], t["image_url"]))
    assert 15 <= len(truth) <= 25
    registered = {(i.customer_id, i.image_id) for c in load_customers(CUSTOMERS, repo_root()) for i in c.images}
    assert {(t["customer_id"], t["image_id"]) for t in truth} == registered
    assert {t["transform"] for t in truth} == set(TRANSFORMS)
    embeds = Counter(t["embed"] for t in truth)
    assert set(embeds) == set(EMBEDS)
    assert embeds["img_src"] > len(truth) / 2
    assert {urlsplit(t["page_url"]).hostname for t in truth} == HOSTS
    # alpine-lens licenses daily-courier.test: at least one of its copies must be there.
    assert any(t["customer_id"] == "alpine-lens" and "daily-courier.test" in t["page_url"] for t in truth)


def test_truth_is_complete(web: DemoWeb) -> None:
    """Every reference to a planted image, on any public page, is listed in truth.json."""
    truth = {(t.page_url, t.image_url) for t in web.truth}
    planted = {t.image_url for t in web.truth} | {t.image_url for t in web.blocked}
    seen = set()
    for page_url, html in public_pages(web):
        for image_url in content_images(page_url, html) & planted:
            seen.add((page_url, image_url))
    assert seen == truth
    assert all("/private/" in t.page_url for t in web.blocked)


def test_unrelated_images_are_not_customer_images(web: DemoWeb) -> None:
    originals = {hashlib.sha256(i.path.read_bytes()).hexdigest()
                 for c in load_customers(CUSTOMERS, repo_root()) for i in c.images}
    planted = {t.image_url for t in web.truth} | {t.image_url for t in web.blocked}
    for host, routes in manifest(web).items():
        for key, route in routes.items():
            if route["content_type"].startswith("image/") and f"http://{host}{key}" not in planted:
                data = (web.site_dir(host) / route["file"]).read_bytes()
                assert hashlib.sha256(data).hexdigest() not in originals, key


def test_at_least_30_pages_with_images(web: DemoWeb) -> None:
    with_images = [url for url, html in public_pages(web) if content_images(url, html)]
    assert len(with_images) >= 30
    assert sum(s.pages_with_images for s in web.sites) == len(with_images)


# ---- serving -------------------------------------------------------------------------------------
def test_home_page_via_proxy(opener: urllib.request.OpenerDirector) -> None:
    status, headers, body = fetch(opener, "http://alpine-blog.test/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert body.startswith(b"<!DOCTYPE html>") and b"</html>" in body


def test_origin_form_request_dispatches_by_host_header(server: DemoWebServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/about", headers={"Host": "urban-eats.test"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert b"Urban Eats Media LLC" in resp.read()
        # Keep-alive: a second request on the same connection.
        conn.request("HEAD", "/robots.txt", headers={"Host": "urban-eats.test"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b""
    finally:
        conn.close()


def test_unknown_host_is_502(opener: urllib.request.OpenerDirector) -> None:
    status, _, body = fetch(opener, "http://no-such-site.test/")
    assert status == 502 and b"no-such-site.test" in body


def test_missing_path_is_404_html(opener: urllib.request.OpenerDirector) -> None:
    status, headers, body = fetch(opener, "http://urban-eats.test/recipes/old-lasagna")
    assert status == 404
    assert headers["Content-Type"].startswith("text/html") and b"<h1>404" in body


def test_trailing_slash_redirects(opener: urllib.request.OpenerDirector) -> None:
    status, _, body = fetch(opener, "http://urban-eats.test/about/")  # urllib follows the 301
    assert status == 200 and b"About Urban Eats" in body


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_robots_txt_disallows_a_linked_private_area(opener: urllib.request.OpenerDirector, host: str) -> None:
    status, headers, body = fetch(opener, f"http://{host}/robots.txt")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert "Disallow: /private/" in body.decode()
    _, _, home = fetch(opener, f"http://{host}/")
    assert "/private/" in refs_of(home.decode()).links
    assert fetch(opener, f"http://{host}/private/")[0] == 200  # it exists: only robots.txt keeps crawlers out
    assert fetch(opener, f"http://{host}/sitemap.xml")[0] == 200


def test_every_truth_page_shows_its_image(web: DemoWeb, opener: urllib.request.OpenerDirector) -> None:
    for copy in web.truth:
        status, _, body = fetch(opener, copy.page_url)
        assert status == 200, copy.page_url
        html = body.decode()
        assert copy.image_url in html or urlsplit(copy.image_url).path in html, copy
        assert copy.image_url in content_images(copy.page_url, html), copy
        status, headers, data = fetch(opener, copy.image_url)
        assert status == 200 and headers["Content-Type"].startswith("image/"), copy.image_url
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert min(img.size) >= 100


def test_every_public_page_is_reachable_from_the_home_page(web: DemoWeb, opener: urllib.request.OpenerDirector
                                                           ) -> None:
    """A small robots-obeying crawl over the proxy reaches every public page of every site."""
    queue = sorted(f"http://{h}/" for h in HOSTS)
    seen = set(queue)
    while queue:
        url = queue.pop()
        status, headers, body = fetch(opener, url)
        if status != 200 or not headers["Content-Type"].startswith("text/html"):
            continue
        for href in refs_of(body.decode()).links:
            target = urljoin(url, href).split("#")[0]
            parts = urlsplit(target)
            if parts.scheme == "http" and parts.hostname in HOSTS and not parts.path.startswith("/private/") \
                    and target not in seen:
                seen.add(target)
                queue.append(target)
    assert {url for url, _ in public_pages(web)} <= seen


def test_pagination_pages_are_distinct(opener: urllib.request.OpenerDirector) -> None:
    pages = [fetch(opener, "http://bazaar-market.test/listings" + q) for q in ("", "?page=2", "?page=3")]
    assert [p[0] for p in pages] == [200, 200, 200]
    assert len({p[2] for p in pages}) == 3
    assert b'href="/listings?page=3"' in pages[1][2]
    assert fetch(opener, "http://bazaar-market.test/listings?page=9")[0] == 404


def test_conditional_get(web: DemoWeb, opener: urllib.request.OpenerDirector) -> None:
    url = web.truth[0].image_url
    status, headers, _ = fetch(opener, url)
    etag, last_modified = headers["ETag"], headers["Last-Modified"]
    assert status == 200 and etag.startswith('"')
    assert dt.datetime.strptime(last_modified, "%a, %d %b %Y %H:%M:%S GMT").year in (2025, 2026)
    assert fetch(opener, url, {"If-None-Match": etag})[0] == 304
    assert fetch(opener, url, {"If-None-Match": f'W/{etag}, "other"'})[0] == 304
    assert fetch(opener, url, {"If-Modified-Since": last_modified})[0] == 304
    assert fetch(opener, url, {"If-None-Match": '"stale"'})[0] == 200
    assert fetch(opener, url, {"If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"})[0] == 200
    # Fixed by the build, not the clock: a second server on the same files says the same.
    with serve(web.root) as second:
        other = urllib.request.build_opener(urllib.request.ProxyHandler({"http": second.proxy_url}))
        again = fetch(other, url)[1]
    assert (again["ETag"], again["Last-Modified"]) == (etag, last_modified)


@pytest.mark.parametrize("path, content_type", [
    ("/static/logo.png", "image/png"),
    ("/sitemap.xml", "application/xml"),
    ("/static/site.css", "text/css; charset=utf-8"),
])
def test_content_types(opener: urllib.request.OpenerDirector, path: str, content_type: str) -> None:
    status, headers, _ = fetch(opener, "http://nordic-prints.test" + path)
    assert status == 200 and headers["Content-Type"] == content_type


def test_pages_carry_operator_dates_and_structured_data(opener: urllib.request.OpenerDirector) -> None:
    import extruct

    _, _, impressum = fetch(opener, "http://alpine-blog.test/impressum")
    text = impressum.decode()
    assert "Impressum" in text and "Bergblick Medien UG" in text and "tel:+498652" in text and "mailto:" in text

    _, _, article = fetch(opener, "http://daily-courier.test/news/2026/03/red-square-cathedral-reopens")
    html = article.decode()
    assert 'property="article:published_time" content="2026-03-09T' in html and '<time datetime="2026-03-09T' in html
    data = extruct.extract(html, base_url="http://daily-courier.test/", syntaxes=["json-ld", "opengraph"])
    assert data["json-ld"][0]["datePublished"].startswith("2026-03-09")

    _, _, item = fetch(opener, "http://bazaar-market.test/item/1003-classic-cabriolet-poster-a2")
    data = extruct.extract(item.decode(), base_url="http://bazaar-market.test/", syntaxes=["json-ld", "microdata"])
    product = data["json-ld"][0]
    assert product["@type"] == "Product" and product["offers"]["seller"]["url"].endswith("/seller/retro-garage")
    micro = data["microdata"][0]
    assert micro["type"] == "https://schema.org/Product"
    assert micro["properties"]["offers"]["properties"]["seller"]["properties"]["name"] == "Retro Garage"


# ---- customers -----------------------------------------------------------------------------------
def test_load_customers() -> None:
    customers = load_customers(CUSTOMERS, repo_root())
    assert [c.id for c in customers] == ["alpine-lens", "jana-novak"]
    assert all(len(c.images) == 5 and all(i.path.is_absolute() and i.path.is_file() for i in c.images)
               for c in customers)
    # Relative image paths fall back to the repository root when the given root lacks them.
    assert load_customers(CUSTOMERS, Path("/nonexistent")) == customers
    (licence,) = customers[0].licences
    assert licence.applies_to("alp-st-basil", "daily-courier.test", dt.date(2026, 3, 9))
    assert not licence.applies_to("alp-st-basil", "daily-courier.test", dt.date(2025, 11, 20))
    assert not licence.applies_to("alp-st-basil", "urban-eats.test", dt.date(2026, 3, 9))


_GOOD_IMAGE = 'images = [ { id = "a", path = "assets/images/wikimedia-potd/image1.jpg", title = "A" } ]'


@pytest.mark.parametrize("body, message", [
    (f'[[customer]]\nid = "x"\nname = "X"\n{_GOOD_IMAGE}\n', "missing key.*email"),
    ('[[customer]]\nid = "x"\nname = "X"\nemail = "x@example.org"\nimages = [\n'
     ' { id = "a", path = "assets/images/wikimedia-potd/image1.jpg", title = "A" },\n'
     ' { id = "a", path = "assets/images/wikimedia-potd/image2.jpg", title = "B" } ]\n', "'a': duplicate image id"),
    ('[[customer]]\nid = "x"\nname = "X"\nemail = "x@example.org"\n'
     'images = [ { id = "a", path = "assets/images/nope.jpg", title = "A" } ]\n', "nope.jpg does not exist"),
    (f'[[customer]]\nid = "x"\nname = "X"\nemail = "x@example.org"\n{_GOOD_IMAGE}\n'
     '[[customer.licence]]\nid = "l"\nlicensee_domain = "a.test"\nimage_ids = ["*"]\n'
     'valid_from = "2026-13-01"\nvalid_to = "2027-01-01"\n', "'valid_from' must be a date"),
    (f'[[customer]]\nid = "x"\nname = "X"\nemail = "x@example.org"\n{_GOOD_IMAGE}\n'
     '[[customer.licence]]\nid = "l"\nlicensee_domain = "a.test"\nimage_ids = ["b"]\n'
     'valid_from = "2026-01-01"\nvalid_to = "2027-01-01"\n', "unknown image ids b"),
    ('[[customer]\nid = "x"\n', "not valid TOML"),
])
def test_load_customers_rejects_malformed_files(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "customers.toml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        load_customers(path, repo_root())
