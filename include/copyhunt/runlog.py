"""Observability: structured logs and the per-run summary (counts, errors by reason, durations).

``run_stage`` is what a DAG task calls: it runs one stage, stamps the run manifest with the code
and configuration it ran with, logs one JSON line, and stores the stage's figures under
``_runs/run_date=D/stages/<stage>.json`` in the lake. Durations live here, not in the manifest,
which stays a pure function of the data (so replays can compare it byte for byte).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from copyhunt.config import Settings
from copyhunt.lake import Lake, atomic_write_json, parse_run_date

log = logging.getLogger("copyhunt")


def log_event(event: str, **fields: Any) -> None:
    """One JSON object per line: greppable, and parseable by any log shipper."""
    log.info(json.dumps({"event": event, **fields}, sort_keys=True, default=str))


def runs_dir(settings: Settings, run_date: dt.date) -> Path:
    return settings.lake / "_runs" / f"run_date={run_date.isoformat()}"


def run_stage(name: str, fn: Callable[..., dict], settings: Settings, run_date: dt.date, **kwargs: Any) -> dict:
    from copyhunt.audit import record_run_facts

    started = time.monotonic()
    log_event("stage.start", stage=name, run_date=run_date.isoformat())
    try:
        result = fn(settings, run_date, **kwargs)
    except Exception as exc:
        log_event("stage.failed", stage=name, run_date=run_date.isoformat(), error=f"{type(exc).__name__}: {exc}"[:500])
        _store(settings, run_date, name, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000],
                                           "seconds": round(time.monotonic() - started, 3)})
        raise
    seconds = round(time.monotonic() - started, 3)
    record_run_facts(settings, run_date)
    figures = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool)) or v is None}
    _store(settings, run_date, name, {"status": "success", "seconds": seconds, "figures": figures})
    log_event("stage.done", stage=name, run_date=run_date.isoformat(), seconds=seconds, **figures)
    return result


def _store(settings: Settings, run_date: dt.date, name: str, body: dict) -> None:
    atomic_write_json(runs_dir(settings, run_date) / "stages" / f"{name}.json", {"stage": name, **body})


def errors_by_reason(settings: Settings, run_date: dt.date) -> dict[str, dict[str, int]]:
    lake = Lake(settings.lake)
    out: dict[str, dict[str, int]] = {}
    for dataset in ("crawl_errors", "fingerprint_errors"):
        if lake.has_partition(dataset, run_date):
            frame = lake.read_frame(dataset, run_date)
            if "reason" in frame.columns and len(frame):
                counts = frame["reason"].astype(str).str.split(":").str[0].value_counts()
                out[dataset] = {str(k): int(v) for k, v in sorted(counts.items())}
            else:
                out[dataset] = {}
    return out


def run_report(settings: Settings, run_date: dt.date | str) -> dict:
    """Everything known about one run: stage figures and durations, errors, manifest facts."""
    run_date = parse_run_date(run_date)
    stages = {}
    stage_dir = runs_dir(settings, run_date) / "stages"
    if stage_dir.exists():
        for p in sorted(stage_dir.glob("*.json")):
            stages[p.stem] = json.loads(p.read_text())
    lake = Lake(settings.lake)
    manifest = lake.read_manifest(run_date)
    return {
        "run_date": run_date.isoformat(),
        "stages": stages,
        "errors_by_reason": errors_by_reason(settings, run_date),
        "rows": {k: v.get("rows", 0) for k, v in manifest.get("datasets", {}).items()},
        "facts": manifest.get("run", {}),
        "total_seconds": round(sum(s.get("seconds", 0) for s in stages.values()), 3),
    }


def write_run_report(settings: Settings, run_date: dt.date) -> Path:
    path = runs_dir(settings, run_date) / "report.json"
    atomic_write_json(path, run_report(settings, run_date))
    return path
