"""
### customer_index

Registers the customers' images, fingerprints them (whole image, sub-windows, mirrored) and
publishes an Annoy index version. Shards whose images have not changed are reused, not rebuilt.
Produces the `customer_index` Asset that `daily_hunt` matches against.

Each task writes one lake partition for the run date: `reference_images`, `reference_fingerprints`,
`index_versions`.
"""

from __future__ import annotations

from copyhunt.orchestration import CUSTOMER_INDEX, common_dag_arguments, run_task_stage
from airflow.sdk import dag, task


@dag(dag_id="customer_index", schedule="0 1 * * *", tags=["copyhunt", "index"], doc_md=__doc__, **common_dag_arguments())
def customer_index():
    @task
    def register() -> dict:
        from copyhunt.references import register_stage

        return run_task_stage("register", register_stage)

    @task
    def fingerprint(registered: dict) -> dict:
        from copyhunt.references import fingerprint_stage

        return run_task_stage("fingerprint_references", fingerprint_stage)

    @task(outlets=[CUSTOMER_INDEX])
    def build_index(fingerprints: dict) -> dict:
        from copyhunt.references import build_reference_index

        return run_task_stage("build_index", build_reference_index)

    build_index(fingerprint(register()))


customer_index()
