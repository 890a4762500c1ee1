"""Scrapy extensions of the copyhunt crawler: the run's statistics without per-page signals.

Scrapy's CoreStats counts items and responses from the ``item_scraped`` and ``response_received``
signals. On the asyncio reactor a signal with a receiver costs a coroutine and a task per receiver
each time it is sent, and those two signals are sent for every page and every item. With no
receiver left, sending them costs next to nothing. :class:`RunStats` keeps what CoreStats records at the start and end of a run (start and
finish time, elapsed seconds, finish reason); responses are counted by Scrapy's DownloaderStats
(``downloader/response_count``) and items by the output pipeline (``item_scraped_count``).
:class:`RunLogStats` is Scrapy's periodic progress line, reading those counts.

:class:`PoliteThrottle` is Scrapy's AutoThrottle with the delays taken from
:class:`copyhunt.crawl.politeness.Politeness`, which the image fetcher paces its hosts by too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.extensions.corestats import CoreStats
from scrapy.extensions.logstats import LogStats
from scrapy.extensions.throttle import AutoThrottle

from copyhunt.crawl.pipelines import ITEMS_STAT
from copyhunt.crawl.politeness import Politeness

if TYPE_CHECKING:
    from typing_extensions import Self

    from scrapy.core.downloader import Slot
    from scrapy.crawler import Crawler
    from scrapy.http import Response

RESPONSES_STAT = "downloader/response_count"


class RunStats(CoreStats):
    """CoreStats' run clock and finish reason, without its per-item and per-response handlers."""

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        assert crawler.stats is not None
        o = cls(crawler.stats)
        crawler.signals.connect(o.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(o.spider_closed, signal=signals.spider_closed)
        return o

    def spider_closed(self, spider: object, reason: str) -> None:
        # Under Scrapy's name too, for whatever reads a run's stats (crawl.json's "responses").
        self.stats.set_value("response_received_count", self.stats.get_value(RESPONSES_STAT, 0))
        super().spider_closed(spider, reason)  # type: ignore[arg-type]


class RunLogStats(LogStats):
    """Scrapy's "Crawled N pages, scraped M items" line, from the counts RunStats leaves in place."""

    def calculate_stats(self) -> None:
        self.items = self.stats.get_value(ITEMS_STAT, 0)
        self.pages = self.stats.get_value(RESPONSES_STAT, 0)
        self.irate = (self.items - self.itemsprev) * self.multiplier
        self.prate = (self.pages - self.pagesprev) * self.multiplier
        self.pagesprev, self.itemsprev = self.pages, self.items

    def calculate_final_stats(self, spider: object) -> tuple[None, None] | tuple[float, float]:
        start_time, finish_time = self.stats.get_value("start_time"), self.stats.get_value("finish_time")
        minutes = (finish_time - start_time).seconds / 60 if start_time and finish_time else 0
        if not minutes:
            return None, None
        return self.stats.get_value(RESPONSES_STAT, 0) / minutes, self.stats.get_value(ITEMS_STAT, 0) / minutes


class PoliteThrottle(AutoThrottle):
    """AutoThrottle's signals and slots; the first delay and each adjustment are the rules'."""

    def __init__(self, crawler: Crawler):
        super().__init__(crawler)  # NotConfigured unless AUTOTHROTTLE_ENABLED
        self.politeness = Politeness.from_settings(crawler.settings)

    def _start_delay(self) -> float:
        return self.politeness.start_delay

    def _adjust_delay(self, slot: Slot, latency: float, response: Response) -> None:
        slot.delay = self.politeness.throttled_delay(slot.delay, latency, response.status)
