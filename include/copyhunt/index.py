"""Annoy index shards over window hashes, with a Parquet side table per shard.

Layout of an index directory::

    shards/<shard_id>.ann       Annoy file (hamming metric, one item per reference window)
    shards/<shard_id>.parquet   side table: annoy_id -> customer_id, image_id, window, box, phash
    shards/<shard_id>.rows.npy  the side table as the searcher maps it (``MappedSide``): one
                                fixed-width record per annoy id, strings as codes into
    shards/<shard_id>.refs.npy  the shard's references (customer_id, image_id, ref_sha256) and
    shards/<shard_id>.windows.npy  its window names
    versions/<version>.json     the shards making up one index version
    CURRENT                     the latest version id (written last, atomically)

A shard's id is the sha256 of its entries, so a shard whose inputs are unchanged already exists
and is not rebuilt; new reference images go into new shards and leave the old ones alone. The
Annoy build is seeded and single-threaded, so the same entries give the same bytes.

Growth: each incremental build adds a small shard holding only the new images, and a withdrawn
image's shard is rebuilt without it (a shard is bounded by ``shard_size``, so that costs at most
one shard's build, and the searcher needs no exclusion list: a version's shards hold exactly its
references). Every lookup visits every shard, so small shards pile up cost; ``compact_index``
merges them into full ones. Shard files are never deleted here: every published version stays
searchable, as replaying a past hunt needs.

A searcher memory-maps a shard's Annoy file and its ``.npy`` side files, so a worker's memory
holds the pages its lookups touch, not the index: its size does not grow with the references.
A shard written before the mapped files existed is still searched, from its Parquet side table
read into memory as before, and the next build that keeps it writes its mapped files.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from annoy import AnnoyIndex

from copyhunt.fingerprint import FINGERPRINT_VERSION, HASH_BITS
from copyhunt.lake import WRITER_OPTIONS, atomic_write_bytes, atomic_write_json, sha256_file, to_table

ANNOY_SEED = 20261121
N_TREES = 16  # recall vs. build time; 16 trees find every neighbour within 12 bits in tests
# Items examined per lookup and shard. Annoy's hamming trees split on single bits, so a
# neighbour 10 bits away often sits in another branch; search_k buys recall with time. At 128,
# 90% of the suite's true window pairs within 10 bits are found among 4M entries (100k
# references) at ~100 us a lookup; 512 finds 97% at 3x the time. A copy has several close
# window pairs, so losing some pairs rarely loses the copy (see ``copyhunt bench throughput``).
SEARCH_K = 128
ENTRY_COLUMNS = ["customer_id", "image_id", "ref_sha256", "window", "mirrored", "x0", "y0", "x1", "y1", "phash"]
IMAGE_KEY = ["customer_id", "image_id", "ref_sha256"]


def unpack_bits(hashes: np.ndarray, dtype=np.float32) -> np.ndarray:
    """int64 hashes -> (n, 64) array of 0/1, most significant bit first."""
    u = np.asarray(hashes, dtype=np.int64).view(np.uint64)
    shifts = np.arange(HASH_BITS - 1, -1, -1, dtype=np.uint64)
    return ((u[:, None] >> shifts) & np.uint64(1)).astype(dtype)


def annoy_vectors(hashes: np.ndarray) -> list[bytes]:
    """Each hash as the vector Annoy takes: 64 bytes of 0 or 1. Annoy reads a vector one item
    at a time by index, so bytes serve as well as a list of 64 numbers and cost one object
    instead of 65 (making those lists was most of an index build)."""
    packed = unpack_bits(hashes, np.uint8).tobytes()
    return [packed[i:i + HASH_BITS] for i in range(0, len(packed), HASH_BITS)]


def popcount64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64).view(np.uint64)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1).astype(np.int64)


def _shard_id(entries: pd.DataFrame) -> str:
    """sha256 of the build parameters and the entries (their columns in order), vectorised."""
    h = hashlib.sha256()
    h.update(f"annoy-hamming-{HASH_BITS}-trees{N_TREES}-seed{ANNOY_SEED}-fingerprint{FINGERPRINT_VERSION}\n".encode())
    for col in ENTRY_COLUMNS:
        values = entries[col]
        if values.dtype == object:
            h.update("\x1f".join(values.astype(str)).encode())
        else:
            h.update(np.ascontiguousarray(values.to_numpy()).tobytes())
        h.update(b"\x1e")
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class BuildResult:
    version: str
    shards: list[str]
    built: list[str]
    reused: list[str]
    entries: int


def build_index(entries: pd.DataFrame, index_dir: Path, shard_size: int) -> BuildResult:
    """Add ``entries`` (one row per reference window) to ``index_dir`` and publish a version.

    Images already present in a shard of the current version, unchanged, stay in that shard;
    the remaining images are packed, in sorted order, into new shards of at most ``shard_size``
    entries (an image never spans two shards).
    """
    missing = set(ENTRY_COLUMNS) - set(entries.columns)
    if missing:
        raise ValueError(f"index entries lack columns {sorted(missing)}")
    index_dir = Path(index_dir)
    shards_dir = index_dir / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    entries = _normalised(entries)
    wanted = {tuple(k) for k in entries[IMAGE_KEY].drop_duplicates().itertuples(index=False)}

    kept: list[str] = []
    covered: set[tuple] = set()
    image_keys = pd.MultiIndex.from_frame(entries[IMAGE_KEY])
    for shard in current_shards(index_dir):
        side = pq.read_table(shards_dir / f"{shard}.parquet", columns=IMAGE_KEY).to_pandas()
        images = {tuple(k) for k in side.drop_duplicates().itertuples(index=False)}
        if not images or not images <= wanted or images & covered:
            continue
        # A shard survives only if its images are still registered with the same content and
        # hash to the same entries: a new fingerprint version rebuilds every shard.
        if _shard_id(entries[image_keys.isin(list(images))]) == shard:
            kept.append(shard)
            covered |= images

    if covered:
        rest = entries[~image_keys.isin(list(covered))]
    else:
        rest = entries
    built: list[str] = []
    reused: list[str] = []
    new_shards: list[str] = []
    for chunk in _pack(rest, shard_size):
        sid = _shard_id(chunk)
        new_shards.append(sid)
        if _shard_present(shards_dir, sid):
            reused.append(sid)
            continue
        _write_shard(chunk, shards_dir, sid)
        built.append(sid)

    shards = kept + new_shards
    for sid in shards:  # a shard kept or reused from before the mapped files gets them now
        ensure_mapped_side(shards_dir, sid)
    version = _publish(index_dir, shards, int(len(entries)))
    return BuildResult(version, shards, built, reused + kept, int(len(entries)))


def _publish(index_dir: Path, shards: list[str], entries: int) -> str:
    """Write the version file for ``shards`` and make it CURRENT (last, atomically)."""
    version = hashlib.sha256("\n".join(shards).encode()).hexdigest()[:16]
    atomic_write_json(index_dir / "versions" / f"{version}.json",
                      {"version": version, "shards": shards, "entries": entries, "fingerprint_version": FINGERPRINT_VERSION})
    atomic_write_bytes(index_dir / "CURRENT", (version + "\n").encode())
    return version


def shard_entry_counts(index_dir: Path, version: str | None = None) -> dict[str, int]:
    """Entries per shard of a version (from the side tables' footers, not their rows)."""
    shards_dir = Path(index_dir) / "shards"
    return {sid: pq.ParquetFile(shards_dir / f"{sid}.parquet").metadata.num_rows for sid in current_shards(index_dir, version)}


def small_shards(index_dir: Path, shard_size: int, version: str | None = None) -> list[str]:
    """Shards of a version holding less than half of ``shard_size`` entries: what compaction merges."""
    return [sid for sid, n in shard_entry_counts(index_dir, version).items() if n < shard_size // 2]


@dataclass(frozen=True)
class CompactResult:
    version: str
    shards: list[str]
    merged: list[str]  # the small shards whose entries moved
    built: list[str]  # the shards they moved into
    dropped_entries: int  # entries of references no longer wanted


def compact_index(index_dir: Path, shard_size: int, keep: Callable[[pd.DataFrame], pd.Series] | None = None) -> CompactResult:
    """Merge the current version's small shards into as few full shards as their entries fill,
    drop the entries ``keep`` rejects (a mask over side-table rows; default: keep all), publish
    the result as a new version and make it CURRENT.

    Large shards that hold a rejected entry are rebuilt too, so the new version holds none.
    The merged shards are content-addressed like any build: compacting the same entries twice
    gives the same shards and the same version. The old shard files stay (older versions use them).
    """
    index_dir = Path(index_dir)
    version = check_index(index_dir)
    shards_dir = index_dir / "shards"
    counts = shard_entry_counts(index_dir, version)
    small = set(small_shards(index_dir, shard_size, version))
    kept: list[str] = []
    moved: list[pd.DataFrame] = []
    merged: list[str] = []
    dropped = 0
    for sid in counts:
        side = pq.read_table(shards_dir / f"{sid}.parquet", columns=ENTRY_COLUMNS).to_pandas() if (sid in small or keep) else None
        mask = keep(side) if keep is not None and side is not None else None
        if sid not in small and (mask is None or bool(mask.all())):
            kept.append(sid)
            continue
        if mask is not None:
            dropped += int((~mask).sum())
            side = side[mask.to_numpy()]
        moved.append(side)
        merged.append(sid)
    if not merged:
        return CompactResult(version, kept, [], [], 0)
    rest = pd.concat(moved, ignore_index=True) if moved else pd.DataFrame(columns=ENTRY_COLUMNS)
    rest = _normalised(rest)
    built: list[str] = []
    new_shards: list[str] = []
    for chunk in _pack(rest, shard_size):
        sid = _shard_id(chunk)
        new_shards.append(sid)
        if not _shard_present(shards_dir, sid):
            _write_shard(chunk, shards_dir, sid)
            built.append(sid)
    shards = kept + new_shards
    for sid in shards:  # a shard kept or reused from before the mapped files gets them now
        ensure_mapped_side(shards_dir, sid)
    entries = sum(counts[s] for s in kept) + int(len(rest))
    return CompactResult(_publish(index_dir, shards, entries), shards, merged, built, dropped)


def _normalised(entries: pd.DataFrame) -> pd.DataFrame:
    """Entries in the column types and order shards are built from (their ids hash them)."""
    entries = entries[ENTRY_COLUMNS].astype({"mirrored": bool, "x0": "float64", "y0": "float64", "x1": "float64", "y1": "float64", "phash": "int64"})
    return entries.sort_values(["customer_id", "image_id", "ref_sha256", "mirrored", "window"], kind="mergesort").reset_index(drop=True)


def _pack(entries: pd.DataFrame, shard_size: int) -> Iterable[pd.DataFrame]:
    if entries.empty:
        return
    start = 0
    sizes = entries.groupby(IMAGE_KEY, sort=False).size()
    current = 0
    for n in sizes:
        if current and current + n > shard_size:
            yield entries.iloc[start : start + current]
            start += current
            current = 0
        current += n
    if current:
        yield entries.iloc[start : start + current]


def _write_shard(chunk: pd.DataFrame, shards_dir: Path, sid: str) -> None:
    ann = AnnoyIndex(HASH_BITS, "hamming")
    ann.set_seed(ANNOY_SEED)
    hashes = chunk["phash"].to_numpy()
    for start in range(0, len(hashes), 65536):  # in slices: the vectors are 64 bytes a hash
        for i, vector in enumerate(annoy_vectors(hashes[start:start + 65536]), start):
            ann.add_item(i, vector)
    ann.build(N_TREES, n_jobs=1)
    tmp = shards_dir / f".{sid}.{uuid.uuid4().hex}.ann"
    ann.save(str(tmp))
    ann.unload()
    _zero_node_padding(tmp)
    side = chunk.reset_index(drop=True).copy()
    side.insert(0, "annoy_id", np.arange(len(side), dtype=np.int64))
    tmp_side = shards_dir / f".{sid}.{uuid.uuid4().hex}.parquet"
    pq.write_table(to_table(side, ["annoy_id"]), tmp_side, **WRITER_OPTIONS)
    # Side tables first, Annoy file last: a shard counts as present once its .ann exists.
    os.replace(tmp_side, shards_dir / f"{sid}.parquet")
    write_mapped_side(side, shards_dir, sid)
    os.replace(tmp, shards_dir / f"{sid}.ann")


def _shard_present(shards_dir: Path, sid: str) -> bool:
    return (shards_dir / f"{sid}.ann").exists() and (shards_dir / f"{sid}.parquet").exists()


# ---- the side table as the searcher maps it -------------------------------------------------------
MAPPED_SUFFIXES = (".rows.npy", ".refs.npy", ".windows.npy")
ROW_FIELDS = [("ref", "<i4"), ("window", "<i4"), ("mirrored", "?"), ("x0", "<f8"), ("y0", "<f8"), ("x1", "<f8"), ("y1", "<f8"), ("phash", "<i8")]


def _fixed_width(values: pd.Series) -> np.ndarray:
    """UTF-8 bytes in a fixed-width column as wide as the longest value (at least 1)."""
    encoded = [v.encode() for v in values.astype(str)]
    return np.array(encoded, dtype=f"S{max([1, *map(len, encoded)])}")


def mapped_side_arrays(side: pd.DataFrame) -> dict[str, np.ndarray]:
    """The three arrays of a shard's mapped side table, from its side table (rows in annoy-id
    order, sorted by reference as a shard is)."""
    refs_key = side["ref_sha256"].astype(str) + "\x1f" + side["customer_id"].astype(str) + "\x1f" + side["image_id"].astype(str)
    ref_codes, _ = pd.factorize(refs_key, sort=False)
    firsts = side.iloc[np.unique(ref_codes, return_index=True)[1]]
    window_codes, window_names = pd.factorize(side["window"].astype(str), sort=True)
    ref_columns = {c: _fixed_width(firsts[c]) for c in ("customer_id", "image_id", "ref_sha256")}
    refs = np.empty(len(firsts), dtype=[(c, values.dtype) for c, values in ref_columns.items()])
    for c, values in ref_columns.items():
        refs[c] = values
    rows = np.empty(len(side), dtype=ROW_FIELDS)
    rows["ref"] = ref_codes
    rows["window"] = window_codes
    rows["mirrored"] = side["mirrored"].to_numpy(bool)
    for c in ("x0", "y0", "x1", "y1"):
        rows[c] = side[c].to_numpy(np.float64)
    rows["phash"] = side["phash"].to_numpy(np.int64)
    return {".rows.npy": rows, ".refs.npy": refs, ".windows.npy": _fixed_width(pd.Series(window_names))}


def write_mapped_side(side: pd.DataFrame, shards_dir: Path, sid: str) -> None:
    for suffix, array in mapped_side_arrays(side).items():
        tmp = shards_dir / f".{sid}.{uuid.uuid4().hex}{suffix}"
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, shards_dir / f"{sid}{suffix}")


def ensure_mapped_side(shards_dir: Path, sid: str) -> None:
    """Give a shard written before the mapped side files existed its files (from its Parquet)."""
    if not all((shards_dir / f"{sid}{suffix}").exists() for suffix in MAPPED_SUFFIXES):
        write_mapped_side(pq.read_table(shards_dir / f"{sid}.parquet").to_pandas(), shards_dir, sid)


# Annoy's hamming node: int32 n_descendants, int32 children[2], then uint64 v[] aligned to 8, so
# bytes 12-15 of every node are padding. Annoy fills split nodes on the stack and copies them,
# padding included: whatever the stack held ends up in the file. Nothing reads those bytes;
# zeroing them makes the same entries give the same file.
_NODE_BYTES = 16 + 8 * ((HASH_BITS + 63) // 64)
_PADDING = slice(12, 16)


def _zero_node_padding(path: Path) -> None:
    data = np.fromfile(path, dtype=np.uint8)
    if data.size % _NODE_BYTES:
        raise ValueError(f"{path}: {data.size} bytes is not a whole number of {_NODE_BYTES}-byte Annoy nodes")
    nodes = data.reshape(-1, _NODE_BYTES)
    nodes[:, _PADDING] = 0
    nodes.tofile(path)


def current_version(index_dir: Path) -> str | None:
    p = Path(index_dir) / "CURRENT"
    return p.read_text().strip() if p.exists() else None


def current_shards(index_dir: Path, version: str | None = None) -> list[str]:
    version = version or current_version(index_dir)
    if not version:
        return []
    return list(json.loads((Path(index_dir) / "versions" / f"{version}.json").read_text())["shards"])


def index_file_hashes(index_dir: Path, version: str) -> dict[str, str]:
    """sha256 of every file an index version consists of (its version file and its shards),
    keyed by path relative to ``index_dir``: what a run's manifest records, for audit to check."""
    index_dir = Path(index_dir)
    files = [f"versions/{version}.json"] + [f"shards/{sid}{suffix}" for sid in current_shards(index_dir, version)
                                              for suffix in (".ann", ".parquet", *MAPPED_SUFFIXES)]
    return {rel: sha256_file(index_dir / rel) for rel in files if (index_dir / rel).exists()}


class IndexNotUsable(ValueError):
    """A folder that is not an index this code can search, with what to do about it."""


def check_index(index_dir: Path) -> str:
    """The current version of the index in ``index_dir``, or IndexNotUsable saying why there is none.

    Cheap (a few small files), so callers check before the expensive work a search needs."""
    index_dir = Path(index_dir)
    build_hint = "build one with 'copyhunt index build --images DIR --out INDEX_DIR' (or the customer_index DAG)"
    version = current_version(index_dir)
    if version is None:
        raise IndexNotUsable(f"{index_dir} is not a copyhunt index (it has no CURRENT file); {build_hint}")
    manifest = index_dir / "versions" / f"{version}.json"
    try:
        described = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise IndexNotUsable(f"{index_dir}: index version {version} cannot be read ({manifest}: {exc}); {build_hint}") from None
    built_with = described.get("fingerprint_version", 1)
    if built_with != FINGERPRINT_VERSION:
        raise IndexNotUsable(f"index version {version} in {index_dir} holds fingerprint version {built_with} hashes; this code makes "
                             f"version {FINGERPRINT_VERSION}: rebuild the index (copyhunt index build, or the customer_index DAG)")
    missing = [sid for sid in described.get("shards", []) for suffix in (".ann", ".parquet")
               if not (index_dir / "shards" / f"{sid}{suffix}").exists()]
    if missing:
        raise IndexNotUsable(f"{index_dir}: index version {version} lacks {len(missing)} shard file(s), e.g. shard {missing[0]}; {build_hint}")
    return version


class MappedSide:
    """A shard's side table as the searcher reads it: the ``.npy`` files memory-mapped (or, for a
    shard written before they existed, the same arrays made from its Parquet in memory). Rows are
    read only where a lookup lands, so a worker's memory does not hold the whole table."""

    def __init__(self, shards_dir: Path, sid: str):
        paths = {suffix: shards_dir / f"{sid}{suffix}" for suffix in MAPPED_SUFFIXES}
        if all(p.exists() for p in paths.values()):
            arrays = {suffix: np.load(p, mmap_mode="r", allow_pickle=False) for suffix, p in paths.items()}
        else:
            arrays = mapped_side_arrays(pq.read_table(shards_dir / f"{sid}.parquet").to_pandas())
        self.rows, self.refs, self.windows = arrays[".rows.npy"], arrays[".refs.npy"], arrays[".windows.npy"]
        self.ref_codes = self.rows["ref"]  # a view: still mapped

    def __len__(self) -> int:
        return len(self.rows)

    def columns(self, annoy_ids: np.ndarray) -> dict[str, np.ndarray]:
        """The entry columns of rows ``annoy_ids`` (strings decoded)."""
        rows = self.rows[np.asarray(annoy_ids, dtype=np.int64)]
        refs = self.refs[rows["ref"]]
        out = {c: np.char.decode(refs[c], "utf-8").astype(object) for c in ("customer_id", "image_id", "ref_sha256")}
        out["window"] = np.char.decode(self.windows[rows["window"]], "utf-8").astype(object)
        for c in ("mirrored", "x0", "y0", "x1", "y1", "phash"):
            out[c] = np.array(rows[c])
        return {c: out[c] for c in ENTRY_COLUMNS}


class ShardSearcher:
    """Memory-maps every shard of one index version; query with int64 hashes."""

    def __init__(self, index_dir: Path, version: str | None = None, search_k: int | None = None):
        self.index_dir = Path(index_dir)
        if version is None:
            version = check_index(self.index_dir)
        self.version = version
        self.search_k = search_k
        built_with = json.loads((self.index_dir / "versions" / f"{self.version}.json").read_text()).get("fingerprint_version", 1)
        if built_with != FINGERPRINT_VERSION:
            raise IndexNotUsable(f"index version {self.version} in {self.index_dir} holds fingerprint version {built_with} hashes; this code makes "
                                 f"version {FINGERPRINT_VERSION}: rebuild the index (copyhunt index build, or the customer_index DAG)")
        self.shards: list[tuple[str, AnnoyIndex, MappedSide]] = []
        for sid in current_shards(self.index_dir, self.version):
            ann = AnnoyIndex(HASH_BITS, "hamming")
            ann.load(str(self.index_dir / "shards" / f"{sid}.ann"))  # mmap: pages shared by processes
            self.shards.append((sid, ann, MappedSide(self.index_dir / "shards", sid)))
        self._side = {sid: side for sid, _, side in self.shards}

    def image_entries(self, shard: str, annoy_id: int) -> dict[str, np.ndarray]:
        """Every entry of the reference image that entry ``annoy_id`` of ``shard`` belongs to.

        A shard's entries are sorted by image, so they are the rows around it with the same
        reference code (a reference has a few dozen entries)."""
        side = self._side[shard]
        refs = side.ref_codes
        ref = refs[annoy_id]
        start, stop = annoy_id, annoy_id + 1
        while start > 0 and refs[start - 1] == ref:
            start -= 1
        while stop < len(refs) and refs[stop] == ref:
            stop += 1
        return side.columns(np.arange(start, stop))

    def query(self, hashes: Sequence[int], k: int, max_distance: int) -> pd.DataFrame:
        """Nearest reference windows within ``max_distance`` bits of each hash.

        Returns one row per (query_row, reference window) with the side-table columns.
        """
        bits = annoy_vectors(np.asarray(hashes, dtype=np.int64))
        search_k = self.search_k or SEARCH_K
        columns: dict[str, list] = {"query_row": [], "shard": [], "distance": [], **{c: [] for c in ["annoy_id", *ENTRY_COLUMNS]}}
        for sid, ann, side in self.shards:
            rows, ids, dists = [], [], []
            for qi, vec in enumerate(bits):
                found, found_d = ann.get_nns_by_vector(vec, k, search_k=search_k, include_distances=True)
                for aid, d in zip(found, found_d):
                    if d <= max_distance:
                        rows.append(qi)
                        ids.append(aid)
                        dists.append(int(d))
            if rows:
                take = np.asarray(ids, dtype=np.int64)
                columns["query_row"].append(np.asarray(rows, dtype=np.int64))
                columns["shard"].append(np.full(len(rows), sid, dtype=object))
                columns["distance"].append(np.asarray(dists, dtype=np.int64))
                columns["annoy_id"].append(take)
                for c, values in side.columns(take).items():
                    columns[c].append(values)
        if not columns["query_row"]:
            return pd.DataFrame(columns=["query_row", "shard", "distance", "annoy_id", *ENTRY_COLUMNS])
        return pd.DataFrame({c: np.concatenate(v) for c, v in columns.items()})
