"""Scrapy settings of the copyhunt crawler.

The module-level names are the project defaults (loaded with ``Settings.setmodule``);
:func:`build_settings` lays a run's values from :class:`copyhunt.config.Settings` on top, under
``COPYHUNT_*`` keys that the spider, middlewares and pipeline read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scrapy.settings import Settings as ScrapySettings

from copyhunt.config import Settings

BOT_NAME = "copyhunt"
SPIDER_MODULES = ["copyhunt.crawl.spiders"]
# Identify ourselves and where to complain; site owners should be able to block us by name.
USER_AGENT = "copyhunt/0.1 (+https://github.com/copyhunt/copyhunt; image-rights crawler)"

# ---- politeness (the rules themselves: copyhunt.crawl.politeness) --------------------------------
ROBOTSTXT_OBEY = True
ROBOTSTXT_PARSER = "copyhunt.crawl.politeness.RobotsRules"  # the parse the image fetcher uses too
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 2
DOWNLOAD_DELAY = 0.5  # the floor AutoThrottle never goes below
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 30.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 1.0
# Breadth first: with a page budget, the shallow pages (home, sections) matter most.
DEPTH_PRIORITY = 1
SCHEDULER_DISK_QUEUE = "scrapy.squeues.PickleFifoDiskQueue"
SCHEDULER_MEMORY_QUEUE = "scrapy.squeues.FifoMemoryQueue"
COOKIES_ENABLED = False  # no sessions: fewer traps, and every fetch is reproducible
REDIRECT_MAX_TIMES = 5

# ---- robustness --------------------------------------------------------------------------------
DOWNLOAD_TIMEOUT = 20
# Pages; images get COPYHUNT_MAX_IMAGE_BYTES per request (meta download_maxsize).
DOWNLOAD_MAXSIZE = 10 * 1024 * 1024
DOWNLOAD_WARNSIZE = 0  # sizes are enforced and reported as errors; no need to warn as well
RETRY_ENABLED = True
RETRY_TIMES = 2
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408, 429]
# Every status reaches the spider, which records 4xx/5xx in errors.parquet instead of losing them.
HTTPERROR_ALLOW_ALL = True
# The safety middleware checks the address Scrapy connects to only if both share this cache.
DNSCACHE_ENABLED = True
DNS_TIMEOUT = 10
# Both would open a control port on every worker; a batch crawl has no use for them.
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False
LOG_LEVEL = "INFO"
LOG_FORMATTER = "copyhunt.crawl.middlewares.CrawlLogFormatter"
STATS_DUMP = True

# ---- throughput ----------------------------------------------------------------------------------
# Scrapy starts CONCURRENT_ITEMS tasks for every response's output; the pipeline is synchronous
# (and hands blob writes to a writer process), so parallel items only add event-loop churn.
CONCURRENT_ITEMS = 1
# A development aid that re-reads and parses each generator callback's source on every response
# (its cache is keyed weakly by bound methods, which die at once), a cost on every page. Our
# callbacks return nothing from generators; the tests run them.
WARN_ON_GENERATOR_RETURN_VALUE = False
try:  # uvloop: a faster event loop under Twisted's asyncio reactor; plain asyncio if missing
    import uvloop as _uvloop  # noqa: F401

    ASYNCIO_EVENT_LOOP = "uvloop.Loop"
except ImportError:  # pragma: no cover
    pass

# Run statistics without a handler on the item_scraped and response_received signals (see
# copyhunt.crawl.extensions): each handler costs a task per page on the asyncio loop.
EXTENSIONS = {
    "scrapy.extensions.corestats.CoreStats": None,
    "copyhunt.crawl.extensions.RunStats": 0,
    "scrapy.extensions.logstats.LogStats": None,
    "copyhunt.crawl.extensions.RunLogStats": 0,
    # AutoThrottle's wiring, with the delays the image fetcher computes too (crawl.politeness).
    "scrapy.extensions.throttle.AutoThrottle": None,
    "copyhunt.crawl.extensions.PoliteThrottle": 0,
}

DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.httpauth.HttpAuthMiddleware": None,  # we never send credentials
    # Before robots.txt (100): a refused host gets no robots.txt request either.
    "copyhunt.crawl.middlewares.SafetyMiddleware": 60,
    "copyhunt.crawl.middlewares.ConditionalRequestMiddleware": 70,
    "scrapy.downloadermiddlewares.offsite.OffsiteMiddleware": None,  # scope is CrawlPolicyMiddleware's
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "copyhunt.crawl.middlewares.BackoffRetryMiddleware": 550,
    "scrapy.downloadermiddlewares.redirect.MetaRefreshMiddleware": None,
    "copyhunt.crawl.middlewares.PoliteMetaRefreshMiddleware": 580,
    "scrapy.downloadermiddlewares.redirect.RedirectMiddleware": None,
    "copyhunt.crawl.middlewares.PoliteRedirectMiddleware": 600,
}
SPIDER_MIDDLEWARES = {
    # The spiders set depth, its priority (DEPTH_PRIORITY) and the Referer on the requests they
    # build, and CrawlPolicyMiddleware refuses (and records) long URLs: Scrapy's middlewares for
    # these would each add a layer around every object every page yields.
    "scrapy.spidermiddlewares.depth.DepthMiddleware": None,
    "scrapy.spidermiddlewares.referer.RefererMiddleware": None,
    "scrapy.spidermiddlewares.urllength.UrlLengthMiddleware": None,
    "copyhunt.crawl.middlewares.CrawlPolicyMiddleware": 850,
    # A development aid (warns about copied meta keys); our spiders build each request's meta.
    "scrapy.spidermiddlewares.metacopy.MetaCopyDetectionMiddleware": None,
}
ITEM_PIPELINES = {"copyhunt.crawl.pipelines.CrawlOutputPipeline": 300}

# ---- copyhunt keys (set per run by build_settings) -----------------------------------------------
COPYHUNT_RETRY_BACKOFF_BASE = 1.0  # seconds before the first retry; doubles each time
COPYHUNT_RETRY_BACKOFF_MAX = 30.0
COPYHUNT_RETRY_AFTER_MAX = 120.0  # a longer Retry-After is reported, not waited for
COPYHUNT_MAX_QUERY_PARAMS = 8
COPYHUNT_MAX_URL_LENGTH = 2000


def build_settings(
    cfg: Settings,
    out_dir: Path,
    *,
    max_pages: int | None = None,
    allow_private: bool | None = None,
    timeout_s: float | None = None,
    overrides: dict[str, Any] | None = None,
) -> ScrapySettings:
    """Scrapy settings for one crawl run writing into ``out_dir``."""
    s = ScrapySettings()
    s.setmodule(__name__, priority="project")
    budget = max_pages if max_pages is not None else cfg.crawl_max_pages_per_domain
    run: dict[str, Any] = {
        "COPYHUNT_OUT_DIR": str(out_dir),
        "COPYHUNT_BLOB_ROOT": str(cfg.blob_root),
        "COPYHUNT_PROXY": cfg.crawl_proxy,
        "COPYHUNT_ALLOW_PRIVATE": cfg.crawl_allow_private if allow_private is None else allow_private,
        "COPYHUNT_MAX_PAGES_PER_DOMAIN": budget,
        "COPYHUNT_DEPTH_LIMIT": cfg.crawl_depth_limit,
        "COPYHUNT_MAX_IMAGE_BYTES": cfg.crawl_max_image_bytes,
        "COPYHUNT_MAX_IMAGE_PIXELS": cfg.max_image_pixels,
        # Pages deeper than the limit are refused by CrawlPolicyMiddleware, which knows that a
        # listing's pagination is not depth; Scrapy's own limit would also cut the images of the
        # deepest pages (one level further) and long listings.
        "DEPTH_LIMIT": 0,
        "DOWNLOAD_TIMEOUT": cfg.crawl_timeout_seconds,
        "DOWNLOAD_DELAY": cfg.crawl_download_delay,
        "AUTOTHROTTLE_ENABLED": cfg.crawl_autothrottle,
        "CONCURRENT_REQUESTS_PER_DOMAIN": cfg.crawl_concurrency_per_domain,
    }
    if timeout_s:
        # Close gracefully well before the caller's hard timeout: closing waits for requests in
        # flight (and retries sleeping on Retry-After), and partial results must still be written.
        run["CLOSESPIDER_TIMEOUT"] = max(1.0, timeout_s * 0.8)
    s.setdict(run, priority="cmdline")
    if overrides:
        s.setdict(overrides, priority="cmdline")
    return s

