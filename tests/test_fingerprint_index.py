"""Fingerprints and the Annoy shard index, checked against a brute-force oracle."""

import io
import random

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from conftest import CUSTOMER_IMAGES, UNRELATED_IMAGES
from copyhunt.fingerprint import hamming, int64_to_bits, bits_to_int64, query_hashes, reference_hashes
from copyhunt.imaging import load_normalised
from copyhunt.index import ENTRY_COLUMNS, ShardSearcher, build_index, current_shards


def norm(im):
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=85)
    return load_normalised(buf.getvalue())


def best_distance(query_img, ref_img):
    q, r = query_hashes(query_img), reference_hashes(ref_img)
    return min(hamming(a.phash, b.phash) for a in q for b in r)


def test_bits_round_trip():
    rng = random.Random(1)
    for _ in range(100):
        v = rng.getrandbits(64) - (1 << 63)
        assert bits_to_int64(int64_to_bits(v)) == v


def test_copies_are_close_and_unrelated_photos_are_far():
    src = Image.open(CUSTOMER_IMAGES[0]).convert("RGB")
    w, h = src.size
    ref = norm(src)
    copies = {
        "mirror": ImageOps.mirror(src),
        "crop70": src.crop((int(w * 0.08), int(h * 0.08), int(w * 0.92), int(h * 0.92))),
        "grayscale": ImageOps.grayscale(src),
        "padded": ImageOps.expand(src, border=40, fill="black"),
        "scaled": src.resize((w * 2, h * 2)),
    }
    for name, im in copies.items():
        assert best_distance(norm(im), ref) <= 8, name
    for other in UNRELATED_IMAGES[:5]:
        assert best_distance(norm(Image.open(other)), ref) >= 13


def test_collage_cell_matches_whole_reference():
    a = Image.open(CUSTOMER_IMAGES[2]).convert("RGB").resize((300, 200))
    collage = Image.new("RGB", (610, 410), "white")
    for i, im in enumerate([a] + [Image.open(p).convert("RGB").resize((300, 200)) for p in UNRELATED_IMAGES[:3]]):
        collage.paste(im, (5 + 305 * (i % 2), 5 + 205 * (i // 2)))
    assert best_distance(norm(collage), norm(Image.open(CUSTOMER_IMAGES[2]))) <= 6


def hash_at_distance(rng, base, d):
    """A hash exactly d bits from base (ThreatExchange's oracle helper)."""
    bits = rng.sample(range(64), d)
    u = base & 0xFFFFFFFFFFFFFFFF
    for b in bits:
        u ^= 1 << b
    return u - (1 << 64) if u >= (1 << 63) else u


def entries_for(hashes, customer="c1"):
    return pd.DataFrame([{"customer_id": customer, "image_id": f"img{i:05d}", "ref_sha256": f"{i:064x}", "window": "full", "mirrored": False,
                          "x0": 0.0, "y0": 0.0, "x1": 1.0, "y1": 1.0, "phash": h} for i, h in enumerate(hashes)], columns=ENTRY_COLUMNS)


def test_index_agrees_with_brute_force_oracle(tmp_path):
    rng = random.Random(42)
    refs = [rng.getrandbits(64) - (1 << 63) for _ in range(3000)]
    build_index(entries_for(refs), tmp_path, shard_size=1000)
    assert len(current_shards(tmp_path)) == 3
    searcher = ShardSearcher(tmp_path)
    planted = {}
    queries = []
    for qi in range(60):
        target = rng.randrange(len(refs))
        d = rng.choice([0, 1, 4, 8, 10])
        planted[qi] = (target, d)
        queries.append(hash_at_distance(rng, refs[target], d))
    found = searcher.query(queries, k=8, max_distance=10)
    for qi, (target, d) in planted.items():
        hits = found[found["query_row"] == qi]
        assert f"img{target:05d}" in set(hits["image_id"]), (qi, d)
        oracle = {f"img{i:05d}" for i, r in enumerate(refs) if hamming(r, queries[qi]) <= 10}
        assert set(hits["image_id"]) <= oracle  # never reports something farther than the threshold
        row = hits[hits["image_id"] == f"img{target:05d}"].iloc[0]
        assert row["distance"] == d


def test_same_inputs_build_same_bytes_and_unchanged_shards_are_reused(tmp_path):
    rng = random.Random(7)
    refs = [rng.getrandbits(64) - (1 << 63) for _ in range(500)]
    first = build_index(entries_for(refs), tmp_path / "a", shard_size=200)
    other = build_index(entries_for(refs), tmp_path / "b", shard_size=200)
    for sid in first.shards:
        assert (tmp_path / "a" / "shards" / f"{sid}.ann").read_bytes() == (tmp_path / "b" / "shards" / f"{sid}.ann").read_bytes()
    again = build_index(entries_for(refs), tmp_path / "a", shard_size=200)
    assert again.built == [] and again.version == first.version
    # A new customer's images land in a new shard; the old shards are untouched.
    more = pd.concat([entries_for(refs), entries_for([rng.getrandbits(64) - (1 << 63) for _ in range(50)], customer="c2")])
    grown = build_index(more, tmp_path / "a", shard_size=200)
    assert set(first.shards) <= set(grown.shards) and len(grown.built) == 1


def test_edge_cases_empty_single_and_duplicate(tmp_path):
    empty = build_index(entries_for([]), tmp_path / "e", shard_size=10)
    assert empty.shards == []
    assert ShardSearcher(tmp_path / "e").query([0], k=5, max_distance=10).empty
    build_index(entries_for([12345]), tmp_path / "one", shard_size=10)
    res = ShardSearcher(tmp_path / "one").query([12345], k=5, max_distance=0)
    assert list(res["image_id"]) == ["img00000"]
    build_index(entries_for([777, 777]), tmp_path / "dup", shard_size=10)
    res = ShardSearcher(tmp_path / "dup").query([777], k=5, max_distance=0)
    assert sorted(res["image_id"]) == ["img00000", "img00001"]
    with pytest.raises(ValueError, match="lack columns"):
        build_index(pd.DataFrame({"phash": [1]}), tmp_path / "bad", shard_size=10)
