"""Spark job: match found-image window hashes against the Annoy shards, then verify geometrically.

Submit with::

    spark-submit --master 'local[*]' jobs/match.py \
        --fingerprints LAKE/image_fingerprints/run_date=D/part-00000.parquet \
        --index-dir LAKE/index [--index-version V] \
        --query-blobs LAKE/_blobs --ref-blobs LAKE/_blobs \
        (--out matches.parquet | --lake LAKE --run-date D)

extract (read fingerprints) -> ``transform`` (the rows of each found image brought together in one
partition, then per batch: one ANN search of every window hash, with each executor opening the
memory-mapped shards once, and ORB + RANSAC verification of each image's best window pairs) ->
load (sorted, deterministic Parquet, written atomically by the driver).

One stage, not a search stage and a verification stage joined by a shuffle of the candidates: the
candidates are made and used by the same worker, an image is decoded once for all its references
without a pandas group per image, and the work is spread over at least PARTITIONS_PER_CORE tasks
per core (a day's fingerprint file is read as one split, and Spark coalesces a small shuffle
into one task: the two-stage plan ran 3,000 images on one core).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import pandas as pd

from copyhunt.matching import MATCH_SCHEMA, MatchParams, arrow_match_schema, match_batches

# Fingerprint rows per partition: a few thousand images, so that the images with candidates
# (the costly ones) spread evenly over the executors.
ROWS_PER_PARTITION = 50_000
PARTITIONS_PER_CORE = 4


def transform(fingerprints, params: MatchParams, partitions: int):
    """fingerprints (one row per found-image window) -> verified matches, one per image pair.
    The result does not depend on ``partitions`` or on how the input was partitioned."""
    by_image = fingerprints.repartition(partitions, "image_sha256").sortWithinPartitions("image_sha256")
    return by_image.mapInPandas(lambda batches: match_batches(batches, params), MATCH_SCHEMA)


def partition_count(rows: int, cores: int) -> int:
    return max(PARTITIONS_PER_CORE * cores, -(-rows // ROWS_PER_PARTITION))


def spark_session(master: str | None = None, app: str = "copyhunt-match"):
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app)
    if master:
        builder = builder.master(master)
    return (
        builder.config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )


def run(args: argparse.Namespace) -> pd.DataFrame:
    params = MatchParams(index_dir=args.index_dir, index_version=args.index_version, query_blobs=args.query_blobs,
                         ref_blobs=args.ref_blobs, max_distance=args.max_distance)
    spark = spark_session(args.master)
    try:
        started = time.perf_counter()
        fingerprints = spark.read.parquet(args.fingerprints)
        rows = fingerprints.count()
        partitions = partition_count(rows, spark.sparkContext.defaultParallelism)
        matches = transform(fingerprints, params, partitions).toPandas()
        # Apart from the JVM's and the session's start and stop: benchmarks read this line.
        print(f"matched {rows} window hashes in {partitions} partitions in {time.perf_counter() - started:.3f} s")
    finally:
        spark.stop()
    return matches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fingerprints", required=True)
    parser.add_argument("--index-dir", required=True)
    parser.add_argument("--index-version", default=None)
    parser.add_argument("--query-blobs", required=True)
    parser.add_argument("--ref-blobs", required=True)
    parser.add_argument("--max-distance", type=int, default=MatchParams.max_distance)
    parser.add_argument("--master", default=None, help="only when not given to spark-submit")
    parser.add_argument("--out", help="write the matches to this Parquet file")
    parser.add_argument("--lake", help="write the matches partition into this lake ...")
    parser.add_argument("--run-date", help="... for this run date")
    args = parser.parse_args(argv)
    if not args.out and not (args.lake and args.run_date):
        parser.error("give --out FILE or --lake ROOT --run-date D")

    import pyarrow as pa
    import pyarrow.parquet as pq

    from copyhunt.lake import WRITER_OPTIONS, Lake, atomic_write_bytes, to_table

    matches = run(args)
    schema = arrow_match_schema()
    table = to_table(pa.Table.from_pandas(matches, schema=schema, preserve_index=False), ["image_sha256", "customer_id", "image_id"])
    if args.out:
        buf = io.BytesIO()
        pq.write_table(table, buf, **WRITER_OPTIONS)
        atomic_write_bytes(Path(args.out), buf.getvalue())
        print(f"wrote {table.num_rows} matches to {args.out}")
    else:
        path = Lake(args.lake).write_partition("matches", args.run_date, table)
        print(f"wrote {table.num_rows} matches to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
