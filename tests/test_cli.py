"""The command line as a user meets it: readable results, early refusals, clean help."""

from __future__ import annotations

import shutil
import re
import subprocess
import sys
import time

import pytest

from conftest import CUSTOMER_IMAGES

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
