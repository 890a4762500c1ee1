"""The image API on the real app and a real uvicorn server: statuses, tenant isolation, streamed limits."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import zipfile

import pytest
from fastapi.testclient import TestClient

from conftest import CUSTOMER_IMAGES, REPO, UNRELATED_IMAGES
from copyhunt import registry
from copyhunt.hitsdb.store import create_schema, make_engine
from copyhunt.hitsdb.tokens import issue_token
from copyhunt.inbox.app import create_app


@pytest.fixture
def api(settings):
    engine = make_engine(settings.database_url)
    create_schema(engine)
    registry.add_customer(engine, "ann", "ann@example.org")
    registry.add_customer(engine, "bob", "bob@example.org")
    client = TestClient(create_app(settings, engine))
    tokens = {c: {"Authorization": f"Bearer {issue_token(engine, c)}"} for c in ("ann", "bob")}
    yield client, tokens
    engine.dispose()


def post(client, headers, name, data, title=None):
    return client.post("/api/images", headers=headers, files={"file": (name, data, "application/octet-stream")},
                       data={"title": title} if title else None)


def test_every_status_of_an_upload(api):
    client, tokens = api
    data = CUSTOMER_IMAGES[0].read_bytes()
    assert client.post("/api/images", files={"file": ("a.jpg", data)}).status_code == 401
    created = post(client, tokens["ann"], "Lake.jpg", data, title="The lake at dawn")
    assert created.status_code == 201 and created.json()["image_id"] == "Lake"
    again = post(client, tokens["ann"], "copy.jpg", data)
    assert again.status_code == 200 and again.json() == {**again.json(), "status": "existing", "image_id": "Lake"}
    bad = post(client, tokens["ann"], "notes.jpg", b"just text")
    assert bad.status_code == 422 and "not an image" in bad.json()["reason"]
    truncated = post(client, tokens["ann"], "cut.jpg", data[: len(data) // 4])
    assert truncated.status_code == 422 and "damaged or truncated" in truncated.json()["reason"]
    no_file = client.post("/api/images", headers=tokens["ann"], files={"title": (None, "no file")})
    assert no_file.status_code == 422 and "no field named 'file'" in no_file.json()["detail"]
    not_multipart = client.post("/api/images", headers={**tokens["ann"], "Content-Type": "application/json"}, content=b"{}")
    assert not_multipart.status_code == 415
    listed = client.get("/api/images", headers=tokens["ann"]).json()
    assert [(i["image_id"], i["title"], i["withdrawn"]) for i in listed] == [("Lake", "The lake at dawn", False)]


def test_a_zip_gets_one_result_per_member(api):
    client, tokens = api
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("one.jpg", CUSTOMER_IMAGES[1].read_bytes())
        zf.writestr("dir/two.jpg", UNRELATED_IMAGES[1].read_bytes())
        zf.writestr("three.jpg", b"broken")
    reply = post(client, tokens["ann"], "photos.zip", buf.getvalue())
    assert reply.status_code == 200
    assert [(r["filename"], r["status"]) for r in reply.json()["results"]] == [("one.jpg", "created"), ("two.jpg", "created"),
                                                                              ("three.jpg", "rejected")]


def test_customers_never_see_or_withdraw_each_others_images(api):
    client, tokens = api
    image_id = post(client, tokens["ann"], "mine.jpg", CUSTOMER_IMAGES[0].read_bytes()).json()["image_id"]
    assert client.get(f"/api/images/{image_id}", headers=tokens["bob"]).status_code == 404
    assert client.delete(f"/api/images/{image_id}", headers=tokens["bob"]).status_code == 404
    assert client.get("/api/images", headers=tokens["bob"]).json() == []
    assert client.get(f"/api/images/{image_id}", headers=tokens["ann"]).json()["withdrawn"] is False
    withdrawn = client.delete(f"/api/images/{image_id}", headers=tokens["ann"])
    assert withdrawn.status_code == 200 and withdrawn.json()["withdrawn"] is True
    assert client.get("/api/images/..%2Fetc", headers=tokens["ann"]).status_code in (404, 422)


def test_the_openapi_document_describes_the_image_api(api):
    client, _ = api
    paths = client.get("/api/openapi.json").json()["paths"]
    assert {"post", "get"} <= set(paths["/api/images"]) and {"get", "delete"} <= set(paths["/api/images/{image_id}"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_a_200_mb_upload_streams_past_the_limit_without_growing_the_server(settings, tmp_path):
    engine = make_engine(settings.database_url)
    create_schema(engine)
    registry.add_customer(engine, "ann", "ann@example.org")
    token = issue_token(engine, "ann")
    engine.dispose()
    port = free_port()
    env = {**os.environ, "COPYHUNT_HOME": str(settings.home), "COPYHUNT_CUSTOMERS_FILE": str(tmp_path / "none.toml"),
           "COPYHUNT_MAX_UPLOAD_BYTES": str(30_000_000)}
    server = subprocess.Popen([sys.executable, "-m", "copyhunt.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(base + "/signin", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {token}"}
        # Warm the route (imports, the database) before measuring.
        httpx.post(base + "/api/images", headers=headers, files={"file": ("a.jpg", CUSTOMER_IMAGES[0].read_bytes())}, timeout=60)
        before = rss_kib(server.pid)
        boundary = "copyhunt-test-boundary"
        chunk = b"\xff" * (1 << 20)

        def body():
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"huge.jpg\"\r\n"
                   "Content-Type: image/jpeg\r\n\r\n").encode()
            for _ in range(200):
                yield chunk
            yield f"\r\n--{boundary}--\r\n".encode()

        reply = httpx.post(base + "/api/images", headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                           content=body(), timeout=120)
        grown_mib = (rss_kib(server.pid) - before) / 1024
        print(f"server RSS before {before / 1024:.1f} MiB, grew by {grown_mib:.1f} MiB during a 200 MiB upload")
        assert reply.status_code == 422 and "larger than the limit of 30 MB" in reply.json()["reason"]
        assert grown_mib < 8
        assert not [p for p in (settings.blob_root / ".incoming").iterdir()]
    finally:
        server.terminate()
        server.wait(timeout=30)
