"""The command line as a user meets it: readable results, early refusals, clean help."""

from __future__ import annotations

import json
import shutil
import re
import subprocess
import sys
import time

import pytest

from conftest import CUSTOMER_IMAGES, REPO

EXE = [sys.executable, "-m", "copyhunt.cli"]


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(EXE + list(args), capture_output=True, text=True, timeout=300, **kw)


def every_command():
    import typer

    from copyhunt.cli import app

    def walk(command, path):
        subs = getattr(command, "commands", {})
        if not subs:
            yield path
        for name, sub in subs.items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def test_help_shows_placeholders_not_python_types():
    commands = every_command()
    assert len(commands) > 15 and ["stage"] in commands and ["audit", "verify"] in commands
    for command in commands:
        proc = run(*command, "--help")
        assert proc.returncode == 0, (command, proc.stderr)
        assert "--help" in proc.stdout
        types = re.findall(r"<(?:bool|str|int|float|path|Path|list\[[^>]*\]|datetime)>", proc.stdout)
        assert not types, (command, types)
    assert "--run-date YYYY-MM-DD" in run("stage", "--help").stdout


def test_index_build_prints_a_summary_not_a_repr(tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    for image in CUSTOMER_IMAGES[:2]:
        shutil.copy(image, refs / image.name)
    (refs / "broken.jpg").write_bytes(CUSTOMER_IMAGES[0].read_bytes()[:500])
    proc = run("index", "build", "--images", str(refs), "--out", str(tmp_path / "idx"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "{" not in proc.stdout and "'version'" not in proc.stdout
    facts = {cells[0]: cells[1] for line in proc.stdout.splitlines()
             if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 2}
    assert facts["references"] == "3"
    assert facts["unusable references"].startswith("1 (reasons in")
    assert facts["shards"].endswith("built, 0 reused)")


def test_index_compact_merges_the_shards_two_builds_added_and_refuses_a_non_index(tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    for image in CUSTOMER_IMAGES[:2]:  # two builds, one image more each time: two small shards
        shutil.copy(image, refs / image.name)
        assert run("index", "build", "--images", str(refs), "--out", str(tmp_path / "idx")).returncode == 0
    proc = run("index", "compact", "--index-dir", str(tmp_path / "idx"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    facts = {cells[0]: cells[1] for line in proc.stdout.splitlines()
             if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 2}
    assert facts["small shards merged"] == "2 into 1 new" and facts["shards"] == "1"
    again = run("index", "compact", "--index-dir", str(tmp_path / "idx"))
    assert "1 into 0 new" in again.stdout  # the merged shard is itself small: rebuilt from the same entries, it is the same file
    (tmp_path / "photos").mkdir()
    refused = run("index", "compact", "--index-dir", str(tmp_path / "photos"))
    assert refused.returncode == 2 and "is not a copyhunt index" in " ".join(refused.stderr.split()) and "Traceback" not in refused.stderr


def test_match_refuses_a_folder_that_is_not_an_index_before_any_work(tmp_path):
    queries = tmp_path / "queries"
    queries.mkdir()
    shutil.copy(CUSTOMER_IMAGES[0], queries / "a.jpg")
    not_an_index = tmp_path / "photos"
    not_an_index.mkdir()
    started = time.monotonic()
    proc = run("match", "--index", str(not_an_index), "--images", str(queries), "--out", str(tmp_path / "m.parquet"))
    assert proc.returncode == 2
    assert "is not a copyhunt index" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "spark" not in proc.stderr.lower()
    assert not (tmp_path / "m.parquet").exists()
    # No fingerprinting and no Spark start-up (which alone takes tens of seconds).
    assert time.monotonic() - started < 20


def test_match_refuses_an_empty_query_folder(tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    shutil.copy(CUSTOMER_IMAGES[0], refs / CUSTOMER_IMAGES[0].name)
    assert run("index", "build", "--images", str(refs), "--out", str(tmp_path / "idx")).returncode == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    proc = run("match", "--index", str(tmp_path / "idx"), "--images", str(empty), "--out", str(tmp_path / "m.parquet"))
    assert proc.returncode == 2
    assert "holds no image files" in proc.stdout + proc.stderr
    assert not (tmp_path / "m.parquet").exists()


def run_in(home, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The command line with its own home (lake, hits database, config) under ``home``."""
    import os

    inherited = {k: v for k, v in os.environ.items() if not k.startswith("COPYHUNT_")}
    return run(*args, env={**inherited, "COPYHUNT_HOME": str(home), **env}, cwd=home)


def test_user_mistakes_end_in_one_line_without_a_traceback(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "config-dir").mkdir()
    (tmp_path / "bad.toml").write_text("copyhunt = 3\n")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("a folder with files, not an index")
    shutil.copy(CUSTOMER_IMAGES[0], tmp_path / "photos" / "a.jpg")
    cases = [
        (["summary", "--run-date", "2020-01-01"], "no run for 2020-01-01"),
        (["stage", "price", "--run-date", "2020-01-01"], "price refused: no complete partition enriched/run_date=2020-01-01"),
        (["scaling", "--run-date", "2020-01-01"], "has no timings"),
        (["crawl", "--seed", "not-a-url", "--out", "c"], "'not-a-url' is not an http(s) URL"),
        (["crawl", "--seed", "shop http://a.test/", "--out", "c"], "unknown spider 'shop'"),
        (["crawl", "--seed", "http://a.test/", "--out", "a-file"], "a-file is a file, not a directory"),
        (["index", "build", "--images", "photos", "--out", "a-file"], "a-file is a file, not a directory"),
        (["index", "build", "--images", "photos", "--out", "photos"], "photos holds files but is not a copyhunt index"),
        (["images", "add", "nobody", "photos"], "no customer 'nobody'"),
        (["match", "--index", "photos", "--images", "photos", "--out", "photos"], "photos is a directory; give a file name"),
        (["match", "--index", "photos", "--images", "photos", "--out", "a-file/m.parquet"], "a-file is a file, so a-file/m.parquet cannot be written"),
    ]
    for args, message in cases:
        proc = run_in(tmp_path, *args)
        assert proc.returncode != 0, (args, proc.stdout)
        assert "Traceback" not in proc.stderr, (args, proc.stderr[-2000:])
        assert any(message in line for line in proc.stderr.splitlines()), (args, proc.stderr)  # on one line, not wrapped
    proc = run_in(tmp_path, "demo", "--run-date", "2026-11-21")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "customers.toml does not exist (COPYHUNT_CUSTOMERS_FILE)" in proc.stderr.splitlines()[-1]
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        proc = run_in(tmp_path, "demo-web", "--port", port, "--out", "web", COPYHUNT_CUSTOMERS_FILE=str(REPO / "demo" / "customers.toml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in proc.stderr.splitlines()[-1]
    for config, message in (("config-dir", "cannot be read"), ("bad.toml", "'copyhunt' must be a table"), ("missing.toml", "does not exist")):
        proc = run_in(tmp_path, "summary", COPYHUNT_CONFIG=str(tmp_path / config))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert any(line.startswith("configuration error: ") and message in line for line in proc.stderr.splitlines()), proc.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "photos" / "CURRENT").exists()  # refused before any work


def test_empty_input_is_refused_unless_allowed(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    refused = run_in(tmp_path, "index", "build", "--images", "empty", "--out", "idx")
    assert refused.returncode == 2 and "empty holds no image files" in refused.stderr and not (tmp_path / "idx").exists()
    built = run_in(tmp_path, "index", "build", "--images", "empty", "--out", "idx", "--allow-empty", "--json")
    assert built.returncode == 0, built.stderr[-2000:]
    assert {k: json.loads(built.stdout)[k] for k in ("references", "shards", "out")} == {"references": 0, "shards": 0, "out": "idx"}

    refused = run_in(tmp_path, "match", "--index", "idx", "--images", "empty", "--out", "m.parquet")
    assert refused.returncode == 2 and "match refused: empty holds no image files" in refused.stderr and not (tmp_path / "m.parquet").exists()
    started = time.monotonic()
    allowed = run_in(tmp_path, "match", "--index", "idx", "--images", "empty", "--out", "m.parquet", "--allow-empty", "--json")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert json.loads(allowed.stdout) == {"matches": 0, "out": "m.parquet", "unusable": {}, "errors_file": None}
    assert time.monotonic() - started < 20  # nothing to search: no fingerprinting, no Spark
    import pyarrow.parquet as pq

    written = pq.read_table(tmp_path / "m.parquet")
    assert written.num_rows == 0 and {"query", "reference_id", "score", "query_x0", "ref_y1"} <= set(written.column_names)

    assert run_in(tmp_path, "customers", "add", "ana", "--email", "ana@example.com").returncode == 0
    (tmp_path / "nothing").mkdir()
    refused = run_in(tmp_path, "images", "add", "ana", "nothing")
    assert refused.returncode == 2 and "no files in nothing" in refused.stderr
    allowed = run_in(tmp_path, "images", "add", "ana", "nothing", "--allow-empty", "--json")
    assert allowed.returncode == 0 and json.loads(allowed.stdout) == {"results": [], "created": 0, "existing": 0, "rejected": 0}


def test_json_output_for_scripts(tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    for image in CUSTOMER_IMAGES[:2]:
        shutil.copy(image, refs / image.name)
    built = run_in(tmp_path, "index", "build", "--images", "refs", "--out", "idx", "--json")
    assert built.returncode == 0, built.stderr[-2000:]
    facts = json.loads(built.stdout)  # stdout holds the JSON alone; the progress bar is on stderr
    assert (facts["references"], facts["errors"], facts["built"], facts["reused"]) == (2, 0, facts["shards"], 0) and facts["shards"] >= 1
    compacted = json.loads(run_in(tmp_path, "index", "compact", "--index-dir", "idx", "--json").stdout)
    assert compacted["index_dir"] == "idx" and compacted["shards"] >= 1

    assert run_in(tmp_path, "customers", "add", "ana", "--email", "ana@example.com", "--name", "Ana").returncode == 0
    added = run_in(tmp_path, "images", "add", "ana", str(CUSTOMER_IMAGES[0]), "--json")
    assert added.returncode == 0, added.stderr[-2000:]
    results = json.loads(added.stdout)
    assert results["created"] == 1 and results["results"][0]["filename"] == CUSTOMER_IMAGES[0].name
    customers = json.loads(run_in(tmp_path, "customers", "list", "--json").stdout)
    assert customers == [{"id": "ana", "name": "Ana", "email": "ana@example.com", "images": 1}]
    images = json.loads(run_in(tmp_path, "images", "list", "ana", "--json").stdout)
    assert [i["image_id"] for i in images] == [results["results"][0]["image_id"]]
    assert json.loads(run_in(tmp_path, "sites", "list", "ana", "--json").stdout) == []
