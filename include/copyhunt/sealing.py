"""Tamper-evident run manifests: a hash chain across run dates and an ed25519 signature.

``seal_manifest(lake, run_date, key_path)`` adds two entries to a run date's manifest:

    "chain":     {"previous_run_date": "YYYY-MM-DD" | null, "previous_sha256": sha256 of that manifest file | null}
    "signature": {"key_id": "<16 hex>", "ed25519": "<hex>"}   over the canonical JSON of everything else

"Previous" is the nearest earlier run date that had a manifest when the day was first sealed; the
date is kept when the day is sealed again (each stage seals on finishing), and the sha256 is that
manifest's at sealing time. A backfill of an earlier date, written after later days, therefore
links to its own nearest earlier date and leaves the later days' links alone: the chain is a
tree over run dates, each link naming its parent by date and sha256, so ``check_seal`` can check
every link. Deleting or rewriting a day's manifest breaks the link of the day sealed after it.
A legitimate re-run of an earlier day replaces its manifest; the sealed one it replaces is kept
(``_manifests/_superseded/run_date=D/<sha256>.json``), so a later day's link still checks out
against a signed manifest, while a forged one (unsigned, or not signed by a known key) does not.

The private key (PEM, 0600) lives outside the lake at ``Settings.manifest_key_file``; the public
keys that verify signatures are the ``<key_id>.pub`` files beside it (old ones are kept after a
rotation, so old manifests still verify). Called from ``audit.record_run_facts`` (the end of every
stage) and checked by ``audit.verify_run``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from copyhunt.lake import Lake, atomic_write_bytes, atomic_write_json, parse_run_date, sha256_file


def canonical_bytes(manifest: dict[str, Any]) -> bytes:
    """What the signature covers: the manifest without its signature, as canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def create_key(path: Path, replace: bool = False) -> str:
    """Make a signing key at ``path`` (0600, its directory 0700) and its ``<key_id>.pub`` beside
    it; returns the key id. ``replace`` rotates: the old private key goes, its .pub stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    if path.exists() and not replace:
        tmp.unlink()
        raise FileExistsError(f"{path} exists; pass replace to rotate the key")
    kid = key_id(key.public_key())
    atomic_write_bytes(path.parent / f"{kid}.pub", _public_pem(key.public_key()))
    os.replace(tmp, path)
    return kid


def ensure_key(path: Path) -> str:
    """The key id of the signing key at ``path``, made first if missing (the demo calls this)."""
    path = Path(path)
    if not path.exists():
        return create_key(path)
    key = _load_private(path)
    kid = key_id(key.public_key())
    pub = path.parent / f"{kid}.pub"
    if not pub.exists():
        atomic_write_bytes(pub, _public_pem(key.public_key()))
    return kid


def _load_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an ed25519 private key")
    return key


def public_keys(key_dir: Path) -> dict[str, Ed25519PublicKey]:
    """key id -> public key, from the ``*.pub`` files in ``key_dir``."""
    out: dict[str, Ed25519PublicKey] = {}
    for p in sorted(Path(key_dir).glob("*.pub")):
        try:
            public = serialization.load_pem_public_key(p.read_bytes())
        except ValueError:
            continue  # not a key: check_seal reports the signatures it cannot verify
        if isinstance(public, Ed25519PublicKey):
            out[key_id(public)] = public
    return out


def _previous_run_date(lake: Lake, run_date: dt.date) -> dt.date | None:
    root = lake.root / "_manifests"
    dates = sorted(parse_run_date(p.name.split("=", 1)[1]) for p in root.glob("run_date=*") if (p / "manifest.json").exists()) if root.exists() else []
    earlier = [d for d in dates if d < run_date]
    return earlier[-1] if earlier else None


def seal_manifest(lake: Lake, run_date: dt.date, key_path: Path) -> Path:
    """Link the run date's manifest to the previous one and sign it (unsigned when there is no
    key at ``key_path``: ``check_seal`` then reports it). Deterministic: ed25519 signatures are,
    so sealing an unchanged manifest again writes the same bytes."""
    run_date = parse_run_date(run_date)
    path = lake.manifest_path(run_date)
    manifest = lake.read_manifest(run_date)
    if not manifest:
        raise FileNotFoundError(f"no manifest for run date {run_date} in {lake.root}")
    kept = manifest.get("chain", {}).get("previous_run_date")
    previous = parse_run_date(kept) if kept else _previous_run_date(lake, run_date)
    previous_path = lake.manifest_path(previous) if previous else None
    manifest["chain"] = {
        "previous_run_date": previous.isoformat() if previous else None,
        "previous_sha256": sha256_file(previous_path) if previous_path is not None and previous_path.exists() else None,
    }
    manifest.pop("signature", None)
    if Path(key_path).exists():
        key = _load_private(Path(key_path))
        manifest["signature"] = {"key_id": key_id(key.public_key()), "ed25519": key.sign(canonical_bytes(manifest)).hex()}
    atomic_write_json(path, manifest)
    return path


def _signature_ok(manifest: dict[str, Any], keys: dict[str, Ed25519PublicKey]) -> bool:
    signature = manifest.get("signature") or {}
    try:
        keys[signature["key_id"]].verify(bytes.fromhex(signature.get("ed25519", "")), canonical_bytes(manifest))
        return True
    except (KeyError, InvalidSignature, ValueError):
        return False


def check_seal(lake: Lake, run_date: dt.date, key_dir: Path) -> list[tuple[str, str]]:
    """(check, problem or "ok") for the manifest's signature and its chain link."""
    manifest = lake.read_manifest(run_date)
    out: list[tuple[str, str]] = []
    signature = manifest.get("signature")
    keys = public_keys(key_dir)
    if not signature:
        out.append(("signature", "the manifest is not signed"))
    elif signature.get("key_id") not in keys:
        out.append(("signature", f"signed by key id {signature.get('key_id')!r}, which has no public key in {key_dir}"))
    else:
        try:
            keys[signature["key_id"]].verify(bytes.fromhex(signature.get("ed25519", "")), canonical_bytes(manifest))
            out.append(("signature", "ok"))
        except (InvalidSignature, ValueError):
            out.append(("signature", f"does not verify with key {signature['key_id']}: the manifest was changed after signing"))
    chain = manifest.get("chain")
    if chain is None:
        out.append(("chain", "the manifest has no chain link"))
    elif chain.get("previous_run_date") is None:
        out.append(("chain", "ok (first run date when sealed)"))
    else:
        prev_path = lake.manifest_path(chain["previous_run_date"])
        actual = sha256_file(prev_path) if prev_path.exists() else None
        if actual is None:
            out.append(("chain", f"the previous manifest ({chain['previous_run_date']}) is missing"))
        elif actual != chain.get("previous_sha256"):
            kept = lake.superseded_manifest(chain["previous_run_date"], chain.get("previous_sha256") or "")
            if kept is not None and _signature_ok(json.loads(kept.read_text()), keys):
                out.append(("chain", f"ok (previous {chain['previous_run_date']}, re-run since; the manifest linked is kept in {kept.parent})"))
            else:
                out.append(("chain", f"{prev_path}: expected sha256 {chain.get('previous_sha256')}, actual sha256 {actual}"))
        else:
            out.append(("chain", f"ok (previous {chain['previous_run_date']})"))
    return out
