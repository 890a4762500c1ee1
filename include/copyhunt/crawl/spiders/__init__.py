"""Spiders of the copyhunt crawler (Scrapy's SPIDER_MODULES)."""
