"""The image library in the inbox, over the real app (TestClient) and a real SQLite hits database
seeded with real photos: the grid and its paging, thumbnails (made at upload, owner only), upload
without scripts, CSRF, withdrawal, licences, and tenant isolation on every route."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from conftest import CUSTOMER_IMAGES, UNRELATED_IMAGES
from copyhunt import registry
from copyhunt.config import Settings
from copyhunt.hitsdb.models import Hit, HitEvent
from copyhunt.hitsdb.models import Image as ImageRow
from copyhunt.hitsdb.store import create_schema, make_engine
from copyhunt.inbox.app import create_app
from copyhunt.thumbnails import THUMB_PX, Thumbnails
from inbox_seed import Seeded, seed
from test_inbox import csrf_of, sign_in

ROW_RE = re.compile(r'<li class="result status-(\w+)" data-status="\1">\s*<span class="filename">([^<]*)</span>:\s*<strong>([^<]*)</strong>(?:: <span class="reason">([^<]*)</span>)?')
ALPINE, JANA = "alpine-lens", "jana-novak"
ALPINE_IMAGE, JANA_IMAGE = "alp-bahrain-fort", "jn-pasha-butterfly"


class Library:
    def __init__(self, settings: Settings, engine, seeded: Seeded):
        self.settings, self.engine, self.seeded = settings, engine, seeded
        self.app = create_app(settings, engine)

    def signed_in(self, customer_id: str) -> TestClient:
        client = TestClient(self.app)
        sign_in(client, self.seeded.tokens[customer_id])
        return client

    def hits_and_events(self, customer_id: str) -> tuple[int, int]:
        with self.engine.connect() as conn:
            hits = conn.execute(select(func.count()).select_from(Hit).where(Hit.customer_id == customer_id)).scalar_one()
            events = conn.execute(select(func.count()).select_from(HitEvent)).scalar_one()
        return hits, events


pytest_plugins = ["conftest_pg"]


@pytest.fixture(params=["sqlite", "postgresql"])
def library(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Library]:
    url = f"sqlite:///{tmp_path / 'hits.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    settings = Settings(home=tmp_path, hits_db_url=url, inbox_url="http://inbox.test")
    engine = make_engine(settings.database_url)
    create_schema(engine)
    yield Library(settings, engine, seed(engine, settings.blob_root))
    engine.dispose()


def upload_form(client: TestClient, files: list[tuple[str, bytes]], csrf: str | None):
    data = {"csrf_token": csrf} if csrf is not None else {}
    return client.post("/library/upload", data=data, files=[("file", (name, body, "application/octet-stream")) for name, body in files])


def rows(html: str) -> list[tuple[str, str, str, str]]:
    return [(m.group(2), m.group(1), m.group(3), m.group(4) or "") for m in ROW_RE.finditer(html)]


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return buf.getvalue()


def test_the_library_lists_only_the_customers_images_and_links_the_near_duplicate(library: Library) -> None:
    alpine = library.signed_in(ALPINE)
    page = alpine.get("/library")
    assert page.status_code == 200 and 'id="nav-library"' in page.text
    assert f'id="image-{ALPINE_IMAGE}"' in page.text and 'id="image-alp-st-basil"' in page.text
    assert JANA_IMAGE not in page.text
    # Another size of one of the customer's images: accepted, flagged, and linked to the first.
    photo = Image.open(CUSTOMER_IMAGES[0])
    small = io.BytesIO()
    photo.resize((photo.width // 2, photo.height // 2)).save(small, "JPEG", quality=90)
    csrf = csrf_of(page.text)
    first = rows(upload_form(alpine, [("original.jpg", CUSTOMER_IMAGES[0].read_bytes())], csrf).text)
    second = rows(upload_form(alpine, [("smaller.jpg", small.getvalue())], csrf).text)
    assert first[0][1] == "created" and second[0][1] == "created"
    grid = alpine.get("/library").text
    assert 'looks like your image <a href="/library/original">original</a>' in grid
    assert f"{photo.width // 2} × {photo.height // 2} px" in grid
    assert 'badge status-active">active' in grid
    # Each image says how many uses were found, linking to them on its page.
    hits = {f"alp-{name}": n for name, n in (("bahrain-fort", 3), ("st-basil", 2))}
    for image_id, n in hits.items():
        assert f'<a href="/library/{image_id}#hits">{n} uses found</a>' in grid
    assert grid.count("no uses found yet") == 2  # the two new uploads


def test_the_library_pages_through_a_large_library_newest_first(library: Library) -> None:
    sha = library.seeded.registered_sha[(ALPINE, ALPINE_IMAGE)]
    start = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    with library.engine.begin() as conn:
        conn.execute(ImageRow.__table__.insert(), [
            {"customer_id": ALPINE, "image_id": f"bulk-{n:03d}", "title": f"Bulk {n}", "sha256": sha, "source_kind": "upload",
             "uploaded_at": start + dt.timedelta(minutes=n), "width": 100, "height": 80} for n in range(60)])
    client = library.signed_in(ALPINE)
    first = client.get("/library").text
    ids = re.findall(r'<figure class="library-item[^"]*" id="image-([^"]+)"', first)
    assert len(ids) == 48 and ids[:2] == ["bulk-059", "bulk-058"]
    assert "Images 1–48 of 62" in first and 'id="next-page"' in first and 'id="prev-page"' not in first
    second = client.get("/library?page=2").text
    rest = re.findall(r'<figure class="library-item[^"]*" id="image-([^"]+)"', second)
    assert len(rest) == 14 and not set(ids) & set(rest)
    assert "Images 49–62 of 62" in second and 'id="prev-page"' in second and 'id="next-page"' not in second
    assert client.get("/library?page=0").status_code == 422
    # Search by title (any case; "%" and "_" are letters here, not patterns), paged with the search kept.
    found = client.get("/library", params={"q": "BULK 5"}).text
    assert re.findall(r'id="image-([^"]+)"', found) == [f"bulk-{n:03d}" for n in range(59, 49, -1)] + ["bulk-005"]
    assert "with “BULK 5” in the title" in found
    assert "No image has “100%_” in its title." in client.get("/library", params={"q": "100%_"}).text
    many = client.get("/library", params={"q": "bulk"}).text
    assert "Images 1–48 of 60" in many and 'href="/library?page=2&amp;q=bulk"' in many


def test_thumbnails_are_made_when_asked_for_served_with_cache_headers_and_only_to_the_owner(library: Library) -> None:
    sha = library.seeded.registered_sha[(ALPINE, ALPINE_IMAGE)]
    thumbs = Thumbnails(library.settings.blob_root, library.settings.max_image_pixels)
    assert not thumbs.path(sha).exists()  # seeded before thumbnails: made when first asked for
    alpine, jana = library.signed_in(ALPINE), library.signed_in(JANA)
    reply = alpine.get(f"/library/{ALPINE_IMAGE}/thumb")
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/jpeg"
    assert reply.headers["cache-control"] == "private, max-age=86400" and reply.headers["etag"] == f'"t-{sha}"'
    with Image.open(io.BytesIO(reply.content)) as im:
        assert im.format == "JPEG" and max(im.size) == THUMB_PX
    assert thumbs.path(sha).exists()
    again = alpine.get(f"/library/{ALPINE_IMAGE}/thumb", headers={"If-None-Match": reply.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    preview = alpine.get(f"/library/{ALPINE_IMAGE}/preview")
    assert preview.status_code == 200 and Image.open(io.BytesIO(preview.content)).format == "JPEG"
    for path in (f"/library/{ALPINE_IMAGE}", f"/library/{ALPINE_IMAGE}/thumb", f"/library/{ALPINE_IMAGE}/preview",
                 f"/library/{ALPINE_IMAGE}/withdraw", "/library/no-such-image/thumb"):
        assert jana.get(path).status_code == 404, path
    anonymous = TestClient(library.app).get(f"/library/{ALPINE_IMAGE}/thumb", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/signin"
    # The backfill (``copyhunt images thumbnails``) makes the rest, once.
    assert registry.backfill_thumbnails(library.engine, library.settings) == 2
    assert registry.backfill_thumbnails(library.engine, library.settings) == 0


def test_the_thumbnail_backfill_from_the_command_line(settings) -> None:
    engine = make_engine(settings.database_url)
    create_schema(engine)
    registry.add_customer(engine, "carla", "carla@example.org")
    with CUSTOMER_IMAGES[0].open("rb") as stream:
        sha = registry.get_image(engine, "carla", registry.add_image(engine, settings, "carla", stream, "one.jpg").image_id)["sha256"]
    engine.dispose()
    thumb = Thumbnails(settings.blob_root, settings.max_image_pixels).path(sha)
    assert thumb.exists()
    thumb.unlink()  # as for an image registered before thumbnails were made at upload
    env = {"COPYHUNT_HOME": str(settings.home), "COPYHUNT_CUSTOMERS_FILE": str(settings.home / "none.toml"), "PATH": "/usr/bin:/bin",
           **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}  # the checkout under test, not the installed one
    run = lambda: subprocess.run([sys.executable, "-m", "copyhunt.cli", "images", "thumbnails"], capture_output=True, text=True, env=env, timeout=300)
    first = run()
    assert first.returncode == 0 and first.stdout.strip() == "1 thumbnail made" and thumb.exists()
    assert run().stdout.strip() == "0 thumbnails made"


def test_upload_without_scripts_gives_a_result_per_file(library: Library) -> None:
    client = library.signed_in(JANA)
    csrf = csrf_of(client.get("/library").text)
    good = CUSTOMER_IMAGES[0].read_bytes()
    archive = zip_of({"one.jpg": CUSTOMER_IMAGES[1].read_bytes(), "dir/two.jpg": UNRELATED_IMAGES[1].read_bytes(), "three.jpg": b"broken"})
    reply = upload_form(client, [("Harbour.jpg", good), ("notes.jpg", b"just some text, not a picture"),
                                 ("cut.jpg", good[: len(good) // 4]), ("photos.zip", archive)], csrf)
    assert reply.status_code == 200
    got = rows(reply.text)
    assert [(name, status) for name, status, _, _ in got] == [
        ("Harbour.jpg", "created"), ("notes.jpg", "rejected"), ("cut.jpg", "rejected"),
        ("one.jpg", "created"), ("two.jpg", "created"), ("three.jpg", "rejected")]
    assert got[0][2] == "new" and "not an image" in got[1][3] and "damaged or truncated" in got[2][3]
    # The thumbnail exists as soon as the upload is answered: made at upload, not when first shown.
    image = registry.get_image(library.engine, JANA, "Harbour")
    assert image is not None and Thumbnails(library.settings.blob_root, library.settings.max_image_pixels).path(image["sha256"]).exists()
    same = rows(upload_form(client, [("again.jpg", good)], csrf).text)
    assert same == [("again.jpg", "existing", "already in your library", "")]
    assert f'id="image-Harbour"' in client.get("/library").text
    # The form sent with no file chosen, as a browser sends it: a file part with an empty filename.
    body = (f'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{csrf}\r\n'
            '--b\r\nContent-Disposition: form-data; name="file"; filename=""\r\nContent-Type: application/octet-stream\r\n\r\n\r\n'
            '--b--\r\n').encode()
    empty = client.post("/library/upload", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert empty.status_code == 422 and 'id="no-files"' in empty.text
    assert sorted(i["image_id"] for i in registry.list_images(library.engine, JANA)) == sorted([JANA_IMAGE, "Harbour", "one", "two"])


def test_a_file_over_the_limit_is_refused_and_the_next_one_still_taken(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, hits_db_url=f"sqlite:///{tmp_path / 'hits.db'}", inbox_url="http://inbox.test",
                        max_upload_bytes=60_000)
    engine = make_engine(settings.database_url)
    create_schema(engine)
    library = Library(settings, engine, seed(engine, settings.blob_root))
    client = library.signed_in(JANA)
    big = io.BytesIO()
    Image.open(CUSTOMER_IMAGES[5]).resize((1600, 1100)).save(big, "JPEG", quality=95)
    assert len(big.getvalue()) > settings.max_upload_bytes > CUSTOMER_IMAGES[6].stat().st_size
    got = rows(upload_form(client, [("huge.jpg", big.getvalue()), ("fine.jpg", CUSTOMER_IMAGES[6].read_bytes())],
                           csrf_of(client.get("/library").text)).text)
    assert got == [("huge.jpg", "rejected", "refused", "the file is larger than the limit of 0.06 MB"), ("fine.jpg", "created", "new", "")]
    assert list((settings.blob_root / ".incoming").iterdir()) == []  # no spool file left behind
    engine.dispose()


def test_the_scripted_upload_gets_json_and_csrf_is_checked_either_way(library: Library) -> None:
    client = library.signed_in(ALPINE)
    csrf = csrf_of(client.get("/library").text)
    photo = [("file", ("lake.jpg", CUSTOMER_IMAGES[2].read_bytes(), "image/jpeg"))]
    assert client.post("/library/upload", files=photo).status_code == 403  # no token at all
    assert client.post("/library/upload", data={"csrf_token": "0" * 64}, files=photo).status_code == 403
    wrong_header = client.post("/library/upload", files=photo, headers={"X-CSRF-Token": "nope", "Accept": "application/json"})
    assert wrong_header.status_code == 403 and "expired" in wrong_header.json()["detail"]
    assert registry.get_image(library.engine, ALPINE, "lake") is None  # nothing refused was registered
    scripted = client.post("/library/upload", files=photo, headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
    assert scripted.status_code == 200
    assert scripted.json() == {"results": [{"filename": "lake.jpg", "status": "created", "image_id": "lake", "words": "new"}]}
    archive = zip_of({"a.jpg": CUSTOMER_IMAGES[7].read_bytes(), "b.jpg": b"not a picture"})
    zipped = client.post("/library/upload", files=[("file", ("set.zip", archive, "application/zip"))],
                         headers={"X-CSRF-Token": csrf, "Accept": "application/json"}).json()["results"]
    assert [(r["filename"], r["status"]) for r in zipped] == [("a.jpg", "created"), ("b.jpg", "rejected")]  # a row per member
    # Another customer's session token does not open this one's upload.
    other = library.signed_in(JANA)
    assert other.post("/library/upload", files=photo, headers={"X-CSRF-Token": csrf}).status_code == 403


def test_withdraw_asks_first_needs_the_csrf_token_and_keeps_the_hits(library: Library) -> None:
    alpine, jana = library.signed_in(ALPINE), library.signed_in(JANA)
    before = library.hits_and_events(ALPINE)
    assert before[0] > 0
    confirm = alpine.get(f"/library/{ALPINE_IMAGE}/withdraw")
    assert confirm.status_code == 200 and 'id="confirm-withdraw"' in confirm.text
    assert alpine.post(f"/library/{ALPINE_IMAGE}/withdraw", data={}).status_code == 403
    jana_csrf = csrf_of(jana.get("/library").text)
    assert jana.post(f"/library/{ALPINE_IMAGE}/withdraw", data={"csrf_token": jana_csrf}).status_code == 404
    assert registry.get_image(library.engine, ALPINE, ALPINE_IMAGE)["withdrawn_at"] is None
    done = alpine.post(f"/library/{ALPINE_IMAGE}/withdraw", data={"csrf_token": csrf_of(confirm.text)}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/library/{ALPINE_IMAGE}"
    page = alpine.get(f"/library/{ALPINE_IMAGE}").text
    assert "withdrawn on" in page and 'id="withdraw-link"' not in page
    assert 'badge withdrawn">withdrawn' in alpine.get("/library").text
    assert library.hits_and_events(ALPINE) == before  # the hits and their history stay
    assert re.search(r'id="hit-count">(\d+)<', page).group(1) != "0"


def test_licences_are_recorded_edited_ended_and_invisible_to_others(library: Library) -> None:
    alpine, jana = library.signed_in(ALPINE), library.signed_in(JANA)
    page = alpine.get(f"/library/{ALPINE_IMAGE}")
    csrf = csrf_of(page.text)
    form = {"csrf_token": csrf, "licensee_domain": "https://www.Urban-Eats.test/about", "licensee_operator": "",
            "valid_from": "2026-01-01", "valid_to": "2026-12-31", "scope": "this"}
    for bad, message in (({"valid_to": "2025-12-31"}, "ends before it starts"), ({"licensee_domain": "not a domain!"}, "not a domain"),
                         ({"licensee_domain": ""}, "Name the licensee"), ({"valid_from": "1 May"}, "YYYY-MM-DD")):
        refused = alpine.post(f"/library/{ALPINE_IMAGE}/licences", data={**form, **bad})
        assert refused.status_code == 422 and message in refused.text, bad
    assert registry.list_licences(library.engine, ALPINE) == []
    saved = alpine.post(f"/library/{ALPINE_IMAGE}/licences", data=form, follow_redirects=False)
    assert saved.status_code == 303
    [licence] = registry.list_licences(library.engine, ALPINE)
    assert (licence["licensee_domain"], licence["image_ids"], licence["valid_to"]) == ("urban-eats.test", [ALPINE_IMAGE], dt.date(2026, 12, 31))
    shown = alpine.get(f"/library/{ALPINE_IMAGE}").text
    assert f'id="licence-{licence["id"]}"' in shown and "urban-eats.test" in shown
    # Edit: the form comes back filled in; saving changes the licence, not a new one.
    edit = alpine.get(f"/library/{ALPINE_IMAGE}?edit={licence['id']}").text
    assert 'value="urban-eats.test"' in edit and 'value="2026-12-31"' in edit
    alpine.post(f"/library/{ALPINE_IMAGE}/licences", data={**form, "licence_id": licence["id"], "licensee_operator": "Urban Eats Ltd",
                                                           "scope": "all"})
    [changed] = registry.list_licences(library.engine, ALPINE)
    assert (changed["id"], changed["licensee_operator"], changed["image_ids"]) == (licence["id"], "Urban Eats Ltd", ["*"])
    assert f'id="licence-{licence["id"]}"' in alpine.get("/library/alp-st-basil").text  # "all my images" covers the others
    # Another customer sees none of it and can change none of it.
    jana_csrf = csrf_of(jana.get(f"/library/{JANA_IMAGE}").text)
    assert licence["id"] not in jana.get(f"/library/{JANA_IMAGE}").text
    assert jana.get(f"/library/{JANA_IMAGE}?edit={licence['id']}").status_code == 404
    steal = jana.post(f"/library/{JANA_IMAGE}/licences", data={**form, "csrf_token": jana_csrf, "licence_id": licence["id"]})
    assert steal.status_code == 404
    assert jana.post(f"/library/{ALPINE_IMAGE}/licences", data={**form, "csrf_token": jana_csrf}).status_code == 404
    assert jana.post(f"/library/{JANA_IMAGE}/licences/{licence['id']}/end", data={"csrf_token": jana_csrf}).status_code == 404
    assert alpine.post(f"/library/{ALPINE_IMAGE}/licences", data={**form, "csrf_token": ""}).status_code == 403
    assert registry.list_licences(library.engine, JANA) == [] and registry.list_licences(library.engine, ALPINE) == [changed]
    # End it today (the licence started in the past): uses from tomorrow on are not covered.
    ended = alpine.post(f"/library/{ALPINE_IMAGE}/licences/{licence['id']}/end", data={"csrf_token": csrf}, follow_redirects=False)
    assert ended.status_code == 303
    assert registry.list_licences(library.engine, ALPINE)[0]["valid_to"] == dt.date.today()


def test_a_form_without_its_token_first_never_spools_a_file(tmp_path: Path) -> None:
    from python_multipart.multipart import MultipartParser

    from copyhunt.inbox.api_images import Upload

    def body(token: str) -> bytes:
        return (f'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
                '--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n').encode() + b"x" * 5000 + b"\r\n--b--\r\n"

    for token, spooled in (("wrong", False), ("right", True)):
        spool = tmp_path / token
        upload = Upload(spool, 1_000_000, may_spool=lambda fields: fields.get("csrf_token") == "right")
        parser = MultipartParser(b"b", upload.callbacks())
        parser.write(body(token))
        parser.finalize()
        assert upload.refused is not spooled and len(upload.files) == int(spooled)
        assert [p.stat().st_size for p in spool.iterdir()] == ([5000] if spooled else [])
        upload.discard()
        assert list(spool.iterdir()) == []
