"""
### customer_index

Registers the customers' images, fingerprints them (whole image, sub-windows, mirrored) and
publishes an Annoy index version. Shards whose images have not changed are reused, not rebuilt.
Produces the `customer_index` Asset that `daily_hunt` matches against.

Each task writes one lake partition for the run date: `reference_images`, `reference_fingerprints`,
`index_versions`.
"""

from __future__ import annotations

from copyhunt.orchestration import CUSTOMER_INDEX, DEFAULT_ARGS, RUN_DATE_PARAM_HELP, START_DATE
from airflow.sdk import Param, dag, get_current_context, task


def _run_date():
    from copyhunt.hunt import run_date_from_context

    return run_date_from_context(get_current_context())


@dag(
    dag_id="customer_index",
    schedule="0 1 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["copyhunt", "index"],
    doc_md=__doc__,
    params={"run_date": Param(None, type=["null", "string"], description=RUN_DATE_PARAM_HELP)},
)
def customer_index():
    @task
    def register() -> str:
        from copyhunt.config import load_settings
        from copyhunt.hunt import customers
        from copyhunt.references import register_references

        from copyhunt.runlog import run_stage

        settings = load_settings()
        result = run_stage("register", lambda s, d: {"path": str(register_references(s, d, customers(s)))}, settings, _run_date())
        return result["path"]

    @task
    def fingerprint(registered: str) -> str:
        from copyhunt.config import load_settings
        from copyhunt.references import fingerprint_references

        from copyhunt.runlog import run_stage

        result = run_stage("fingerprint_references", lambda s, d: {"path": str(fingerprint_references(s, d))}, load_settings(), _run_date())
        return result["path"]

    @task(outlets=[CUSTOMER_INDEX])
    def build_index(fingerprints: str) -> dict:
        from copyhunt.config import load_settings
        from copyhunt.references import build_reference_index

        from copyhunt.runlog import run_stage

        return run_stage("build_index", build_reference_index, load_settings(), _run_date())

    build_index(fingerprint(register()))


customer_index()
