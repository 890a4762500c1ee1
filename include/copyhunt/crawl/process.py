"""Subprocess entry point: run one crawl and write its tables.

    python -m copyhunt.crawl.process --seed URL [--seed URL ...] [--seeds-file FILE] --out DIR \
        [--max-pages N] [--allow-private | --no-allow-private] [--timeout SECONDS] \
        [--validators FILE] [--log-file FILE] [-s SCRAPY_SETTING=JSON_VALUE ...]

Seeds are ``URL`` or ``SPIDER URL`` (see :mod:`copyhunt.crawl.seeds`): the site spider and the
marketplace spider run side by side in this one process, each on its own hosts, sharing one
:class:`copyhunt.crawl.results.CrawlRun`; the tables are written once both are done.
``--validators`` names a file from :func:`copyhunt.crawl.validators.validators_from_lake`: images
it lists are requested conditionally and a 304 reuses the stored blob.

Configuration comes from ``copyhunt.config.load_settings()`` (COPYHUNT_* variables; the runner
passes its Settings that way). Twisted's reactor cannot be restarted, so every crawl gets a
fresh Python process; use :func:`copyhunt.crawl.runner.run_crawl` rather than calling this
in-process.

Exit status: 0 when the output tables were written, even if pages or images failed (they are in
errors.parquet); 1 when the crawl could not run; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
GC_GEN0_THRESHOLD = 50_000  # allocations between young collections (Python's default: 700)
SUMMARY_FILE = "crawl.json"
IMAGE_FETCHER_DIR = ".image-fetcher"  # the child's output, merged and removed
IMAGE_FETCHER_LOG = "crawl-images.log"
# Only settings.crawl_proxy may route traffic: the safety rules depend on knowing whether a proxy
# is in play, so inherited proxy variables are dropped.
PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")

log = logging.getLogger("copyhunt.crawl.process")


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
    p.add_argument("--validators", type=Path, help="validators of earlier downloads (Parquet), for conditional requests")
    p.add_argument("--log-file", type=Path, help="Scrapy log file (default: stderr)")
    # Internal: run as the image fetcher of a page crawler (see copyhunt.crawl.imagefetch).
    p.add_argument("--image-fetcher", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-s", "--set", dest="overrides", action="append", type=_setting, default=[], help="Scrapy setting KEY=VALUE (VALUE as JSON if it parses)")
    return p.parse_args(argv)


def _stats_summary(stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    reasons = {name: st.get("finish_reason") for name, st in stats.items()}
    dropped: dict[str, int] = {}
    for st in stats.values():
        for k, v in st.items():
            if k.startswith("copyhunt/dropped/"):
                dropped[k.rsplit("/", 1)[-1]] = dropped.get(k.rsplit("/", 1)[-1], 0) + v
    return {
        # "finished" only if every spider finished; otherwise the first other reason.
        "finish_reason": next((r for r in reasons.values() if r != "finished"), "finished") if reasons else None,
        "finish_reasons": reasons,
        "requests": sum(st.get("downloader/request_count", 0) for st in stats.values()),
        "responses": sum(st.get("response_received_count", 0) for st in stats.values()),
        "conditional_requests": sum(st.get("copyhunt/conditional_requests", 0) for st in stats.values()),
        "dropped": dict(sorted(dropped.items())),
    }


def _child_argv(args: argparse.Namespace, log_file: Path) -> list[str]:
    """The image fetcher's arguments: the page crawler's, minus the seeds."""
    argv = ["--log-file", str(log_file)]
    if args.timeout:
        argv += ["--timeout", str(args.timeout)]
    if args.allow_private is not None:
        argv.append("--allow-private" if args.allow_private else "--no-allow-private")
    if args.validators:
        argv += ["--validators", str(args.validators)]
    for key, value in args.overrides:
        argv += ["-s", f"{key}={json.dumps(value)}"]
    return argv


def _log_to(log_file: Path | None, level: Any) -> None:
    """The image fetcher's log (no Scrapy there to set it up): stderr, or the file it is given."""
    handler = logging.FileHandler(log_file, mode="w", encoding="utf-8") if log_file else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s [%(name)s] %(levelname)s: %(message)s"))
    logging.basicConfig(level=level or logging.INFO, handlers=[handler], force=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Heavy imports after argument parsing, so --help and usage errors are instant.
    from copyhunt.config import ConfigError, load_settings
    from copyhunt.lake import atomic_write_json
    from copyhunt.crawl.imagefetch import ImageFetcherProcess, run_image_fetcher
    from copyhunt.crawl.outputs import TABLES, outputs_complete, remove_outputs, row_count
    from copyhunt.crawl.results import CrawlRun
    from copyhunt.crawl.politeness import split_politeness
    from copyhunt.crawl.seeds import assign_spiders, parse_hosts, read_seeds_file
    from copyhunt.crawl.settings import build_settings
    from copyhunt.crawl.validators import read_validators

    if not args.image_fetcher:  # only the page crawler needs the rest of Scrapy
        from scrapy.crawler import AsyncCrawlerProcess

        from copyhunt.crawl.spiders.marketplace import MarketplaceSpider
        from copyhunt.crawl.spiders.site import SiteSpider

    try:
        cfg = load_settings()
        seeds = list(args.seed) + (read_seeds_file(args.seeds_file) if args.seeds_file else [])
        by_spider = assign_spiders(seeds, parse_hosts(cfg.crawl_marketplace_hosts))
    except (ConfigError, OSError) as exc:
        print(f"copyhunt crawl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not seeds and not args.image_fetcher:
        print("copyhunt crawl: no seeds given (--seed or --seeds-file)", file=sys.stderr)
        return EXIT_USAGE
    if args.max_pages is not None and args.max_pages < 1:
        print("copyhunt crawl: --max-pages must be at least 1", file=sys.stderr)
        return EXIT_USAGE

    started = time.time()
    out_dir: Path = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.image_fetcher:
        remove_outputs(out_dir)
        (out_dir / SUMMARY_FILE).unlink(missing_ok=True)
    for name in PROXY_ENV:
        os.environ.pop(name, None)

    run = CrawlRun()
    if args.validators:
        try:
            run.validators = read_validators(args.validators, cfg.blob_root)
        except Exception as exc:  # unreadable validators cost downloads, not the crawl
            log.warning("ignoring validators %s: %s", args.validators, exc)

    overrides = dict(args.overrides)
    if args.log_file:
        overrides.setdefault("LOG_FILE", str(args.log_file))
        overrides.setdefault("LOG_FILE_APPEND", False)  # one log per run, like the tables
    settings = build_settings(cfg, out_dir, max_pages=args.max_pages, allow_private=args.allow_private, timeout_s=args.timeout, overrides=overrides)

    fetcher = None
    if args.image_fetcher:
        split_politeness(settings, "images")
        _log_to(args.log_file, settings.get("LOG_LEVEL"))
        summary = run_image_fetcher(settings, run, out_dir)
        atomic_write_json(out_dir / SUMMARY_FILE, {"duration_s": round(time.time() - started, 3), "cpu_s": round(time.process_time(), 3), **summary})
        return EXIT_OK
    if cfg.crawl_image_processes > 0:
        log_file = (args.log_file.parent if args.log_file else out_dir) / IMAGE_FETCHER_LOG
        fetcher = ImageFetcherProcess(out_dir / IMAGE_FETCHER_DIR, _child_argv(args, log_file), log_file)
        if fetcher.alive:
            run.image_fetcher = fetcher
            split_politeness(settings, "pages")

    process = AsyncCrawlerProcess(settings)
    crawlers = {}
    for spider_cls in (SiteSpider, MarketplaceSpider):
        if by_spider.get(spider_cls.name):
            crawlers[spider_cls.name] = crawler = process.create_crawler(spider_cls)
            process.crawl(crawler, seeds=by_spider[spider_cls.name], crawl_run=run)
    # Scrapy and Twisted allocate a few objects per request and page that live for milliseconds;
    # with the default thresholds the cyclic collector runs hundreds of times a second and walks
    # the crawl's long-lived state (seen URLs, rows) each time. Everything imported so far is
    # permanent: keep it out of the collections, and collect the young generation less often.
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 100)
    process.start()
    stats = {name: (c.stats.get_stats() if c.stats else {}) for name, c in crawlers.items()}

    fetcher_summary: dict[str, Any] = {}
    if fetcher is not None:
        remaining = (args.timeout or 900.0) * 0.95 - (time.time() - started)
        fetcher_summary = fetcher.finish(run.results, timeout=remaining)
        child = out_dir / IMAGE_FETCHER_DIR
        if (child / SUMMARY_FILE).exists():
            fetcher_summary.update(json.loads((child / SUMMARY_FILE).read_text(encoding="utf-8")))
            stats["images"] = {"finish_reason": fetcher_summary.get("finish_reason"),
                               "downloader/request_count": fetcher_summary.get("requests", 0),
                               "response_received_count": fetcher_summary.get("responses", 0),
                               "copyhunt/conditional_requests": fetcher_summary.get("conditional_requests", 0),
                               **{f"copyhunt/dropped/{k}": v for k, v in fetcher_summary.get("dropped", {}).items()}}
        shutil.rmtree(child, ignore_errors=True)
    run.results.write(out_dir)

    if not outputs_complete(out_dir):
        print(f"copyhunt crawl: the crawl did not complete; no output tables in {out_dir}", file=sys.stderr)
        return EXIT_FAILED
    summary = {
        "seeds": seeds,
        "spiders": {name: by_spider[name] for name in crawlers},
        "duration_s": round(time.time() - started, 3),
        "cpu_s": round(time.process_time(), 3),  # this process only, imports included
        "counts": {name: row_count(out_dir, name) for name in TABLES},
        "not_modified": sum(1 for f in run.results.fetched.values() if f.not_modified),
        "image_fetcher": fetcher_summary,
        **_stats_summary(stats),
    }
    atomic_write_json(out_dir / SUMMARY_FILE, summary)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
