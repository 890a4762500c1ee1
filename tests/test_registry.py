"""The registry of truth (copyhunt.registry) on a real SQLite hits database and real photos."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
import zipfile

import pytest
from PIL import Image

from conftest import CUSTOMER_IMAGES, REPO, UNRELATED_IMAGES, jpeg_bytes
from copyhunt import registry
from copyhunt.hitsdb.store import create_schema, make_engine

DAY = dt.date(2026, 11, 20)


@pytest.fixture
def engine(settings):
    engine = make_engine(settings.database_url)
    create_schema(engine)
    registry.add_customer(engine, "ann", "ann@example.org", "Ann")
    registry.add_customer(engine, "bob", "bob@example.org")
    yield engine
    engine.dispose()


def upload(engine, settings, customer, data: bytes, name: str = "photo.jpg", **kw):
    return registry.add_image(engine, settings, customer, io.BytesIO(data), name, **kw)


def test_an_upload_is_created_once_and_the_same_bytes_again_are_the_existing_image(engine, settings):
    data = CUSTOMER_IMAGES[0].read_bytes()
    first = upload(engine, settings, "ann", data, "Lake at dawn.jpg")
    assert first.status == "created" and first.image_id == "Lake-at-dawn" and first.near_duplicate_of is None
    again = upload(engine, settings, "ann", data, "renamed.jpg")
    assert (again.status, again.image_id) == ("existing", "Lake-at-dawn")
    # Another customer's upload of the same bytes is that customer's own image.
    assert upload(engine, settings, "bob", data).status == "created"
    rows = registry.list_images(engine, "ann")
    assert [(r["image_id"], r["title"], r["source_kind"]) for r in rows] == [("Lake-at-dawn", "Lake at dawn", "upload")]
    assert rows[0]["width"] > 0 and rows[0]["uploaded_at"] is not None


def test_unusable_files_are_rejected_with_a_reason_a_person_reads(engine, settings):
    good = CUSTOMER_IMAGES[1].read_bytes()
    tiny = io.BytesIO()
    Image.open(CUSTOMER_IMAGES[1]).resize((20, 15)).save(tiny, "PNG")
    bomb = io.BytesIO()
    Image.new("L", (12000, 12000)).save(bomb, "PNG")
    cases = {
        "notes.jpg": (b"this is a text file, whatever its name says", "not an image"),
        "truncated.jpg": (good[: len(good) // 3], "damaged or truncated"),
        "tiny.png": (tiny.getvalue(), "too small"),
        "bomb.png": (bomb.getvalue(), "too many pixels"),
    }
    small_limits = type(settings)(**{**settings.__dict__, "max_image_pixels": 50_000_000})
    for name, (data, words) in cases.items():
        result = upload(engine, small_limits if name == "bomb.png" else settings, "ann", data, name)
        assert result.status == "rejected" and words in result.reason, (name, result)
    assert registry.list_images(engine, "ann") == []


def test_the_size_limit_holds_while_the_bytes_arrive(engine, settings):
    limited = type(settings)(**{**settings.__dict__, "max_upload_bytes": 100_000})

    class Endless(io.RawIOBase):
        served = 0

        def readinto(self, buf):
            self.served += len(buf)
            buf[:] = b"\xff" * len(buf)
            return len(buf)

    stream = Endless()
    result = registry.add_image(engine, limited, "ann", stream, "huge.jpg")
    assert result.status == "rejected" and "larger than the limit of 0.1 MB" in result.reason
    assert stream.served <= 100_000 + 2 * registry.CHUNK_BYTES  # it stopped reading at the limit
    assert not list((limited.blob_root / ".incoming").iterdir())  # and left no spool file


def test_another_size_of_an_image_is_accepted_and_flagged(engine, settings):
    original = upload(engine, settings, "ann", CUSTOMER_IMAGES[2].read_bytes(), "original.jpg")
    im = Image.open(CUSTOMER_IMAGES[2])
    smaller = upload(engine, settings, "ann", jpeg_bytes(im.resize((im.width // 2, im.height // 2)), 80), "small.jpg")
    assert smaller.status == "created" and smaller.near_duplicate_of == original.image_id
    other = upload(engine, settings, "ann", UNRELATED_IMAGES[1].read_bytes(), "other.jpg")
    assert other.status == "created" and other.near_duplicate_of is None


def test_a_zip_gives_one_result_per_member_and_no_member_path_escapes(engine, settings, tmp_path):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/b/../../../../etc/first.jpg", CUSTOMER_IMAGES[0].read_bytes())
        zf.writestr("second.jpg", UNRELATED_IMAGES[2].read_bytes())
        zf.writestr("broken.jpg", b"\xff\xd8\xff garbage")
    results = registry.add_files(engine, settings, "ann", [archive])
    assert [(r.filename, r.status) for r in results] == [("first.jpg", "created"), ("second.jpg", "created"), ("broken.jpg", "rejected")]
    assert not (tmp_path.parent / "etc").exists()


def test_the_quota_counts_images_not_withdrawn(engine, settings):
    one = type(settings)(**{**settings.__dict__, "customer_image_quota": 1})
    first = upload(engine, one, "ann", CUSTOMER_IMAGES[0].read_bytes(), "first.jpg")
    refused = upload(engine, one, "ann", UNRELATED_IMAGES[1].read_bytes(), "second.jpg")
    assert refused.status == "rejected" and "quota of 1 images" in refused.reason
    assert registry.withdraw_image(engine, "ann", first.image_id)
    assert upload(engine, one, "ann", UNRELATED_IMAGES[1].read_bytes(), "second.jpg").status == "created"


def test_customers_never_reach_each_others_images(engine, settings):
    mine = upload(engine, settings, "ann", CUSTOMER_IMAGES[0].read_bytes())
    assert registry.get_image(engine, "bob", mine.image_id) is None
    assert registry.withdraw_image(engine, "bob", mine.image_id) is False
    assert registry.get_image(engine, "ann", mine.image_id)["withdrawn_at"] is None
    with pytest.raises(LookupError, match="no customer 'carl'"):
        registry.put_licence(engine, "carl", "lic-x", ["*"], DAY, DAY, "example.org")


def test_a_licence_id_of_another_customer_is_not_found(engine):
    registry.put_licence(engine, "bob", "lic-b", ["*"], DAY, DAY, "example.org")
    with pytest.raises(LookupError, match="no licence 'lic-b' of customer 'ann'"):
        registry.put_licence(engine, "ann", "lic-b", ["*"], DAY, DAY, "evil.example")


def test_seeding_goes_through_the_upload_path_and_a_second_seed_adds_nothing(settings):
    engine = make_engine(settings.database_url)
    create_schema(engine)
    first = registry.seed_from_file(engine, settings)
    assert first and {r.status for r in first} == {"created"}
    assert {r.status for r in registry.seed_from_file(engine, settings)} == {"existing"}
    withdrawn = first[0]
    registry.withdraw_image(engine, "alpine-lens", withdrawn.image_id) or registry.withdraw_image(engine, "jana-novak", withdrawn.image_id)
    registry.seed_from_file(engine, settings)  # the seed does not bring a withdrawn image back
    states = {r["image_id"]: r["withdrawn_at"] for c in ("alpine-lens", "jana-novak") for r in registry.list_images(engine, c)}
    assert states[withdrawn.image_id] is not None


def test_the_stages_read_the_snapshot_not_the_database_as_it_is_now(engine, settings):
    kept = upload(engine, settings, "ann", CUSTOMER_IMAGES[0].read_bytes(), "kept.jpg")
    gone = upload(engine, settings, "ann", UNRELATED_IMAGES[1].read_bytes(), "gone.jpg")
    registry.put_licence(engine, "ann", "lic-a", ["*"], dt.date(2026, 1, 1), dt.date(2026, 12, 31), "example.org", "Example Ltd")
    registry.withdraw_image(engine, "ann", gone.image_id)
    registry.write_snapshot(engine, settings, DAY)
    # Changes after the snapshot: a new image, a licence ended.
    upload(engine, settings, "ann", UNRELATED_IMAGES[2].read_bytes(), "later.jpg")
    registry.put_licence(engine, "ann", "lic-a", ["*"], dt.date(2026, 1, 1), dt.date(2026, 3, 1), "example.org", "Example Ltd")

    ann = {c.id: c for c in registry.customers_from_snapshot(settings, DAY)}["ann"]
    assert [i.image_id for i in ann.images] == [kept.image_id]  # withdrawn: not searched
    assert ann.images[0].path.read_bytes() == CUSTOMER_IMAGES[0].read_bytes()  # the original, from the blob store
    assert [(l.id, l.valid_to, l.licensee_operator) for l in ann.licences] == [("lic-a", dt.date(2026, 12, 31), "Example Ltd")]
    with pytest.raises(FileNotFoundError, match="no registry snapshot"):
        registry.customers_from_snapshot(settings, DAY + dt.timedelta(days=1))


def cli(settings, *args):
    env = {"COPYHUNT_HOME": str(settings.home), "COPYHUNT_CUSTOMERS_FILE": str(settings.home / "none.toml"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "copyhunt.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_the_data_team_adds_customers_and_images_from_the_command_line(settings, tmp_path):
    assert cli(settings, "customers", "add", "carla", "--email", "carla@example.org", "--name", "Carla").returncode == 0
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "one.jpg").write_bytes(CUSTOMER_IMAGES[0].read_bytes())
    (folder / "junk.jpg").write_bytes(b"not an image")
    proc = cli(settings, "images", "add", "carla", str(folder), str(CUSTOMER_IMAGES[0]))
    assert proc.returncode == 1  # one file was refused
    lines = proc.stdout.splitlines()
    assert "junk.jpg: rejected: not an image" in lines[0]
    assert lines[1] == "one.jpg: created as one"
    assert lines[2] == f"{CUSTOMER_IMAGES[0].name}: existing as one"
    assert lines[3] == "1 created, 1 existing, 1 rejected"
    listed = cli(settings, "images", "list", "carla").stdout
    assert "one" in listed and "searched" in listed and "{" not in listed
    assert "carla" in cli(settings, "customers", "list").stdout
    unknown = cli(settings, "images", "add", "nobody", str(folder / "one.jpg"))
    assert unknown.returncode == 1 and "no customer" in unknown.stderr
