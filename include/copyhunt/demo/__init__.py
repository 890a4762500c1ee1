"""The demo: registered customers (customers.py) and a generated local web to crawl (web.py)."""
