import json
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pyarrow.parquet as pq
import pytest

from copyhunt.lake import Lake, parse_run_date, sha256_file


def frame(n=50, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return pd.DataFrame({"url": [f"http://s{i % 7}.test/p{i}" for i in rng.permutation(n)], "n": rng.integers(0, 9, n)})


def test_partition_is_deterministic_regardless_of_row_order(tmp_path):
    a, b = Lake(tmp_path / "a"), Lake(tmp_path / "b")
    df = frame()
    pa_ = a.write_partition("pages", "2026-11-21", df, sort_by=["url"])
    pb = b.write_partition("pages", "2026-11-21", df.sample(frac=1, random_state=3), sort_by=["url"])
    assert pa_.read_bytes() == pb.read_bytes()
    again = a.write_partition("pages", "2026-11-21", df, sort_by=["url"])
    assert again.read_bytes() == pb.read_bytes()
    assert list(pq.read_table(pa_).column("url").to_pylist()) == sorted(df["url"])


def test_manifest_lists_files_rows_and_sha(tmp_path):
    lake = Lake(tmp_path)
    p = lake.write_partition("pages", "2026-11-21", frame(10))
    lake.write_partition("images", "2026-11-21", frame(4))
    lake.write_partition("images", "2026-11-22", frame(3))
    m = json.loads(lake.manifest_path("2026-11-21").read_text())
    assert m["run_date"] == "2026-11-21"
    assert m["datasets"]["pages"]["rows"] == 10 and m["datasets"]["images"]["rows"] == 4
    assert m["datasets"]["pages"]["files"][0]["sha256"] == sha256_file(p)
    assert m["datasets"]["pages"]["files"][0]["path"] == "pages/run_date=2026-11-21/part-00000.parquet"


def test_killed_writer_leaves_old_partition_intact(tmp_path):
    lake = Lake(tmp_path)
    good = lake.write_partition("pages", "2026-11-21", frame(10)).read_bytes()
    # A writer killed mid-write (SIGKILL after the first of two chunks: no cleanup, no handlers).
    script = textwrap.dedent(f"""
        import pandas as pd, pyarrow as pa
        from copyhunt import lake as L
        chunks = (pa.table({{"url": [u], "n": [i]}}) for i, u in enumerate("xy"))
        L.Lake({str(tmp_path)!r}).write_partition_chunks("pages", "2026-11-21", chunks, pa.schema([("url", pa.string()), ("n", pa.int64())]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "COPYHUNT_FAILPOINTS": "lake.chunk_written:pages"})
    assert proc.returncode == -signal.SIGKILL
    assert lake.partition_file("pages", "2026-11-21").read_bytes() == good
    assert lake.has_partition("pages", "2026-11-21")
    staged = list((tmp_path / "pages").glob(".staging-*"))
    assert staged, "the killed writer's staging dir is left behind, invisible to readers"
    lake.write_partition("pages", "2026-11-21", frame(10))
    assert not list((tmp_path / "pages").glob(".staging-*"))


def test_missing_partition_and_bad_dates(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(FileNotFoundError, match="no complete partition"):
        lake.read_frame("pages", "2026-11-21")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_run_date("21/11/2026")
    with pytest.raises(ValueError):
        lake.partition_dir("../etc", "2026-11-21")


def test_partition_written_in_chunks_reads_back_whole_and_same_bytes_again(tmp_path):
    import pyarrow as pa

    lake = Lake(tmp_path)
    schema = pa.schema([("url", pa.string()), ("n", pa.int64())])
    chunks = lambda: (pa.table({"url": [f"u{i}-{j}" for j in range(3)], "n": [i * 3 + j for j in range(3)]}) for i in range(4))  # noqa: E731
    path = lake.write_partition_chunks("pages", "2026-11-21", chunks(), schema)
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    assert lake.read_frame("pages", "2026-11-21")["n"].tolist() == list(range(12))
    first = path.read_bytes()
    assert lake.write_partition_chunks("pages", "2026-11-21", chunks(), schema).read_bytes() == first
    empty = lake.write_partition_chunks("pages", "2026-11-22", iter(()), schema)
    assert lake.read_table("pages", "2026-11-22").schema.equals(schema) and pq.read_metadata(empty).num_rows == 0


def _rewrite_with(path, **changes):
    """Rewrite a partition's Parquet file as valid Parquet with some values changed (a forger's edit)."""
    table = pq.read_table(path).to_pandas()
    for column, value in changes.items():
        table.loc[0, column] = value
    pq.write_table(__import__("pyarrow").Table.from_pandas(table, preserve_index=False), path)


def test_a_read_refuses_a_file_that_is_not_the_one_its_manifest_recorded(tmp_path):
    from copyhunt.lake import IntegrityError

    lake = Lake(tmp_path)
    path = lake.write_partition("pages", "2026-11-21", frame(10))
    recorded = sha256_file(path)
    assert len(lake.read_frame("pages", "2026-11-21")) == 10
    _rewrite_with(path, n=1)
    with pytest.raises(IntegrityError) as exc:
        lake.read_frame("pages", "2026-11-21")
    message = str(exc.value)
    assert "\n" not in message and str(path) in message and recorded in message and sha256_file(path) in message


def test_a_later_write_does_not_bless_a_tampered_partition_but_rewriting_it_does(tmp_path):
    from copyhunt.lake import IntegrityError

    lake = Lake(tmp_path)
    path = lake.write_partition("pages", "2026-11-21", frame(10))
    _rewrite_with(path, n=1)
    with pytest.raises(IntegrityError, match="pages"):
        lake.write_partition("images", "2026-11-21", frame(4))
    assert "images" not in lake.read_manifest("2026-11-21")["datasets"]
    # The stage that owns the partition rewrites it: partition and manifest agree again.
    lake.write_partition("pages", "2026-11-21", frame(10))
    lake.write_partition("images", "2026-11-21", frame(4))
    assert len(lake.read_frame("pages", "2026-11-21")) == 10


def test_record_reads_names_each_partition_read_with_its_sha(tmp_path):
    lake = Lake(tmp_path)
    earlier = lake.write_partition("enriched", "2026-11-20", frame(5))
    lake.write_partition("enriched", "2026-11-21", frame(6))
    reader = Lake(tmp_path)
    reader.read_frame("enriched", "2026-11-20")
    reader.read_frame("enriched", "2026-11-20", columns=["url"])
    reader.record_reads("2026-11-21", "enrich")
    reads = reader.read_manifest("2026-11-21")["run"]["reads"]["enrich"]
    assert reads == [{"dataset": "enriched", "run_date": "2026-11-20", "sha256": sha256_file(earlier)}]


def test_a_rewrite_with_different_content_keeps_the_recorded_content_by_its_sha(tmp_path):
    lake = Lake(tmp_path)
    first = sha256_file(lake.write_partition("enriched", "2026-11-21", frame(5)))
    lake.write_partition("enriched", "2026-11-21", frame(5))  # same bytes: nothing kept
    assert lake.superseded_file("enriched", "2026-11-21", first) is None
    lake.write_partition("enriched", "2026-11-21", frame(6))
    kept = lake.superseded_file("enriched", "2026-11-21", first)
    assert kept is not None and sha256_file(kept) == first
    assert "_superseded" not in lake.read_manifest("2026-11-21")["datasets"]
