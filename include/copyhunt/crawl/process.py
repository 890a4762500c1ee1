"""Subprocess entry point: run one crawl and write its tables.

    python -m copyhunt.crawl.process --seed URL [--seed URL ...] [--seeds-file FILE] --out DIR \
        [--max-pages N] [--allow-private | --no-allow-private] [--timeout SECONDS] \
        [--log-file FILE] [-s SCRAPY_SETTING=JSON_VALUE ...]

Configuration comes from ``copyhunt.config.load_settings()`` (COPYHUNT_* variables; the runner
passes its Settings that way). Twisted's reactor cannot be restarted, so every crawl gets a
fresh Python process; use :func:`copyhunt.crawl.runner.run_crawl` rather than calling this
in-process.

Exit status: 0 when the output tables were written, even if pages or images failed (they are in
errors.parquet); 1 when the crawl could not run; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SUMMARY_FILE = "crawl.json"
# Only settings.crawl_proxy may route traffic: the safety rules depend on knowing whether a proxy
# is in play, so inherited proxy variables are dropped.
PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")

log = logging.getLogger("copyhunt.crawl.process")


def read_seeds_file(path: Path) -> list[str]:
    """One URL per line; blank lines and ``#`` comments ignored."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m copyhunt.crawl.process", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", action="append", default=[], help="start URL (repeatable)")
    p.add_argument("--seeds-file", type=Path, help="file of start URLs, one per line")
    p.add_argument("--out", type=Path, required=True, help="output directory for the tables")
    p.add_argument("--max-pages", type=int, help="page budget per domain (default: settings)")
    p.add_argument("--allow-private", action=argparse.BooleanOptionalAction, default=None, help="allow private/loopback hosts (default: settings)")
    p.add_argument("--timeout", type=float, help="close the crawl gracefully after about this many seconds")
    p.add_argument("--log-file", type=Path, help="Scrapy log file (default: stderr)")
    p.add_argument("-s", "--set", dest="overrides", action="append", type=_setting, default=[], help="Scrapy setting KEY=VALUE (VALUE as JSON if it parses)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Heavy imports after argument parsing, so --help and usage errors are instant.
    from scrapy.crawler import AsyncCrawlerProcess

    from copyhunt.config import ConfigError, load_settings
    from copyhunt.lake import atomic_write_json
    from copyhunt.crawl.outputs import TABLES, outputs_complete, remove_outputs, row_count
    from copyhunt.crawl.settings import build_settings
    from copyhunt.crawl.spiders.site import SiteSpider

    try:
        cfg = load_settings()
        seeds = list(args.seed) + (read_seeds_file(args.seeds_file) if args.seeds_file else [])
    except (ConfigError, OSError) as exc:
        print(f"copyhunt crawl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not seeds:
        print("copyhunt crawl: no seeds given (--seed or --seeds-file)", file=sys.stderr)
        return EXIT_USAGE
    if args.max_pages is not None and args.max_pages < 1:
        print("copyhunt crawl: --max-pages must be at least 1", file=sys.stderr)
        return EXIT_USAGE

    out_dir: Path = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_outputs(out_dir)
    (out_dir / SUMMARY_FILE).unlink(missing_ok=True)
    for name in PROXY_ENV:
        os.environ.pop(name, None)

    overrides = dict(args.overrides)
    if args.log_file:
        overrides.setdefault("LOG_FILE", str(args.log_file))
        overrides.setdefault("LOG_FILE_APPEND", False)  # one log per run, like the tables
    settings = build_settings(cfg, out_dir, max_pages=args.max_pages, allow_private=args.allow_private, timeout_s=args.timeout, overrides=overrides)

    started = time.time()
    process = AsyncCrawlerProcess(settings)
    crawler = process.create_crawler(SiteSpider)
    process.crawl(crawler, seeds=seeds)
    process.start()

    if not outputs_complete(out_dir):
        print(f"copyhunt crawl: the crawl did not complete; no output tables in {out_dir}", file=sys.stderr)
        return EXIT_FAILED
    stats = crawler.stats.get_stats() if crawler.stats else {}
    summary = {
        "seeds": seeds,
        "finish_reason": stats.get("finish_reason"),
        "duration_s": round(time.time() - started, 3),
        "counts": {name: row_count(out_dir, name) for name in TABLES},
        "requests": stats.get("downloader/request_count", 0),
        "dropped": {k.rsplit("/", 1)[-1]: v for k, v in sorted(stats.items()) if k.startswith("copyhunt/dropped/")},
    }
    atomic_write_json(out_dir / SUMMARY_FILE, summary)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
