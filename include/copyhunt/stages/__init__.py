"""One module per daily_hunt stage: what each stage reads, computes and writes.

Each stage takes settings and a run date, reads the lake partitions it needs, writes its own and
returns a small dict of figures (what the Airflow task logs and returns). The order they run in
is ``copyhunt.hunt.DAILY_STAGES``; Airflow, the CLI and replay only call them.

    crawl -> fingerprint -> match (spark-submit) -> enrich -> price -> load -> digest

The library the stages call (crawler, fingerprints, matching, enrichment, pricing, hits DB) lives
in its own modules; a stage module only wires lake partitions to it.
"""
