"""Typed configuration, read in one place.

Settings come from (lowest to highest precedence):
  1. built-in defaults, which run everything on one machine (SQLite, local lake, Spark local[*],
     e-mails written as .eml files);
  2. an optional TOML file named by ``COPYHUNT_CONFIG`` (keys are the field names below);
  3. environment variables ``COPYHUNT_<FIELD>`` (upper case).

Production is configuration, not code: point ``hits_db_url`` at PostgreSQL, ``spark_master`` at a
cluster and ``smtp_host`` at a mail relay. Relative paths are resolved against ``home``
(``COPYHUNT_HOME``, default: the current directory), so Airflow workers and the CLI agree.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "COPYHUNT_"


class ConfigError(ValueError):
    """A setting is missing, of the wrong type, or the config file cannot be read."""


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=Path.cwd)
    lake_root: Path = Path("data/lake")
    hits_db_url: str = ""  # empty: SQLite file data/copyhunt.db under home
    spark_master: str = "local[*]"
    # Mail: with no smtp_host, digests are written as .eml files into outbox_dir.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    mail_from: str = "copyhunt <digest@copyhunt.invalid>"
    outbox_dir: Path = Path("data/outbox")
    inbox_url: str = "http://127.0.0.1:8000"
    # Crawl
    seeds_file: Path = Path("data/demo-web/seeds.txt")
    customers_file: Path = Path("demo/customers.toml")
    # Off by default: a crawler that reaches loopback or private addresses is an SSRF tool.
    crawl_allow_private: bool = False
    # HTTP proxy for the crawler; the demo web is reached through one so URLs keep real host names.
    crawl_proxy: str = ""
    crawl_max_pages_per_domain: int = 500
    crawl_depth_limit: int = 8
    crawl_timeout_seconds: float = 20.0
    crawl_max_image_bytes: int = 20 * 1024 * 1024
    # Politeness toward other people's servers; the demo lifts it for its own loopback web.
    crawl_download_delay: float = 0.5
    crawl_autothrottle: bool = True
    crawl_concurrency_per_domain: int = 2
    # Hosts (comma-separated; subdomains included) crawled by the marketplace spider, which walks
    # listing pagination and records sellers. A seeds-file line "marketplace URL" does the same.
    crawl_marketplace_hosts: str = ""
    # Images are downloaded by a second crawler process (Scrapy is single-threaded, so this uses a
    # second core); 0 downloads them in the page crawler's process. Politeness budgets per host
    # are shared between the two.
    crawl_image_processes: int = 1
    # Images above this many pixels are refused before decoding (decompression-bomb guard).
    max_image_pixels: int = 64_000_000
    # Uploads (copyhunt.registry): a file is refused past this size while its bytes arrive, and a
    # customer holds at most this many images that are not withdrawn.
    max_upload_bytes: int = 50_000_000
    customer_image_quota: int = 10_000
    # Import from my website (copyhunt.site_import): the crawl of a customer's own site is bounded
    # tighter than the daily crawl, because a person waits for it.
    import_max_pages: int = 50
    import_timeout_seconds: float = 120.0
    # Index: window entries per Annoy shard (~40 per reference). Every query window is looked up
    # in every shard, so shards are large: 4M entries is ~100k references.
    shard_size: int = 4_000_000
    # Incremental builds add a small shard each; once a version has more small shards (under half
    # of shard_size) than this, the build compacts them into full ones.
    index_max_small_shards: int = 8
    # Ed25519 private key that signs the run manifests (PEM, 0600). Kept outside the lake: whoever
    # can rewrite the lake must not be able to re-sign it. The public keys that verify manifests
    # (old ones kept after a rotation) are the *.pub files beside it.
    manifest_key_file: Path = Path("data/keys/manifest-signing.key")
    # Demo web
    demo_web_host: str = "127.0.0.1"
    demo_web_port: int = 8899

    # ---- derived locations -------------------------------------------------------------------
    def resolve(self, p: Path | str) -> Path:
        p = Path(p)
        return p if p.is_absolute() else (self.home / p)

    @property
    def lake(self) -> Path:
        return self.resolve(self.lake_root)

    @property
    def blob_root(self) -> Path:
        return self.lake / "_blobs"

    @property
    def index_root(self) -> Path:
        return self.lake / "index"

    @property
    def manifest_key_path(self) -> Path:
        return self.resolve(self.manifest_key_file)

    @property
    def outbox(self) -> Path:
        return self.resolve(self.outbox_dir)

    @property
    def database_url(self) -> str:
        if self.hits_db_url:
            return self.hits_db_url
        return f"sqlite:///{self.resolve('data/copyhunt.db')}"

    @property
    def seeds_path(self) -> Path:
        return self.resolve(self.seeds_file)

    @property
    def customers_path(self) -> Path:
        return self.resolve(self.customers_file)

    def as_env(self) -> dict[str, str]:
        """The settings as COPYHUNT_* variables, to hand to a subprocess (crawl, spark-submit)."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            out[ENV_PREFIX + f.name.upper()] = text
        return out

    def fingerprint(self) -> dict[str, Any]:
        """Settings that change results (not secrets, not locations), for run manifests."""
        keep = ("shard_size", "max_image_pixels", "crawl_max_pages_per_domain", "crawl_depth_limit")
        return {k: getattr(self, k) for k in keep}


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _coerce(name: str, target: Any, raw: Any) -> Any:
    """Turn a raw value (env string or TOML value) into the field's type, or raise ConfigError."""
    try:
        if target is bool or target == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if target is int or target == "int":
            if isinstance(raw, bool):
                raise ValueError("expected an integer, got a boolean")
            return int(str(raw).replace("_", ""))
        if target is float or target == "float":
            return float(raw)
        if target in (Path, "Path"):
            if not str(raw).strip():
                raise ValueError("empty path")
            return Path(str(raw))
        if not isinstance(raw, (str, int, float)):
            raise ValueError(f"expected text, got {type(raw).__name__}")
        return str(raw)
    except ValueError as exc:
        raise ConfigError(f"setting {name!r}: {exc}") from None


def load_settings(env: Mapping[str, str] | None = None, config_file: str | Path | None = None) -> Settings:
    """Build Settings from defaults, an optional TOML file, and COPYHUNT_* variables."""
    env = os.environ if env is None else env
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}

    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        section = data.get("copyhunt", data)
        if not isinstance(section, dict):
            raise ConfigError(f"config file {path}: 'copyhunt' must be a table of settings")
        unknown = sorted(set(section) - set(fields))
        if unknown:
            raise ConfigError(f"config file {path}: unknown settings {', '.join(unknown)}")
        for key, raw in section.items():
            values[key] = _coerce(key, fields[key].type, raw)

    for key, f in fields.items():
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None:
            values[key] = _coerce(key, f.type, raw)

    settings = Settings(**values)
    for name in ("shard_size", "max_upload_bytes", "customer_image_quota", "index_max_small_shards", "import_max_pages",
                 "import_timeout_seconds"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"setting '{name}': must be at least 1")
    if not (0 < settings.demo_web_port < 65536) or not (0 < settings.smtp_port < 65536):
        raise ConfigError("ports must be between 1 and 65535")
    return settings
