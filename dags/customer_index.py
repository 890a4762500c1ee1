"""
### customer_index

Registers the customers' images, fingerprints them (whole image, sub-windows, mirrored) and
publishes an Annoy index version. Produces the `customer_index` Asset that `daily_hunt` matches
against.

**Incremental, hourly.** It runs every hour, so an upload is searchable by the next hunt the same
day rather than the day after. Only images not fingerprinted before (by content sha256 and
fingerprint key) are decoded; shards whose images are unchanged are kept and the new images go
into a new shard; a withdrawn image's shard is rebuilt without it. Once more than
`index_max_small_shards` small shards pile up, the build compacts them (`copyhunt index compact`
does the same by hand). With the registry unchanged, a run rewrites the same bytes and publishes
the same version: a cheap no-op.

Each task writes one lake partition for the run date: `reference_images` (with the registry
snapshot), `reference_fingerprints`, `index_versions`. A later run the same day replaces them; the
lake keeps the replaced content by sha256, so a hunt that read an earlier version replays it. The
`daily_hunt` of a day uses the version published last before its match task; if customer_index
publishes another one while that hunt is between match and price, enrich refuses (re-run the hunt
from match) rather than mix two registries.
"""

from __future__ import annotations

from copyhunt.orchestration import CUSTOMER_INDEX, common_dag_arguments, run_task_stage
from airflow.sdk import dag, task


@dag(dag_id="customer_index", schedule="0 * * * *", tags=["copyhunt", "index"], doc_md=__doc__, **common_dag_arguments())
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
