"""Benchmarks: ``copyhunt bench robustness`` and ``copyhunt bench throughput``.

Each prints a table, writes its figures as JSON and a PNG chart under ``data/bench/``, and
compares against a naive baseline measured in the same run (whole-image ``imagehash.phash``).
"""
