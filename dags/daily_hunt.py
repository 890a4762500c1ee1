"""
### daily_hunt

The daily run: crawl the seeds, fingerprint every found image, match them against the customer
index with a Spark job (spark-submit; the index version customer_index, which runs hourly,
published last for the day: uploads made before the hunt are searched the same day), verify, enrich (operator, dates), price (licence check and
post-licence value), load the hits database, send the daily digests and store the run report
(counts per stage, errors by reason, durations) under `_runs/run_date=D/report.json`.

Every task reads and writes its own `run_date=YYYY-MM-DD` partition of the lake and hands the next
task a small summary, never data. Re-running a task or the whole day gives the same Parquet bytes
and the same database rows.
"""

from __future__ import annotations

from copyhunt.orchestration import CUSTOMER_INDEX, common_dag_arguments, run_task_stage
from airflow.sdk import dag, get_current_context, task


@dag(dag_id="daily_hunt", schedule="0 3 * * *", tags=["copyhunt", "daily"], doc_md=__doc__, **common_dag_arguments())
def daily_hunt():
    @task
    def crawl() -> dict:
        return run_task_stage("crawl")

    @task
    def fingerprint(crawled: dict) -> dict:
        return run_task_stage("fingerprint")

    @task(inlets=[CUSTOMER_INDEX])
    def match(fingerprinted: dict) -> dict:
        return run_task_stage("match")

    @task
    def enrich(matched: dict) -> dict:
        return run_task_stage("enrich")

    @task
    def price(enriched: dict) -> dict:
        return run_task_stage("price")

    @task
    def load(priced: dict) -> dict:
        return run_task_stage("load")

    @task
    def digest(loaded: dict) -> dict:
        return run_task_stage("digest")

    @task
    def report(sent: dict) -> str:
        from copyhunt import hunt
        from copyhunt.config import load_settings
        from copyhunt.runlog import write_run_report

        return str(write_run_report(load_settings(), hunt.run_date_from_context(get_current_context())))

    report(digest(load(price(enrich(match(fingerprint(crawl())))))))


daily_hunt()
