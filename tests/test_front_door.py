"""The front door end to end, on the embedded default (SQLite, local lake, Spark local):

the demo customers are indexed (the morning's customer_index run); a person signs up in the
inbox, confirms through the mailed link, signs in, makes an API token in settings and uploads a
photo; the next customer_index run the same day adds it incrementally (only the new photo is
fingerprinted, the existing shards are kept, one shard is added), the day's daily_hunt finds a copy
of it on the demo web, and the hit shows in that person's inbox and in their digest.

Nothing is stubbed: the real app (FastAPI's TestClient), the real .eml outbox, the demo web on
loopback crawled by Scrapy in a subprocess, Spark matching, the stages through ``run_stage`` (what
the DAG tasks run). The uploaded photo is one no demo customer has; the test puts a resized copy
of it on a page of one demo site, as someone taking it would.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import hashlib
import io
import json
import re
import shutil
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import IMAGES, demo_settings_for
from test_inbox_accounts import TOKEN_RE, confirm_from_mail, mails, password_sign_in, sign_up

pytestmark = pytest.mark.slow
RUN_DATE = dt.date(2026, 11, 24)
PHOTO = IMAGES / "packages" / "grace-hopper.jpg"
THIEF_HOST = "alpine-blog.test"
THIEF_PAGE = "/2026/new-customer-portrait.html"
THIEF_IMAGE = "/wp-content/uploads/2026/11/portrait-copy.jpg"


def plant_a_copy(web_root) -> str:
    """A page on a demo site with a smaller, re-encoded copy of the new customer's photo."""
    site = web_root / "sites" / THIEF_HOST
    copy = Image.open(PHOTO).convert("RGB")
    copy = copy.resize((copy.width * 3 // 4, copy.height * 3 // 4), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    copy.save(buf, "JPEG", quality=80)
    (site / THIEF_IMAGE.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (site / THIEF_IMAGE.lstrip("/")).write_bytes(buf.getvalue())
    (site / THIEF_PAGE.lstrip("/")).write_text(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>A portrait we like</title></head>"
        f"<body><article><h1>A portrait we like</h1><img src=\"{THIEF_IMAGE}\" alt=\"portrait\" width=\"{copy.width}\">"
        "<p>Found it somewhere.</p></article></body></html>", encoding="utf-8")
    # The demo server serves only what its manifest routes (with dates and validators).
    manifest_path = web_root / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for path, kind in ((THIEF_PAGE, "text/html; charset=utf-8"), (THIEF_IMAGE, "image/jpeg")):
        manifest[THIEF_HOST][path] = {"content_type": kind, "etag": '"' + hashlib.sha256(path.encode()).hexdigest()[:24] + '"', "file": path.lstrip("/"),
                                      "last_modified": "2026-11-02T08:00:00+00:00"}
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    return f"http://{THIEF_HOST}{THIEF_PAGE}"


def test_sign_up_upload_index_hunt_and_the_hit_is_in_the_inbox_and_the_digest(tmp_path):
    from copyhunt import hunt, index, references
    from copyhunt.demo.web import build, serve
    from copyhunt.demo_run import demo_settings
    from copyhunt.hitsdb.store import create_schema, make_engine
    from copyhunt.inbox.app import create_app
    from copyhunt.runlog import run_stage
    from copyhunt.sealing import ensure_key

    settings = dataclasses.replace(demo_settings_for(tmp_path), inbox_url="http://inbox.test")
    ensure_key(settings.manifest_key_path)
    web_root = settings.resolve("data/demo-web")
    build(web_root, settings.customers_path)
    page_url = plant_a_copy(web_root)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text((web_root / "seeds.txt").read_text() + page_url + "\n")

    customer_index = (("register", references.register_stage), ("fingerprint_references", references.fingerprint_stage),
                      ("build_index", references.build_reference_index))
    # The morning's customer_index run: the demo customers' images, nobody else's.
    morning = {name: run_stage(name, stage, settings, RUN_DATE) for name, stage in customer_index}
    morning_shards = set(index.current_shards(settings.index_root, morning["build_index"]["version"]))

    # Sign up, confirm from the mail, sign in, make a token, upload.
    address = "grace@portraits.example"
    engine = make_engine(settings.database_url)
    create_schema(engine)  # as `copyhunt serve` does before it serves
    client = TestClient(create_app(settings, engine))
    assert sign_up(client, address, name="Portraits of Grace").status_code == 200
    assert confirm_from_mail(client, mails(settings)[-1]).status_code == 303
    assert password_sign_in(client, address).status_code == 303
    page = client.get("/settings").text
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    token = TOKEN_RE.search(client.post("/settings/tokens", data={"label": "uploader", "csrf_token": csrf}).text).group(1)  # type: ignore[union-attr]
    uploaded_at = time.monotonic()
    r = client.post("/api/images", headers={"Authorization": f"Bearer {token}"},
                    files={"file": ("grace.jpg", PHOTO.read_bytes(), "image/jpeg")}, data={"title": "Grace Hopper"})
    assert r.status_code == 201, r.text
    image_id = r.json()["image_id"]

    # The next customer_index run, the same day: incremental.
    grown = {name: run_stage(name, stage, settings, RUN_DATE) for name, stage in customer_index}
    searchable_after = time.monotonic() - uploaded_at
    assert grown["fingerprint_references"]["fingerprinted"] == 1, grown["fingerprint_references"]
    assert grown["fingerprint_references"]["reused"] == morning["fingerprint_references"]["fingerprinted"] > 0
    assert grown["build_index"]["built"] == 1 and grown["build_index"]["version"] != morning["build_index"]["version"]
    assert morning_shards < set(index.current_shards(settings.index_root, grown["build_index"]["version"]))
    # Another run with nothing new publishes the same version, building and decoding nothing.
    idle = {name: run_stage(name, stage, settings, RUN_DATE) for name, stage in customer_index}
    assert idle["build_index"]["version"] == grown["build_index"]["version"] and idle["build_index"]["built"] == 0
    assert idle["fingerprint_references"]["fingerprinted"] == 0
    # For comparison, the full rebuild the same registry would take without the earlier run.
    rebuild = dataclasses.replace(settings, lake_root=tmp_path / "rebuild-lake")
    shutil.copytree(settings.blob_root, rebuild.blob_root)  # the uploads' originals, as stored at upload
    started = time.monotonic()
    full = {name: run_stage(name, stage, rebuild, RUN_DATE) for name, stage in customer_index}
    full_rebuild = time.monotonic() - started
    assert full["build_index"]["entries"] == grown["build_index"]["entries"] and full["fingerprint_references"]["reused"] == 0, (full, grown)

    with serve(web_root, "127.0.0.1", 0) as server:
        run = demo_settings(settings, server.proxy_url, seeds)
        for name in ("crawl", "fingerprint", "match", "enrich", "price", "load", "digest"):
            run_stage(name, getattr(hunt, name), run, RUN_DATE)
    print(f"upload to searchable (incremental customer_index, demo registry): {searchable_after:.1f} s; "
          f"full rebuild of the same registry: {full_rebuild:.1f} s")

    # The inbox: the person's hit list names the page that took the photo, and the hit its image.
    hits = client.get("/hits").text
    assert THIEF_HOST in hits, "the new customer's hit is not in their inbox"
    hit_id = re.search(r'href="/hits/(\d+)"', hits).group(1)  # type: ignore[union-attr]
    detail = client.get(f"/hits/{hit_id}").text
    assert "Grace Hopper" in detail and page_url in detail

    # The digest: one mail to the person, naming the page.
    digests = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
               for p in (settings.outbox / RUN_DATE.isoformat()).glob("*.eml")]
    theirs = [m for m in digests if m["To"] and address in m["To"]]
    assert len(theirs) == 1, [m["To"] for m in digests]
    body = theirs[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert page_url in body

    # The demo customers' hits are not the new customer's: their inbox holds only their copy.
    assert "daily-courier.test" not in hits and "nordic-prints.test" not in hits
    assert image_id
