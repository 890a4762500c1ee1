"""The Parquet lake: one dataset per stage, partitioned ``run_date=YYYY-MM-DD``.

A partition is written atomically and deterministically:
  * rows are sorted by the dataset's key columns and written with fixed writer options and no
    schema metadata that could vary (pandas metadata is dropped), so re-running a task rewrites
    byte-identical files;
  * files are staged in a hidden directory beside the dataset and the finished directory is
    renamed into place, so a reader never sees a half-written partition; a killed writer leaves
    only a ``.staging-*`` directory, cleaned by the next write.

Each write refreshes ``_manifests/run_date=D/manifest.json``: every output file of that run date
with its rows and sha256. Every read checks the file against that manifest and refuses a mismatch
(``IntegrityError``), and a manifest refresh refuses to take in a partition it did not write whose
file no longer matches its recorded sha256, so a tampered file is never blessed by a later write.
A ``Lake`` remembers what it read (``reads``): stages record the partitions of other days they
read, so a replay reads exactly those.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from copyhunt.blobs import atomic_write_bytes  # noqa: F401  (re-exported: callers write files through the lake module)
from copyhunt.failpoints import failpoint

PART_FILE = "part-00000.parquet"
MANIFESTS = "_manifests"
# A partition's earlier content, kept when a re-run replaces it with different bytes, named by its
# sha256: a later day that read it then replays from exactly that (``superseded_file``).
SUPERSEDED = "_superseded"
# Fixed writer options: any change here changes every file's bytes, so it is a format version.
WRITER_OPTIONS: dict[str, Any] = dict(
    compression="zstd",
    compression_level=3,
    version="2.6",
    use_dictionary=True,
    write_statistics=True,
    data_page_size=1 << 20,
)


class IntegrityError(RuntimeError):
    """A partition's file does not match the manifest that recorded it (or is not recorded)."""


def parse_run_date(value: str | dt.date | dt.datetime) -> dt.date:
    """Accept 2026-11-21, a date or a datetime; raise ValueError with a clear message otherwise."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise ValueError(f"run date must look like YYYY-MM-DD, got {value!r}") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_parquet_atomically(table: pa.Table, path: Path) -> Path:
    """Write ``table`` with the deterministic WRITER_OPTIONS, atomically (``atomic_write_bytes``);
    returns ``path``."""
    buf = io.BytesIO()
    pq.write_table(table, buf, **WRITER_OPTIONS)
    atomic_write_bytes(path, buf.getvalue())
    return path


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def to_table(frame: pd.DataFrame | pa.Table, sort_by: Sequence[str] = (), schema: pa.Schema | None = None) -> pa.Table:
    """A sorted Arrow table with no variable metadata."""
    if isinstance(frame, pd.DataFrame):
        table = pa.Table.from_pandas(frame, preserve_index=False, schema=schema)
    else:
        table = frame.cast(schema) if schema is not None else frame
    keys = [c for c in sort_by if c in table.column_names]
    # Sort by the declared keys, then by every column, so ties cannot depend on input order.
    extra = [c for c in table.column_names if c not in keys and _sortable(table.schema.field(c).type)]
    if table.num_rows:
        table = table.sort_by([(c, "ascending") for c in keys + extra])
    return table.replace_schema_metadata(None)


def _sortable(t: pa.DataType) -> bool:
    return not (pa.types.is_list(t) or pa.types.is_struct(t) or pa.types.is_map(t) or pa.types.is_large_list(t))


class Lake:
    """A local-filesystem lake rooted at ``root``."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        # (dataset, run date, sha256) of every partition read through this object, in order.
        self.reads: list[tuple[str, str, str]] = []

    # ---- locations ---------------------------------------------------------------------------
    def dataset_dir(self, dataset: str) -> Path:
        if not dataset or "/" in dataset or dataset.startswith((".", "_")):
            raise ValueError(f"bad dataset name {dataset!r}")
        return self.root / dataset

    def partition_dir(self, dataset: str, run_date: str | dt.date) -> Path:
        return self.dataset_dir(dataset) / f"run_date={parse_run_date(run_date).isoformat()}"

    def partition_file(self, dataset: str, run_date: str | dt.date) -> Path:
        return self.partition_dir(dataset, run_date) / PART_FILE

    def manifest_path(self, run_date: str | dt.date) -> Path:
        return self.root / MANIFESTS / f"run_date={parse_run_date(run_date).isoformat()}" / "manifest.json"

    def has_partition(self, dataset: str, run_date: str | dt.date) -> bool:
        return (self.partition_dir(dataset, run_date) / "_SUCCESS").exists()

    def run_dates(self, dataset: str) -> list[dt.date]:
        """Completed partitions of a dataset, oldest first."""
        d = self.dataset_dir(dataset)
        if not d.exists():
            return []
        out = []
        for p in d.glob("run_date=*"):
            if (p / "_SUCCESS").exists():
                out.append(parse_run_date(p.name.split("=", 1)[1]))
        return sorted(out)

    # ---- writing -----------------------------------------------------------------------------
    def write_partition(
        self,
        dataset: str,
        run_date: str | dt.date,
        frame: pd.DataFrame | pa.Table,
        sort_by: Sequence[str] = (),
        schema: pa.Schema | None = None,
        extra_files: dict[str, bytes] | None = None,
    ) -> Path:
        """Write one partition atomically; returns the partition's Parquet file path."""
        table = to_table(frame, sort_by, schema)
        return self.write_partition_chunks(dataset, run_date, [table], table.schema, extra_files)

    def write_partition_chunks(
        self,
        dataset: str,
        run_date: str | dt.date,
        tables: Iterable[pa.Table],
        schema: pa.Schema,
        extra_files: dict[str, bytes] | None = None,
    ) -> Path:
        """Write one partition atomically from tables made one after another (each becomes row
        groups of the file, in order): a day's rows need not fit in memory at once. The caller
        keeps the order deterministic (``to_table`` on each chunk of a sorted input)."""
        target = self.partition_dir(dataset, run_date)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._clean_stale_staging(target.parent)
        staging = target.parent / f".staging-{target.name}-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            with pq.ParquetWriter(staging / PART_FILE, schema.remove_metadata(), **WRITER_OPTIONS) as writer:
                for table in tables:
                    writer.write_table(table.cast(schema.remove_metadata()))
                    failpoint("lake.chunk_written", dataset)  # crash tests: die with the file half written
            for name, data in sorted((extra_files or {}).items()):
                (staging / name).write_bytes(data)
            (staging / "_SUCCESS").write_bytes(b"")
            for f in staging.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            failpoint("lake.before_swap", dataset)  # crash tests: die with the partition staged
            self._keep_superseded(dataset, run_date, target / PART_FILE, sha256_file(staging / PART_FILE))
            self._swap_in(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.write_manifest(run_date, written=[dataset])
        return target / PART_FILE

    def _keep_superseded(self, dataset: str, run_date: str | dt.date, current: Path, new_sha: str) -> None:
        """Keep the partition's recorded content if the new file differs from it."""
        old_sha = self.recorded_sha256(dataset, run_date)
        if old_sha is None or old_sha == new_sha or not current.exists() or sha256_file(current) != old_sha:
            return  # nothing recorded, unchanged, or not the recorded content (tampered: not worth keeping)
        keep = self.root / SUPERSEDED / dataset / f"run_date={parse_run_date(run_date).isoformat()}" / f"{old_sha}.parquet"
        if not keep.exists():
            atomic_write_bytes(keep, current.read_bytes())

    def superseded_file(self, dataset: str, run_date: str | dt.date, sha256: str) -> Path | None:
        """The kept earlier content of a partition with this sha256, if there is one and it is intact."""
        p = self.root / SUPERSEDED / dataset / f"run_date={parse_run_date(run_date).isoformat()}" / f"{sha256}.parquet"
        return p if p.exists() and sha256_file(p) == sha256 else None

    @staticmethod
    def _swap_in(staging: Path, target: Path) -> None:
        # POSIX rename cannot replace a non-empty directory: move the old one aside first. Readers
        # see the old complete partition, briefly none, then the new complete one; never a part.
        trash = None
        if target.exists():
            trash = target.parent / f".trash-{target.name}-{uuid.uuid4().hex}"
            os.rename(target, trash)
        os.rename(staging, target)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def _clean_stale_staging(parent: Path) -> None:
        for p in parent.glob(".staging-*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in parent.glob(".trash-*"):
            shutil.rmtree(p, ignore_errors=True)

    # ---- reading -----------------------------------------------------------------------------
    def recorded_sha256(self, dataset: str, run_date: str | dt.date) -> str | None:
        """The sha256 the run date's manifest recorded for the partition's Parquet file."""
        rel = f"{dataset}/run_date={parse_run_date(run_date).isoformat()}/{PART_FILE}"
        for entry in self.read_manifest(run_date).get("datasets", {}).get(dataset, {}).get("files", []):
            if entry.get("path") == rel:
                return entry.get("sha256")
        return None

    def verified_file(self, dataset: str, run_date: str | dt.date) -> Path:
        """The partition's Parquet file, once its sha256 is the one its manifest recorded (else
        IntegrityError in one line: the file, the expected and the actual sha256). For readers
        that open the file themselves (Spark); ``read_table`` goes through here."""
        if not self.has_partition(dataset, run_date):
            raise FileNotFoundError(f"no complete partition {dataset}/run_date={parse_run_date(run_date)} in {self.root}")
        path = self.partition_file(dataset, run_date)
        expected = self.recorded_sha256(dataset, run_date)
        actual = sha256_file(path)
        if expected != actual:
            raise IntegrityError(f"refusing {path}: expected sha256 {expected or '(not in the manifest)'}, actual sha256 {actual}")
        self.reads.append((dataset, parse_run_date(run_date).isoformat(), actual))
        return path

    def read_table(self, dataset: str, run_date: str | dt.date, columns: Iterable[str] | None = None) -> pa.Table:
        return pq.read_table(self.verified_file(dataset, run_date), columns=list(columns) if columns else None)

    def read_frame(self, dataset: str, run_date: str | dt.date, columns: Iterable[str] | None = None) -> pd.DataFrame:
        return self.read_table(dataset, run_date, columns).to_pandas()

    # ---- manifests ---------------------------------------------------------------------------
    def manifest(self, run_date: str | dt.date) -> dict[str, Any]:
        """Every complete partition of this run date, with rows and sha256 of each file."""
        rd = parse_run_date(run_date).isoformat()
        datasets: dict[str, Any] = {}
        if self.root.exists():
            for ds in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
                part = ds / f"run_date={rd}"
                if not (part / "_SUCCESS").exists():
                    continue
                files = []
                for f in sorted(part.iterdir()):
                    if f.name.startswith((".", "_")) or not f.is_file():
                        continue
                    entry: dict[str, Any] = {"path": f"{ds.name}/run_date={rd}/{f.name}", "sha256": sha256_file(f), "bytes": f.stat().st_size}
                    if f.suffix == ".parquet":
                        entry["rows"] = pq.ParquetFile(f).metadata.num_rows
                    files.append(entry)
                datasets[ds.name] = {"files": files, "rows": sum(e.get("rows", 0) for e in files)}
        return {"run_date": rd, "datasets": datasets}

    def write_manifest(self, run_date: str | dt.date, extra: dict[str, Any] | None = None, written: Iterable[str] = ()) -> Path:
        """Refresh the run date's manifest from its partitions. Only the datasets in ``written``
        (just written by the caller) may change their files; any other recorded partition whose
        files differ from the manifest is refused (IntegrityError): a later write must not bless
        a tampered file. The signature (``sealing.seal_manifest``) is dropped: the body changed,
        and the stage seals it again when it finishes; a sealed manifest replaced here is kept by
        its sha256, since later days' chain links name it."""
        path = self.manifest_path(run_date)
        body = self.manifest(run_date)
        previous = self.read_manifest(run_date)
        written = set(written)
        for dataset, entry in body["datasets"].items():
            before = previous.get("datasets", {}).get(dataset)
            if dataset in written or before is None:
                continue
            old = {f["path"]: f["sha256"] for f in before.get("files", [])}
            for f in entry["files"]:
                if f["path"] in old and old[f["path"]] != f["sha256"]:
                    raise IntegrityError(f"refusing {self.root / f['path']}: expected sha256 {old[f['path']]}, actual sha256 {f['sha256']}"
                                         f" (re-run the stage that writes {dataset} to replace it)")
        # Run-level facts (code version, config hash, index version) survive partition rewrites,
        # and so does the chain link's choice of previous day (audit's sealing refreshes its sha).
        body["run"] = {**previous.get("run", {}), **(extra or {})}
        if "chain" in previous:
            body["chain"] = previous["chain"]
        if "signature" in previous:
            # A sealed manifest is what later days' chain links name: keep it by its sha256.
            old = path.read_bytes()
            keep = self.root / MANIFESTS / SUPERSEDED / f"run_date={parse_run_date(run_date).isoformat()}" / f"{hashlib.sha256(old).hexdigest()}.json"
            if not keep.exists():
                atomic_write_bytes(keep, old)
        atomic_write_json(path, body)
        return path

    def superseded_manifest(self, run_date: str | dt.date, sha256: str) -> Path | None:
        """A sealed manifest of the run date that a re-run replaced, by its sha256, if intact."""
        p = self.root / MANIFESTS / SUPERSEDED / f"run_date={parse_run_date(run_date).isoformat()}" / f"{sha256}.json"
        return p if p.exists() and sha256_file(p) == sha256 else None

    def record_reads(self, run_date: str | dt.date, stage: str) -> None:
        """Record in the run date's manifest the partitions this object read (dataset, run date,
        sha256): what a replay of ``stage`` must read, and nothing else (earlier days' history,
        the index version of the reference run it matched against)."""
        reads = sorted(set(self.reads))
        facts = self.read_manifest(run_date).get("run", {}).get("reads", {})
        facts = {**facts, stage: [{"dataset": ds, "run_date": d, "sha256": sha} for ds, d, sha in reads]}
        self.write_manifest(run_date, extra={"reads": facts})

    def read_manifest(self, run_date: str | dt.date) -> dict[str, Any]:
        path = self.manifest_path(run_date)
        if not path.exists():
            return {}
        return json.loads(path.read_text())
