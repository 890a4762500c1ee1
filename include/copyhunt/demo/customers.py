"""Demo customers: who registered which images, and which licences they granted.

load_customers() reads ``demo/customers.toml`` into frozen dataclasses and fails with a ValueError
that names the customer, image or licence at fault, so a typo in the file is found at load time
and not as a confusing miss three stages later. The file format:

    [[customer]]
    id = "alpine-lens"          # stable, unique
    name = "Alpine Lens Agency"
    email = "rights@alpine-lens.example"
    images = [ { id = "alp-adac-hq", path = "assets/images/...", title = "..." }, ... ]

    [[customer.licence]]         # zero or more
    id = "lic-..."
    licensee_domain = "daily-courier.test"   # this host and its subdomains, and/or:
    licensee_operator = "Courier Media Group Ltd."  # optional: whoever operates the page (enrichment)
    image_ids = ["*"]            # "*": every image of this customer
    valid_from = "2026-01-01"    # inclusive; a TOML date or an ISO string
    valid_to = "2027-12-31"      # inclusive

    [customer.rate_card]         # optional: this customer's contract terms, merged over
    missing_attribution_surcharge_percent = 50   # copyhunt/ratecard.yaml and validated by pricing

Image paths are relative to the repository root (or absolute). Image ids are unique per customer.
A relative path is looked up under the ``repo_root`` the caller passes and, failing that, under this
checkout's repository root (repo_root()), so a caller that passes its working directory (e.g.
``COPYHUNT_HOME``) still finds the images shipped in the repository.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ALL_IMAGES = "*"

_CUSTOMER_KEYS = {"id", "name", "email", "images", "licence", "rate_card"}
_IMAGE_KEYS = {"id", "path", "title"}
_LICENCE_KEYS = {"id", "licensee_domain", "licensee_operator", "image_ids", "valid_from", "valid_to"}
_LICENCE_REQUIRED = {"id", "image_ids", "valid_from", "valid_to"}  # and a licensee_domain or licensee_operator


@dataclass(frozen=True)
class RegisteredImage:
    customer_id: str
    image_id: str
    path: Path  # absolute
    title: str


@dataclass(frozen=True)
class LicenceTerms:
    id: str
    customer_id: str
    licensee_domain: str  # "" when the licence names only an operator
    image_ids: tuple[str, ...]  # may be ("*",): every image of the customer
    valid_from: dt.date  # inclusive
    valid_to: dt.date  # inclusive
    licensee_operator: str | None = None  # the licensee by name (pricing.check_licences matches it)

    def applies_to(self, image_id: str, domain: str, day: dt.date) -> bool:
        """True if this licence allows ``domain`` (or a subdomain of it) to show the image on ``day``."""
        domain = domain.lower().rstrip(".")
        domain_ok = bool(self.licensee_domain) and (domain == self.licensee_domain or domain.endswith("." + self.licensee_domain))
        image_ok = ALL_IMAGES in self.image_ids or image_id in self.image_ids
        return domain_ok and image_ok and self.valid_from <= day <= self.valid_to


@dataclass(frozen=True)
class CustomerRecord:
    id: str
    name: str
    email: str
    images: tuple[RegisteredImage, ...]
    licences: tuple[LicenceTerms, ...]
    rate_card: dict[str, Any] | None = field(default=None, hash=False)  # overrides, validated by pricing

    def image(self, image_id: str) -> RegisteredImage:
        for img in self.images:
            if img.image_id == image_id:
                return img
        raise KeyError(f"customer {self.id!r} has no image {image_id!r}")


def repo_root() -> Path:
    """The repository root (include/copyhunt/demo/customers.py is three levels below it)."""
    return Path(__file__).resolve().parents[3]


def load_customers(path: Path, repo_root: Path) -> list[CustomerRecord]:
    """Parse and validate the customers file; raise ValueError naming the first problem found."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"customers file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"customers file {path} is not valid TOML: {exc}") from None

    unknown_top = sorted(set(data) - {"customer"})
    if unknown_top:
        raise ValueError(f"{path}: unknown top-level keys {', '.join(unknown_top)} (expected [[customer]])")
    raw_customers = data.get("customer")
    if not isinstance(raw_customers, list) or not raw_customers:
        raise ValueError(f"{path}: no [[customer]] entries")

    customers: list[CustomerRecord] = []
    seen_ids: set[str] = set()
    for n, raw in enumerate(raw_customers, start=1):
        where = f"{path}: customer #{n}"
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: must be a table")
        cid = _text(raw, "id", where)
        where = f"{path}: customer {cid!r}"
        _check_keys(raw, _CUSTOMER_KEYS, {"id", "name", "email", "images"}, where)
        if cid in seen_ids:
            raise ValueError(f"{where}: duplicate customer id")
        seen_ids.add(cid)
        email = _text(raw, "email", where)
        if "@" not in email:
            raise ValueError(f"{where}: email {email!r} is not an e-mail address")
        images = _images(raw["images"], cid, where, Path(repo_root))
        licences = _licences(raw.get("licence", []), cid, {i.image_id for i in images}, where)
        rate_card = raw.get("rate_card")
        if rate_card is not None and not isinstance(rate_card, dict):
            raise ValueError(f"{where}: 'rate_card' must be a table of rate card overrides")
        customers.append(CustomerRecord(cid, _text(raw, "name", where), email, images, licences, rate_card))
    return customers


def _images(raw: Any, cid: str, where: str, root: Path) -> tuple[RegisteredImage, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}: 'images' must be a non-empty list")
    out: list[RegisteredImage] = []
    for image_id, here, item in _tables(raw, "image", _IMAGE_KEYS, _IMAGE_KEYS, where):
        rel = Path(_text(item, "path", here))
        tried = [rel] if rel.is_absolute() else list(dict.fromkeys([root / rel, repo_root() / rel]))
        full = next((p.resolve() for p in tried if p.is_file()), None)
        if full is None:
            raise ValueError(f"{here}: image file {rel} does not exist (looked in {', '.join(map(str, tried))})")
        out.append(RegisteredImage(cid, image_id, full, _text(item, "title", here)))
    return tuple(out)


def _licences(raw: Any, cid: str, image_ids: set[str], where: str) -> tuple[LicenceTerms, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"{where}: 'licence' must be a list of [[customer.licence]] tables")
    out: list[LicenceTerms] = []
    for lid, here, item in _tables(raw, "licence", _LICENCE_KEYS, _LICENCE_REQUIRED, where):
        if "licensee_domain" not in item and "licensee_operator" not in item:
            raise ValueError(f"{here}: missing key licensee_domain or licensee_operator")
        domain = _text(item, "licensee_domain", here).lower().rstrip(".") if "licensee_domain" in item else ""
        operator = _text(item, "licensee_operator", here) if "licensee_operator" in item else None
        if "/" in domain or ":" in domain or " " in domain:
            raise ValueError(f"{here}: licensee_domain must be a bare host name, got {domain!r}")
        ids = item["image_ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            raise ValueError(f"{here}: 'image_ids' must be a non-empty list of image ids or [\"*\"]")
        unknown = sorted(set(ids) - image_ids - {ALL_IMAGES})
        if unknown:
            raise ValueError(f"{here}: unknown image ids {', '.join(unknown)}")
        valid_from = _date(item, "valid_from", here)
        valid_to = _date(item, "valid_to", here)
        if valid_to < valid_from:
            raise ValueError(f"{here}: valid_to {valid_to} is before valid_from {valid_from}")
        out.append(LicenceTerms(lid, cid, domain, tuple(ids), valid_from, valid_to, operator))
    return tuple(out)


def _tables(raw: list[Any], kind: str, allowed: set[str], required: set[str],
            where: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Each table of a ``[[...]]`` list as (id, where-in-the-file, table), checked for its keys.

    Rejects entries that are not tables, lack an id, have unknown or missing keys, or repeat an id.
    """
    seen: set[str] = set()
    for n, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            raise ValueError(f"{where}: {kind} #{n} must be a table")
        item_id = _text(item, "id", f"{where}, {kind} #{n}")
        here = f"{where}, {kind} {item_id!r}"
        _check_keys(item, allowed, required, here)
        if item_id in seen:
            raise ValueError(f"{here}: duplicate {kind} id")
        seen.add(item_id)
        yield item_id, here, item


def _check_keys(raw: dict[str, Any], allowed: set[str], required: set[str], where: str) -> None:
    missing = sorted(required - set(raw))
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
    # Unknown keys are rejected because they are nearly always typos ("licences", "valid_until").
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _text(raw: dict[str, Any], key: str, where: str) -> str:
    if key not in raw:
        raise ValueError(f"{where}: missing key {key!r}")
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key!r} must be non-empty text, got {value!r}")
    return value.strip()


def _date(raw: dict[str, Any], key: str, where: str) -> dt.date:
    value = raw[key]
    if isinstance(value, dt.datetime):
        raise ValueError(f"{where}: {key!r} must be a date (YYYY-MM-DD), got a date-time {value}")
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"{where}: {key!r} must be a date like 2026-01-31, got {value!r}") from None
