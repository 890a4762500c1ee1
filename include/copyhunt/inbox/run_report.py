"""The run report as a small web app, for the data team: what each daily run crawled, matched,
loaded and mailed, with stage durations and errors by reason.

``create_run_report_app(load_settings, dependencies)`` returns a FastAPI app; the Airflow plugin
(``plugins/copyhunt_plugin.py``) mounts it in the Airflow API server and shows it in the Airflow UI
behind Airflow's own sign-in (its ``dependencies``). It reads the lake's run records
(``copyhunt.runlog.run_report``) and the hits database (``copyhunt.hitsdb.report``): counts and
timings only, no customer's page titles or URLs. Links are relative, so the app works under any
mount prefix and inside the UI's iframe.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at runtime.
import datetime as dt
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import Engine

from copyhunt.config import Settings

__all__ = ["create_run_report_app", "list_run_dates"]

HERE = Path(__file__).parent
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
MAX_RUNS = 90


def list_run_dates(settings: Settings, engine: Engine | None, limit: int = MAX_RUNS) -> list[dict[str, Any]]:
    """Runs known to the lake (``_runs/run_date=D``) or to the hits database, newest first."""
    from copyhunt.hitsdb.report import run_overview
    from copyhunt.lake import parse_run_date

    rows: dict[dt.date, dict[str, Any]] = {}
    runs_root = settings.lake / "_runs"
    if runs_root.is_dir():
        for p in runs_root.glob("run_date=*"):
            try:
                day = parse_run_date(p.name.split("=", 1)[1])
            except ValueError:
                continue
            rows[day] = {"run_date": day, "in_lake": True}
    if engine is not None:
        for r in run_overview(engine, limit):
            rows.setdefault(r["run_date"], {"run_date": r["run_date"], "in_lake": False}).update(r)
    return [rows[d] for d in sorted(rows, reverse=True)[:limit]]


def create_run_report_app(
    load_settings: Callable[[], Settings],
    dependencies: Sequence[Any] = (),
) -> FastAPI:
    """The run report app. ``load_settings`` is called per request (the API server may start before
    the environment is complete); ``dependencies`` guard every route (e.g. Airflow's auth)."""
    env = Environment(loader=FileSystemLoader(HERE / "templates" / "report"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    engines: dict[str, Engine] = {}
    lock = threading.Lock()

    def engine_for(settings: Settings) -> Engine:
        from copyhunt.hitsdb.store import make_engine

        url = settings.database_url
        with lock:
            if url not in engines:
                engines[url] = make_engine(url)
            return engines[url]

    app = FastAPI(title="copyhunt run report", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=list(dependencies))

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    def render(name: str, **ctx: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**ctx))

    @app.get("/")
    def index() -> HTMLResponse:
        settings = load_settings()
        return render("index.html", runs=list_run_dates(settings, engine_for(settings)),
                      database=engine_for(settings).url.render_as_string(hide_password=True))

    @app.get("/runs/{run_date}")
    def run(run_date: str) -> HTMLResponse:
        from copyhunt.hitsdb.report import run_db_facts
        from copyhunt.lake import parse_run_date
        from copyhunt.runlog import run_report

        try:
            day = parse_run_date(run_date)
        except ValueError:
            raise HTTPException(404, "not a run date") from None
        settings = load_settings()
        report = run_report(settings, day)
        db = run_db_facts(engine_for(settings), day)
        if not report["stages"] and not report["rows"] and db is None:
            raise HTTPException(404, f"no run on {day}")
        return render("run.html", day=day.isoformat(), report=report, db=db)

    @app.get("/api/runs/{run_date}")
    def run_json(run_date: str) -> dict[str, Any]:
        from copyhunt.hitsdb.report import run_db_facts
        from copyhunt.lake import parse_run_date
        from copyhunt.runlog import run_report

        try:
            day = parse_run_date(run_date)
        except ValueError:
            raise HTTPException(404, "not a run date") from None
        settings = load_settings()
        return {"report": run_report(settings, day), "hits_db": run_db_facts(engine_for(settings), day)}

    return app
