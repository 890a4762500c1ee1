"""The copyhunt crawler: a Scrapy project that finds the images web pages show.

Run it with :func:`copyhunt.crawl.runner.run_crawl` (a subprocess per crawl, since Twisted's
reactor cannot restart inside a worker), ``copyhunt crawl`` or ``python -m copyhunt.crawl.process``.
Outputs are described in :mod:`copyhunt.crawl.outputs`; image discovery is
:func:`copyhunt.crawl.images.discover_images`.

Modules: ``spiders/`` (site and marketplace), ``settings`` (politeness and throughput),
``middlewares`` (safety guard, retries with Retry-After, conditional requests, crawl policy and
trap guards), ``extensions`` (run statistics), ``pipelines`` (blob store, image checks),
``blobwriter`` (blob writes in a helper process), ``results`` (a run's rows), ``imagefetch`` (the
second process that downloads images) and ``imageclient`` (its asyncio HTTP client, applying the
same rules), ``validators`` (ETag/Last-Modified from earlier days), ``seeds`` (which spider crawls
which seed), ``market`` (sellers and pagination), ``pages``/``images``/``urls`` (pure HTML and URL
functions), ``bench`` (``copyhunt bench crawl``).

Importing this package does not import Scrapy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["CrawlError", "CrawlSummary", "read_summary", "run_crawl"]

if TYPE_CHECKING:
    from copyhunt.crawl.runner import CrawlError, CrawlSummary, read_summary, run_crawl


def __getattr__(name: str) -> Any:
    # Lazy, so `import copyhunt.crawl` stays cheap at DAG parse time.
    if name in __all__:
        from copyhunt.crawl import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
