"""The ``copyhunt`` command line.

    copyhunt demo                      run the whole daily pipeline on the demo web (make demo)
    copyhunt demo-web                  serve the generated demo web on loopback
    copyhunt crawl --seed URL --out D  crawl into pages/images/errors Parquet files
    copyhunt index build / match       build an index of a folder of images; match a folder against it
    copyhunt index compact             merge an index's small shards (incremental builds' uploads) into full ones
    copyhunt stage NAME --run-date D   run one pipeline stage without Airflow
    copyhunt summary --run-date D      what a run found and where to look
    copyhunt serve                     the customer inbox (web pages and JSON API)
    copyhunt customers token ID        make a customer's inbox/API access token
    copyhunt audit verify --run-date D check a day's stored snapshot, manifest signature and chain
    copyhunt replay --run-date D       recompute a day from its snapshot and compare
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Plain help: typer's rich help labels every option with its Python type ("<bool>" on a flag).
app = typer.Typer(help="copyhunt: find where registered images are used on the web.", no_args_is_help=True, add_completion=False,
                  rich_markup_mode=None)
index_app = typer.Typer(help="Build reference indexes.", no_args_is_help=True)
app.add_typer(index_app, name="index")
customers_app = typer.Typer(help="Customers in the registry (the hits database), and their access tokens.", no_args_is_help=True)
app.add_typer(customers_app, name="customers")
images_app = typer.Typer(help="Customers' registered images: add (upload), import from a website, list, and their thumbnails.", no_args_is_help=True)
app.add_typer(images_app, name="images")
sites_app = typer.Typer(help="Customers' own sites: domains where use of their images is theirs or authorised.", no_args_is_help=True)
app.add_typer(sites_app, name="sites")
bench_app = typer.Typer(help="Benchmarks", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
audit_app = typer.Typer(help="Audit the lake: stored outputs, manifests, signatures.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
console = Console(stderr=True)


def progress_bar(items: Iterable, description: str = "working", total: int | None = None) -> Iterable:
    """Wrap an iterable in a rich progress bar (on stderr, so stdout stays machine-readable)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def fail(message: str, code: int = 1) -> NoReturn:
    """End a command on a user's mistake: one unwrapped line on stderr (it may name long paths)
    and the exit code, never a traceback."""
    typer.echo(message, err=True)
    raise typer.Exit(code)


def json_flag() -> Any:
    return typer.Option(False, "--json", help="Print the result as one JSON object (for scripts) instead of a table.")


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, sort_keys=True, default=str))


def _settings():
    from copyhunt.config import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as exc:
        fail(f"configuration error: {exc}", 2)


def _output_dir(path: Path, option: str) -> None:
    """Refuse, before any work, an output directory that cannot be one."""
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file, not a directory", param_hint=option)


def _output_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written where it is asked for."""
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a directory; give a file name", param_hint=option)
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise typer.BadParameter(f"{parent} is a file, so {path} cannot be written", param_hint=option)


def _run_date(value: Optional[str]) -> dt.date:
    from copyhunt.lake import parse_run_date

    try:
        return parse_run_date(value) if value else dt.date.today()
    except ValueError as exc:
        raise typer.BadParameter(str(exc))


@app.command("demo-web")
def demo_web(
    out: Path = typer.Option(Path("data/demo-web"), help="Where the generated sites are written."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback only for the demo)."),
    port: int = typer.Option(8899, help="Port of the demo web's HTTP proxy."),
) -> None:
    """Generate the demo web and serve it on loopback as an HTTP proxy until interrupted."""
    from copyhunt.demo.web import run_demo_web

    settings = _settings()
    _check_customers_file(settings)
    with _listening(host, port):
        run_demo_web(settings.resolve(out), settings.customers_path, host, port)


def _check_customers_file(settings) -> None:
    """Refuse, before any work, a customers file that is missing or that the demo cannot read."""
    from copyhunt.demo.customers import load_customers, repo_root

    try:
        load_customers(settings.customers_path, repo_root())
    except ValueError as exc:
        fail(f"{exc} (COPYHUNT_CUSTOMERS_FILE)", 2)


@contextlib.contextmanager
def _listening(host: str, port: int) -> Iterator[None]:
    """A port that cannot be listened on is the user's to change: one line, not a traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        fail(f"cannot listen on {host}:{port}: {exc.strerror} (choose another with --port)", 2)


@app.command()
def crawl(
    seed: list[str] = typer.Option([], "--seed", metavar="URL", help="Start URL (repeatable)."),
    seeds_file: Optional[Path] = typer.Option(None, help="File with one start URL per line."),
    out: Path = typer.Option(..., help="Directory for pages.parquet, images.parquet, errors.parquet."),
    max_pages: Optional[int] = typer.Option(None, help="Page budget per domain."),
    allow_private: bool = typer.Option(False, "--allow-private", help="Allow loopback/private addresses (tests, demo)."),
    timeout: float = typer.Option(900, help="Seconds; the crawl closes itself at 80% of this and writes what it has."),
    as_json: bool = json_flag(),
) -> None:
    """Crawl from seed URLs (Scrapy, in a subprocess) and write Parquet outputs.

    A seed is a URL, or "marketplace URL" for the marketplace spider (listing pagination, sellers).
    """
    from copyhunt.crawl.runner import CrawlError, run_crawl
    from copyhunt.crawl.seeds import SeedError, parse_seed, read_seeds_file
    from copyhunt.crawl.urls import canonical_url

    settings = _settings()
    try:
        seeds = list(seed) + (read_seeds_file(seeds_file) if seeds_file else [])
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {seeds_file}: {exc}", param_hint="--seeds-file")
    if not seeds:
        raise typer.BadParameter("give at least one --seed or --seeds-file")
    for line in seeds:
        try:
            _, url = parse_seed(line)
        except SeedError as exc:
            raise typer.BadParameter(str(exc), param_hint="--seed")
        if canonical_url(url) is None:
            raise typer.BadParameter(f"{url!r} is not an http(s) URL with a host", param_hint="--seed")
    _output_dir(out, "--out")
    if max_pages is not None and max_pages < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--max-pages")
    if timeout <= 0:
        raise typer.BadParameter("must be positive", param_hint="--timeout")
    try:
        with console.status(f"crawling {len(seeds)} seed(s)"):
            summary = run_crawl(seeds, out, settings, max_pages=max_pages, allow_private=allow_private or None, timeout_s=timeout)
    except CrawlError as exc:
        fail(f"crawl failed: {exc}")
    if as_json:
        return print_json({**dataclasses.asdict(summary), "out_dir": str(summary.out_dir)})
    _print_facts(f"crawl finished ({summary.finish_reason or 'unknown reason'}) in {summary.duration_s:.1f} s", [
        ("pages fetched", f"{summary.pages:,}"),
        ("images found on them", f"{summary.images:,}"),
        ("distinct images stored", f"{summary.images_stored:,}"),
        ("images unchanged since the last crawl", f"{summary.images_not_modified:,}"),
        ("errors", f"{summary.errors:,}"),
        ("written to", str(summary.out_dir)),
    ])


@bench_app.command("crawl")
def bench_crawl(
    pages: int = typer.Option(5000, min=10, help="Pages of the generated site (two images each, plus a logo)."),
    concurrency: int = typer.Option(32, min=1, help="Concurrent requests (politeness is lifted for loopback)."),
    scrapy_bench_seconds: float = typer.Option(10.0, min=0, help="How long 'scrapy bench' runs as the baseline; 0 skips it."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the figures to this JSON file."),
) -> None:
    """Crawl a generated local site and print pages/s and images/s next to 'scrapy bench'."""
    from copyhunt.crawl.bench import run as run_bench
    from copyhunt.lake import atomic_write_json

    figures = run_bench(pages, concurrency, scrapy_bench_seconds, log=typer.echo)
    if json_out is not None:
        atomic_write_json(json_out, figures)


def _print_facts(title: str, facts: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for name, value in facts:
        table.add_row(name, value)
    Console(width=120).print(table, markup=False)  # a result: stdout (progress and status go to stderr)


def _print_rows(rows: list[list[str]], title: str) -> None:
    table = Table(title=title)
    for name in rows[0]:
        table.add_column(name)
    for row in rows[1:]:
        table.add_row(*row)
    Console(width=160).print(table)


def _write_docs(bench: str, figures) -> None:
    import datetime as dt
    import os

    from copyhunt.bench.docs import update_figures
    from copyhunt.registry import REPO_ROOT

    doc = REPO_ROOT / "docs" / "performance.md"
    update_figures(doc, bench, figures, dt.datetime.now(dt.timezone.utc).date(), f"{os.cpu_count()} cores")
    typer.echo(f"updated the figures table in {doc}")


@bench_app.command("sameday")
def bench_sameday(
    refs: int = typer.Option(300, min=1, help="Photos registered before the upload."),
    work: Path = typer.Option(Path("data/bench/sameday"), help="Scratch folder (emptied first)."),
    write_docs: bool = typer.Option(False, "--write-docs", help="Also put the figures into docs/performance.md."),
) -> None:
    """Upload-to-searchable time: one upload, then the incremental customer_index run, against a full rebuild."""
    from copyhunt.bench import sameday
    from copyhunt.registry import REPO_ROOT

    settings = _settings()
    report = sameday.run_sameday(settings, settings.resolve(work), REPO_ROOT / "assets" / "images", refs)
    found = sameday.figures(report)
    _print_facts("the index grows the same day", [(f.measure, f"{f.value}" + (f" ({f.comparison})" if f.comparison else "")) for f in found]
                 + [("first customer_index run (every photo fingerprinted)", f"{report.initial_seconds:.1f} s")])
    if write_docs:
        _write_docs("front door", found)


@bench_app.command("robustness")
def bench_robustness(
    quick: bool = typer.Option(False, "--quick", help="One variant per transform (about a third of the queries)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the generated transforms (default: the published one)."),
    out: Path = typer.Option(Path("data/bench"), help="Where robustness.json, robustness.png and the work files go."),
    workers: int = typer.Option(2, min=1, help="Processes for fingerprinting and matching."),
    fit: bool = typer.Option(False, "--fit", help="Also refit the score calibration (on the calibration seed) and print the constants."),
    write_docs: bool = typer.Option(False, "--write-docs", help="Put this run's figures into the table in docs/performance.md."),
    held_out: bool = typer.Option(False, "--held-out", help="Run the split suite instead: random edits of held-out and tuning photos."),
    seeds: Optional[str] = typer.Option(None, help="With --held-out: seeds, comma-separated (default 101,202,303)."),
    variants: int = typer.Option(1, min=1, help="With --held-out: edits per reference, class and seed."),
    distractor_variants: int = typer.Option(1, min=1, help="With --held-out: edits per distractor photo, class and seed."),
    scale_refs: int = typer.Option(0, min=0, help="With --held-out: also plant the references among this many (synthetic) references..."),
    scale_queries: int = typer.Option(0, min=0, help="...and count false hits of this many unrelated queries against them."),
    part: Optional[str] = typer.Option(None, help="With --held-out: 'tuning' makes and matches the tuning part's queries only (choose thresholds on it)."),
) -> None:
    """Recall per transform class and precision, next to whole-image pHash; writes a PNG chart."""
    from copyhunt.bench import robustness
    from copyhunt.bench.suite import SUITE_SEED
    from copyhunt.demo_run import REPO_ROOT

    settings = _settings()
    out = settings.resolve(out)
    if held_out:
        _bench_held_out(settings, out, REPO_ROOT / "assets" / "images", seeds, variants, distractor_variants, workers, scale_refs, scale_queries,
                        write_docs, part)
        return
    report = robustness.run_robustness(settings, out, REPO_ROOT / "assets" / "images", seed if seed is not None else SUITE_SEED, quick, workers, progress_bar)
    _print_rows(robustness.format_table(report), f"robustness suite, seed {report.seed}: {report.copies} copies, {report.distractors} distractors")
    typer.echo(f"whole-image pHash at its best threshold for precision >= {robustness.TARGET_PRECISION}: <= {report.baseline_threshold} bits")
    for example in report.false_match_examples:
        typer.echo(f"false match: {example}")
    typer.echo(f"seconds: {report.seconds}")
    typer.echo(f"wrote {out / 'robustness.json'} and {out / 'robustness.png'}")
    if fit:
        evidence = robustness.calibration_evidence(settings, out, REPO_ROOT / "assets" / "images", workers=workers)
        constants = robustness.fit_calibration(evidence)
        typer.echo(f"calibration on {len(evidence)} window pairs ({int(evidence['copy'].sum())} of copies): {constants}")
    if not report.meets_targets():
        typer.echo("below target: precision >= 0.99 and recall >= 0.95 on every class")
    if write_docs:
        _write_docs("robustness" + (" --quick" if quick else ""), robustness.figures(report))


def _bench_held_out(settings, out: Path, assets: Path, seeds: Optional[str], variants: int, distractor_variants: int, workers: int,
                    scale_refs: int, scale_queries: int, write_docs: bool, part: Optional[str] = None) -> None:
    from copyhunt.bench import heldout
    from copyhunt.bench.photos import PARTS

    if part is not None and part not in PARTS:
        raise typer.BadParameter(f"--part is one of {', '.join(PARTS)}")
    if part is not None and write_docs:
        raise typer.BadParameter("--write-docs publishes both parts: run without --part")

    try:
        seed_list = [int(x) for x in seeds.split(",")] if seeds else list(heldout.HELD_OUT_SEEDS)
    except ValueError:
        raise typer.BadParameter("--seeds takes integers separated by commas, e.g. 101,202,303")
    if bool(scale_refs) != bool(scale_queries):
        raise typer.BadParameter("--scale-refs and --scale-queries go together, e.g. --scale-refs 100000 --scale-queries 10000")
    report = heldout.run_heldout(settings, out, assets, seed_list, variants, distractor_variants, workers, scale_refs=scale_refs,
                                 scale_queries=scale_queries, progress=progress_bar, parts=[part] if part else PARTS)
    _print_rows(heldout.format_table(report), f"held-out robustness suite, seeds {','.join(map(str, report.seeds))}")
    typer.echo(f"whole-image pHash threshold chosen on the tuning part (precision >= {heldout.TARGET_PRECISION}): <= {report.phash_threshold} bits")
    typer.echo(f"note: {report.note}")
    for name, p in report.precision.items():
        for example in p.false_examples:
            typer.echo(f"false match ({name}): {example}")
    for name, reason in report.unusable.items():
        typer.echo(f"unusable query (counted as missed if a copy): {name}: {reason}")
    if report.scale:
        typer.echo(f"note: {report.scale['note']}")
    typer.echo(f"seconds: {report.seconds}")
    if part is not None:
        typer.echo(f"wrote {out / f'robustness-{part}.json'} (the {part} part only)")
        return
    typer.echo(f"wrote {out / 'robustness-held-out.json'} and {out / 'robustness-held-out.png'}")
    if not report.meets_targets():
        typer.echo(f"below target: held-out recall >= {heldout.TARGET_RECALL} per class (chains {heldout.TARGET_CHAIN_RECALL}), "
                   f"precision >= {heldout.TARGET_PRECISION}, <= {heldout.TARGET_FALSE_PER_10K} false hit per 10,000 unrelated")
    if write_docs:
        _write_docs("robustness held-out", heldout.figures(report))


@bench_app.command("scale")
def bench_scale(
    refs: str = typer.Option("100000,300000,1000000", help="Index sizes in references, comma-separated."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write one object per size measured to this file."),
    stream_images: int = typer.Option(300, min=20, help="Found images matched at each size."),
    out: Path = typer.Option(Path("data/bench"), help="Where scale.json and the work files go."),
    write_docs: bool = typer.Option(False, "--write-docs", help="Put this run's figures into the table in docs/performance.md."),
) -> None:
    """Build and match at growing index sizes: build time and memory, bytes per reference, worker memory, matches/s per core; a projection to 10M."""
    import json

    from copyhunt.bench import scale
    from copyhunt.registry import REPO_ROOT

    try:
        sizes = tuple(int(x) for x in refs.split(","))
    except ValueError:
        raise typer.BadParameter("--refs takes integers separated by commas, e.g. 100000,300000")
    if min(sizes) < 100:
        raise typer.BadParameter("--refs takes index sizes of at least 100 references")
    settings = _settings()
    out = settings.resolve(out)
    report = scale.run_scale(settings, out, REPO_ROOT / "assets" / "images", sizes, stream_images, log=lambda m: console.print(m))
    _print_rows(scale.format_table(report), f"reference scale (load average at start {report.load_average})")
    if report.model:
        typer.echo(f"projection: {report.model}")
    if json_out is not None:
        from copyhunt.lake import atomic_write_bytes

        atomic_write_bytes(json_out, json.dumps(scale.json_list(report), indent=1).encode())
        typer.echo(f"wrote {json_out}")
    typer.echo(f"wrote {out / 'scale.json'}")
    if write_docs:
        _write_docs("scale", scale.figures(report))


@bench_app.command("throughput")
def bench_throughput(
    quick: bool = typer.Option(False, "--quick", help="Smaller indexes (1k and 10k references) and fewer images."),
    sizes: Optional[str] = typer.Option(None, help="Index sizes in references, comma-separated (default 10000,100000)."),
    out: Path = typer.Option(Path("data/bench"), help="Where throughput.json, throughput.png and the work files go."),
    write_docs: bool = typer.Option(False, "--write-docs", help="Put this run's figures into the table in docs/performance.md."),
) -> None:
    """Fingerprints/s against naive pHash, matches/s at 10k and 100k references, index build, end to end."""
    from copyhunt.bench import throughput
    from copyhunt.demo_run import REPO_ROOT

    try:
        index_sizes = tuple(int(x) for x in sizes.split(",")) if sizes else None
    except ValueError:
        raise typer.BadParameter("--sizes takes integers separated by commas, e.g. 10000,100000")
    if index_sizes is not None and (len(index_sizes) != 2 or min(index_sizes) < 20):
        raise typer.BadParameter("--sizes takes two index sizes of at least 20 references")
    settings = _settings()
    out = settings.resolve(out)
    report = throughput.run_throughput(settings, out, REPO_ROOT / "assets" / "images", quick, index_sizes, log=lambda m: console.print(m))
    _print_rows(throughput.format_table(report), f"throughput (load average at start {report.load_average})")
    for note in report.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"wrote {out / 'throughput.json'} and {out / 'throughput.png'}")
    if write_docs:
        _write_docs("throughput" + (" --quick" if quick else ""), throughput.figures(report))


@index_app.command("build")
def index_build(
    images: Path = typer.Option(..., exists=True, file_okay=False, help="Folder of reference images; id = file name without extension."),
    out: Path = typer.Option(..., help="Index directory (created)."),
    shard_size: Optional[int] = typer.Option(None, help="Entries per Annoy shard."),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Build an empty index from a folder without images instead of refusing."),
    as_json: bool = json_flag(),
) -> None:
    """Fingerprint a folder of reference images and build (or extend) an Annoy index."""
    from copyhunt import standalone
    from copyhunt.index import IndexNotUsable, check_index

    settings = _settings()
    _output_dir(out, "--out")
    if out.is_dir() and any(out.iterdir()):
        try:
            check_index(out)  # a folder with files in it is extended only if it is an index
        except IndexNotUsable:
            fail(f"index build refused: {out} holds files but is not a copyhunt index; give a new or empty folder, or an index to extend", 2)
    try:
        result = standalone.build_index_from_folder(images, out, shard_size or settings.shard_size, settings, progress_bar, allow_empty)
    except standalone.NoImages as exc:
        fail(f"index build refused: {exc} (--allow-empty builds an empty index)", 2)
    if as_json:
        return print_json({**result, "out": str(out)})
    _print_facts(f"index version {result['version']} in {out}", [
        ("references", f"{result['references']:,}"),
        ("unusable references", f"{result['errors']:,}" + (f" (reasons in {out / 'references.parquet'})" if result["errors"] else "")),
        ("shards", f"{result['shards']:,} ({result['built']:,} built, {result['reused']:,} reused)"),
    ])


@index_app.command("compact")
def index_compact(
    index_dir: Optional[Path] = typer.Option(None, "--index-dir", help="Index directory (default: the customer index in the lake)."),
    shard_size: Optional[int] = typer.Option(None, help="Entries per Annoy shard (default: the configured shard_size)."),
    as_json: bool = json_flag(),
) -> None:
    """Merge the current version's small shards into full ones and make the result current.

    The customer_index DAG does this itself once more than index_max_small_shards small shards
    pile up; hunts use the compacted version from the next customer_index run on."""
    from copyhunt.index import IndexNotUsable, compact_index

    settings = _settings()
    target = index_dir or settings.index_root
    try:
        result = compact_index(target, shard_size or settings.shard_size)
    except IndexNotUsable as exc:
        fail(str(exc), 2)
    if as_json:
        return print_json({"index_dir": str(target), "version": result.version, "shards": len(result.shards), "merged": len(result.merged),
                           "built": len(result.built), "dropped_entries": result.dropped_entries})
    _print_facts(f"index version {result.version} in {target}", [
        ("shards", f"{len(result.shards):,}"),
        ("small shards merged", f"{len(result.merged):,} into {len(result.built):,} new"),
        ("entries dropped", f"{result.dropped_entries:,}"),
    ])


@app.command()
def match(
    index: Path = typer.Option(..., exists=True, file_okay=False, help="Index directory from 'copyhunt index build'."),
    images: Path = typer.Option(..., exists=True, file_okay=False, help="Folder of images to search for copies."),
    out: Path = typer.Option(..., help="Parquet file: one row per match."),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Write an empty result for a folder without images instead of refusing."),
    as_json: bool = json_flag(),
) -> None:
    """Match every image in a folder against an index (Spark, configured master)."""
    from copyhunt import standalone

    from copyhunt.index import IndexNotUsable

    settings = _settings()
    _output_file(out, "--out")
    try:
        n, unusable = standalone.match_folder(index, images, out, settings, progress_bar, allow_empty)
    except (IndexNotUsable, standalone.NoImages) as exc:
        fail(f"match refused: {exc}", 2)
    errors_file = out.with_suffix(".errors.parquet")
    if as_json:
        return print_json({"matches": n, "out": str(out), "unusable": unusable, "errors_file": str(errors_file) if unusable else None})
    console.print(f"{n} matches written to {out}", markup=False)
    if unusable:
        reasons = ", ".join(f"{reason} {count}" for reason, count in unusable.items())
        console.print(f"{sum(unusable.values())} images could not be used ({reasons}): listed in {errors_file}", markup=False)


STAGES = ["register", "fingerprint_references", "build_index", "crawl", "fingerprint", "match", "enrich", "price", "load", "digest"]


@app.command()
def stage(
    name: str = typer.Argument(..., help="One of: " + ", ".join(STAGES)),
    run_date: Optional[str] = typer.Option(None, help="Partition date YYYY-MM-DD (default today)."),
) -> None:
    """Run one pipeline stage for a run date, outside Airflow (same code the DAG tasks call)."""
    from copyhunt.audit import record_run_facts
    from copyhunt.lake import IntegrityError

    settings = _settings()
    d = _run_date(run_date)
    try:
        result = _run_stage(name, settings, d)
        record_run_facts(settings, d)  # as the DAG's tasks do: stamp and seal the manifest
    except IntegrityError as exc:
        fail(f"{name} refused: {exc}")  # it names the file and both sha256
    except FileNotFoundError as exc:  # an input partition of that date is missing: an earlier stage has not run
        fail(f"{name} refused: {exc}; run the stages before it for {d} first")
    print_json(result)


def _run_stage(name: str, settings, d: dt.date) -> dict:
    from copyhunt import references
    from copyhunt.hunt import daily_stage
    from copyhunt.stages.fingerprint import fingerprint

    if name == "register":
        result = references.register_stage(settings, d)
    elif name == "fingerprint_references":
        result = {"path": str(references.fingerprint_references(settings, d, progress_bar))}
    elif name == "build_index":
        result = references.build_reference_index(settings, d)
    elif name == "fingerprint":
        result = fingerprint(settings, d, progress_bar)
    elif name in STAGES:
        with console.status(f"{name} {d}"):
            result = daily_stage(name)(settings, d)
    else:
        raise typer.BadParameter(f"unknown stage {name!r}; one of {', '.join(STAGES)}")
    return result


@app.command()
def summary(run_date: Optional[str] = typer.Option(None, help="Run date YYYY-MM-DD (default today)."), as_json: bool = json_flag()) -> None:
    """Print what a run crawled, matched and loaded, and where its outputs are."""
    from sqlalchemy.exc import SQLAlchemyError

    from copyhunt.hunt import summary as run_summary
    from copyhunt.lake import Lake

    settings, d = _settings(), _run_date(run_date)
    manifest = Lake(settings.lake).manifest_path(d)
    if not manifest.exists():
        fail(f"no run for {d}: {manifest} does not exist (run 'copyhunt demo' or the daily_hunt DAG for that date)")
    try:
        found = run_summary(settings, d)
    except SQLAlchemyError as exc:
        fail(f"cannot read the hits database {settings.database_url}: {str(exc).splitlines()[0]}")
    if as_json:
        return print_json(found)
    print_summary(found)


def print_summary(s: dict) -> None:
    out = Console()
    table = Table(title=f"copyhunt run {s['run_date']}", show_header=False)
    for key in ("pages", "images", "crawl_errors", "matches"):
        table.add_row(key.replace("_", " "), str(s[key]))
    for customer, n in sorted(s["hits_per_customer"].items()):
        table.add_row(f"hits: {customer}", str(n))
    table.add_row("hits database", s["database"])
    table.add_row("lake", s["lake"])
    table.add_row("run manifest", s["manifest"])
    table.add_row("digests", f"{s['digests']} ({len(s['digest_files'])} e-mails)")
    out.print(table)


@app.command("airflow")
def airflow_local(
    port: int = typer.Option(8080, help="Port of Airflow's UI and API server."),
    web_port: int = typer.Option(8899, help="Port of the demo web (the crawler's proxy)."),
) -> None:
    """Run Airflow locally (airflow standalone) on this project's DAGs, with the demo web, until Ctrl-C."""
    from copyhunt.airflow_local import run_local_airflow

    raise typer.Exit(run_local_airflow(_settings(), port, web_port, log=console.print))


@app.command()
def scaling(
    run_date: str = typer.Option(..., help="A finished run whose timings the model is fitted to."),
    workers: str = typer.Option("2,8,32", help="Worker counts to project, comma-separated."),
) -> None:
    """Project the daily run's time for larger crawls and indexes from a measured run."""
    from copyhunt.scaling import fit, project

    try:
        model = fit(_settings(), _run_date(run_date))
    except (ValueError, FileNotFoundError) as exc:
        fail(f"scaling: {exc}")
    out = Console()
    out.print(f"fitted on {model.images} images, {model.pages} pages, {model.index_entries} index entries: "
              f"crawl {model.crawl_per_page * 1000:.1f} ms/page, fingerprint {model.fingerprint_per_image * 1000:.1f} ms/image, "
              f"match {model.match_per_image * 1000:.1f} ms/image, fixed {model.fixed_seconds:.0f} s")
    table = Table(title="projected daily run (hours)")
    table.add_column("images/day")
    table.add_column("index entries")
    ws = [int(w) for w in workers.split(",")]
    for w in ws:
        table.add_column(f"{w} workers")
    for n in (10_000, 100_000, 1_000_000, 10_000_000):
        for r in (10_000, 1_000_000, 10_000_000):
            rows = project(model, [n], [r], ws)
            table.add_row(f"{n:,}", f"{r:,}", *[("" if p["fits_in_a_day"] else "[red]") + f"{p['hours']:.2f}" for p in rows])
    out.print(table)


@app.command("init-data")
def init_data(directory: Path = typer.Argument(..., help="Data directory of a deployment (e.g. the compose volume /data).")) -> None:
    """Seed a deployment's data directory with a customers file and a seeds file, if absent."""
    from copyhunt.demo_run import REPO_ROOT

    directory.mkdir(parents=True, exist_ok=True)
    customers = directory / "customers.toml"
    if not customers.exists():
        customers.write_text((REPO_ROOT / "demo" / "customers.toml").read_text())
    seeds = directory / "seeds.txt"
    if not seeds.exists():
        seeds.write_text("# One start URL per line; the daily crawl begins here.\n")
    typer.echo(f"{customers}\n{seeds}")


@app.command()
def replay(
    run_date: str = typer.Option(..., help="The run date to replay (YYYY-MM-DD)."),
    from_stage: str = typer.Option("fingerprint", help="First stage to recompute: fingerprint, match, enrich or price."),
    out: Optional[Path] = typer.Option(None, help="Where to recompute (default data/replay/run_date=D)."),
    as_json: bool = json_flag(),
) -> None:
    """Recompute a past run from its Parquet snapshot and compare every output with its manifest."""
    from copyhunt.audit import replay as run_replay

    settings = _settings()
    try:
        report = run_replay(settings, _run_date(run_date), from_stage, out, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    except (ValueError, FileNotFoundError) as exc:
        fail(f"replay: {exc}", 2)
    if as_json:
        print_json({**dataclasses.asdict(report), "ok": report.ok, "checks": [{**dataclasses.asdict(c), "equal": c.equal} for c in report.checks]})
        raise typer.Exit(0 if report.ok else 1)
    out_console = Console()
    if report.snapshot_problems:
        out_console.print("[red]the snapshot does not match its manifest:[/red]")
        for problem in report.snapshot_problems:
            out_console.print(f"  - {problem}")
        raise typer.Exit(1)
    table = Table(title=f"replay of {report.run_date} into {report.out_dir}")
    for col in ("stage", "dataset", "rows", "sha256 equal"):
        table.add_column(col)
    for c in report.checks:
        table.add_row(c.stage, c.dataset, str(c.rows), "[green]yes[/green]" if c.equal else "[red]NO[/red]")
    out_console.print(table)
    if not report.code_version_matches:
        out_console.print("[yellow]note: the code version differs from the one recorded for this run[/yellow]")
    raise typer.Exit(0 if report.ok else 1)


@audit_app.command("verify")
def audit_verify(
    run_date: Optional[str] = typer.Option(None, help="One run date YYYY-MM-DD."),
    date_from: Optional[str] = typer.Option(None, "--from", help="First run date of a range (with --to)."),
    date_to: Optional[str] = typer.Option(None, "--to", help="Last run date of a range (with --from)."),
    as_json: bool = json_flag(),
) -> None:
    """Check run dates' stored snapshots: every partition against its manifest, every referenced
    blob, the index files used, the manifest's signature and chain link. Exit 1 on any difference."""
    from copyhunt.audit import verify_run
    from copyhunt.lake import Lake

    settings = _settings()
    if run_date and (date_from or date_to):
        raise typer.BadParameter("give --run-date or --from/--to, not both")
    if run_date:
        dates = [_run_date(run_date)]
    elif date_from and date_to:
        first, last = _run_date(date_from), _run_date(date_to)
        if last < first:
            raise typer.BadParameter("--to is before --from")
        root = Lake(settings.lake).root / "_manifests"
        present = sorted(_run_date(p.name.split("=", 1)[1]) for p in root.glob("run_date=*")) if root.exists() else []
        dates = [d for d in present if first <= d <= last]
        if not dates:
            fail(f"no run date with a manifest between {first} and {last}")
    else:
        raise typer.BadParameter("give --run-date, or --from and --to")
    findings = [f for d in dates for f in verify_run(settings, d)]
    bad = sum(1 for f in findings if f.problem)
    if as_json:
        print_json({"run_dates": [d.isoformat() for d in dates], "differences": bad, "findings": [dataclasses.asdict(f) for f in findings]})
        raise typer.Exit(1 if bad else 0)
    table = Table(title=f"audit of {', '.join(d.isoformat() for d in dates)}")
    for col in ("run date", "check", "what", "result"):
        table.add_column(col, overflow="fold")
    for f in findings:
        table.add_row(f.run_date, f.check, f.subject, f"[red]{escape(f.problem)}[/red]" if f.problem else f"[green]ok[/green] {escape(f.detail)}")
    Console(width=200).print(table)
    Console().print(f"{bad} difference(s)" if bad else "no differences", markup=False)
    raise typer.Exit(1 if bad else 0)


@audit_app.command("keygen")
def audit_keygen(rotate: bool = typer.Option(False, "--rotate", help="Replace the signing key; its public key is kept.")) -> None:
    """Make the ed25519 key that signs run manifests (the configured manifest_key_file)."""
    from copyhunt.sealing import create_key

    settings = _settings()
    try:
        kid = create_key(settings.manifest_key_path, replace=rotate)
    except FileExistsError as exc:
        fail(str(exc))
    typer.echo(f"key {kid} in {settings.manifest_key_path} (public key {settings.manifest_key_path.parent / (kid + '.pub')})")


@app.command()
def report(run_date: Optional[str] = typer.Option(None, help="Run date YYYY-MM-DD (default today).")) -> None:
    """Print a run's report: figures and durations per stage, errors by reason, manifest facts."""
    from copyhunt.runlog import run_report

    typer.echo(json.dumps(run_report(_settings(), _run_date(run_date)), indent=2, sort_keys=True, default=str))


@app.command()
def demo(
    run_date: Optional[str] = typer.Option(None, help="Run date YYYY-MM-DD (default today)."),
    port: int = typer.Option(0, help="Port for the demo web (0: any free port)."),
) -> None:
    """Serve the demo web, run customer_index and daily_hunt with 'airflow dags test', print a summary."""
    from copyhunt.demo_run import run_demo

    settings = _settings()
    _check_customers_file(settings)
    with _listening("127.0.0.1", port):
        summary = run_demo(settings, _run_date(run_date), port=port, log=console.print)
    print_summary(summary)


def _hits_engine(settings):
    """The hits database (the registry), migrated to the current schema and seeded from the
    customers file where there is one (seeding again adds nothing)."""
    from copyhunt import registry
    from copyhunt.hitsdb.store import create_schema, make_engine

    engine = make_engine(settings.database_url)
    create_schema(engine)
    if settings.customers_path.exists():
        registry.seed_from_file(engine, settings)
    return engine


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Serve the customer inbox (web pages and the JSON API at /api/hits) with uvicorn."""
    import uvicorn

    from copyhunt.inbox.app import create_app

    settings = _settings()
    engine = _hits_engine(settings)
    console.print(f"copyhunt inbox on http://{host}:{port}/ (database {engine.url.render_as_string(hide_password=True)})")
    uvicorn.run(create_app(settings, engine), host=host, port=port, log_level="info", proxy_headers=True)


@customers_app.command("add")
def customers_add(
    customer_id: str = typer.Argument(..., help="A stable id: letters, digits, '.', '_' or '-'."),
    email: str = typer.Option(..., help="Where the daily digest goes."),
    name: Optional[str] = typer.Option(None, help="The customer's name (default: the id)."),
) -> None:
    """Add a customer to the registry (or change its e-mail and name)."""
    from copyhunt import registry

    engine = _hits_engine(_settings())
    try:
        created = registry.add_customer(engine, customer_id, email, name)
    except ValueError as exc:
        fail(f"customer refused: {exc}")
    finally:
        engine.dispose()
    typer.echo(f"customer {customer_id} {'added' if created else 'updated'}")


@customers_app.command("list")
def customers_list(as_json: bool = json_flag()) -> None:
    """The registry's customers with their number of images (not counting withdrawn ones)."""
    from copyhunt import registry

    engine = _hits_engine(_settings())
    try:
        rows = registry.list_customers(engine)
    finally:
        engine.dispose()
    if as_json:
        return print_json(rows)
    _print_rows([["id", "name", "e-mail", "images"]] + [[r["id"], r["name"], r["email"], str(r["images"])] for r in rows], "customers")


@images_app.command("add")
def images_add(
    customer_id: str = typer.Argument(..., help="The customer the images belong to."),
    paths: list[Path] = typer.Argument(..., help="Image files, folders of them, or ZIP archives.", metavar="FILE_OR_DIR..."),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Succeed when the folders given hold no files, instead of refusing."),
    as_json: bool = json_flag(),
) -> None:
    """Register images for a customer, one result line per file; they are searched from the next index build."""
    from copyhunt import registry

    settings = _settings()
    engine = _hits_engine(settings)
    try:
        results = registry.add_files(engine, settings, customer_id, paths)
    except LookupError as exc:
        fail(str(exc).strip("'\""))
    finally:
        engine.dispose()
    if not results and not allow_empty:
        fail(f"no files in {', '.join(map(str, paths))} (--allow-empty accepts that)", 2)
    counts = _print_results(results, as_json)
    if counts["rejected"]:
        raise typer.Exit(1)


def _print_results(results, as_json: bool = False) -> dict[str, int]:
    """One line per registered file, then the counts (or all of it as JSON); returns the counts."""
    counts = {s: sum(1 for r in results if r.status == s) for s in ("created", "existing", "rejected")}
    if as_json:
        print_json({"results": [dataclasses.asdict(r) for r in results], **counts})
        return counts
    for r in results:
        if r.status == "rejected":
            typer.echo(f"{r.filename}: rejected: {r.reason}")
        else:
            near = f" (looks like your image {r.near_duplicate_of})" if r.near_duplicate_of else ""
            typer.echo(f"{r.filename}: {r.status} as {r.image_id}{near}")
    typer.echo(", ".join(f"{n} {s}" for s, n in counts.items()))
    return counts


@images_app.command("import")
def images_import(
    customer_id: str = typer.Argument(..., help="The customer whose website it is."),
    url: str = typer.Argument(..., help="The address of the customer's portfolio or shop.", metavar="URL"),
) -> None:
    """Crawl the customer's website with the crawler's rules, register the images found on it, and add its domain to their own sites."""
    from copyhunt.site_import import ImportFailed, import_site

    settings = _settings()
    engine = _hits_engine(settings)
    try:
        outcome = import_site(engine, settings, customer_id, url, actor="cli")
    except (ImportFailed, LookupError) as exc:
        fail(f"import failed: {str(exc).strip(chr(39) + chr(34))}")
    finally:
        engine.dispose()
    typer.echo(f"{outcome.pages} page(s) of {outcome.domain} read")
    _print_results(outcome.results)
    typer.echo(f"{outcome.domain} is one of {customer_id}'s own sites")


@sites_app.command("add")
def sites_add(
    customer_id: str = typer.Argument(..., help="The customer whose site it is."),
    domain: str = typer.Argument(..., help="A domain (or an address on it): its uses and its subdomains' are authorised.", metavar="DOMAIN"),
    note: Optional[str] = typer.Option(None, help="Why, e.g. 'our agency'."),
) -> None:
    """Add an own site of a customer; its open hits become approved uses, with a history entry."""
    from copyhunt.coverage import add_own_site

    engine = _hits_engine(_settings())
    try:
        added = add_own_site(engine, customer_id, domain, "cli", "cli", note)
    except (ValueError, LookupError) as exc:
        fail(f"own site refused: {str(exc).strip(chr(39) + chr(34))}")
    finally:
        engine.dispose()
    typer.echo(f"{added.domain} {'added' if added.added else 'was listed already'}; {added.hits_authorised} hit(s) now approved uses")


@sites_app.command("list")
def sites_list(customer_id: str = typer.Argument(..., help="The customer whose own sites to list."), as_json: bool = json_flag()) -> None:
    """A customer's own sites: domain, how it was added, when, and the note."""
    from copyhunt.coverage import list_own_sites

    engine = _hits_engine(_settings())
    try:
        rows = list_own_sites(engine, customer_id)
    finally:
        engine.dispose()
    if as_json:
        return print_json(rows)
    _print_rows([["domain", "source", "added", "note"]]
                + [[r["domain"], r["source"], r["added_at"].strftime("%Y-%m-%d %H:%M"), r["note"] or ""] for r in rows],
                f"own sites of {customer_id}")


@sites_app.command("remove")
def sites_remove(
    customer_id: str = typer.Argument(..., help="The customer whose own site it is."),
    domain: str = typer.Argument(..., help="The domain as listed.", metavar="DOMAIN"),
) -> None:
    """Take a domain off a customer's own sites (hits approved because of it keep their status)."""
    from copyhunt.coverage import remove_own_site

    engine = _hits_engine(_settings())
    try:
        removed = remove_own_site(engine, customer_id, domain.strip().lower())
    finally:
        engine.dispose()
    if not removed:
        fail(f"{domain} is not an own site of {customer_id}")
    typer.echo(f"{domain} removed")


@images_app.command("list")
def images_list(customer_id: str = typer.Argument(..., help="The customer whose images to list."), as_json: bool = json_flag()) -> None:
    """A customer's images: id, title, size, source, when added, and whether withdrawn."""
    from copyhunt import registry

    engine = _hits_engine(_settings())
    try:
        rows = registry.list_images(engine, customer_id)
    finally:
        engine.dispose()
    if as_json:
        return print_json(rows)
    table = [["image", "title", "size", "source", "added", "state"]]
    for r in rows:
        size = f"{r['width']}x{r['height']}" if r["width"] else ""
        added = r["uploaded_at"].strftime("%Y-%m-%d %H:%M") if r["uploaded_at"] else ""
        state = "withdrawn" if r["withdrawn_at"] else ("looks like " + r["near_duplicate_of"] if r["near_duplicate_of"] else "searched")
        table.append([r["image_id"], r["title"] or "", size, r["source_kind"] or "", added, state])
    _print_rows(table, f"images of {customer_id}")


@images_app.command("thumbnails")
def images_thumbnails() -> None:
    """Make the library thumbnails of images registered before uploads made them (idempotent)."""
    from copyhunt import registry

    settings = _settings()
    engine = _hits_engine(settings)
    try:
        made = registry.backfill_thumbnails(engine, settings)
    finally:
        engine.dispose()
    typer.echo(f"{made} thumbnail{'s' if made != 1 else ''} made")


@customers_app.command("token")
def customers_token(
    customer_id: str = typer.Argument(..., help="The customer's id, as in the customers file."),
    label: Optional[str] = typer.Option(None, help="A note on what the token is for."),
) -> None:
    """Make an inbox/API access token for a customer and print it (only a hash is stored)."""
    from copyhunt.hitsdb.tokens import UnknownCustomer, issue_token

    engine = _hits_engine(_settings())
    try:
        token = issue_token(engine, customer_id, label)
    except (UnknownCustomer, ValueError) as exc:
        fail(str(exc).strip("'\""))
    finally:
        engine.dispose()
    console.print("Give this token to the customer; it is shown only once.")
    typer.echo(token)


@customers_app.command("revoke")
def customers_revoke(key_id: str = typer.Argument(..., help="The token's key id: the part after 'cht_'.")) -> None:
    """Revoke an access token; browsers signed in with it are signed out."""
    from copyhunt.hitsdb.tokens import revoke_token

    engine = _hits_engine(_settings())
    try:
        if not revoke_token(engine, key_id):
            fail(f"no active token with key id {key_id!r}")
    finally:
        engine.dispose()
    console.print(f"token {key_id} revoked")


# Placeholders in --help: typer labels every option with its Python type ("<str>", "<int>");
# a person reads what to type instead.
METAVAR_BY_NAME = {"run_date": "YYYY-MM-DD", "date_from": "YYYY-MM-DD", "date_to": "YYYY-MM-DD"}
METAVAR_BY_TYPE = {"int": "N", "float": "NUMBER", "Path": "PATH", "str": "TEXT", "datetime": "YYYY-MM-DD"}


def readable_metavars(command) -> None:
    """Give every option and argument of ``command`` and its subcommands a plain placeholder."""
    for param in command.params:
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: None  # its placeholder says it; no "<str>" after it
        if param.metavar or getattr(param, "is_flag", False) or param.param_type_name not in ("option", "argument"):
            continue
        if param.param_type_name == "argument":
            param.metavar = (param.name or "value").upper()
        else:
            kind = param.bare_type() if hasattr(param, "bare_type") else ""
            param.metavar = METAVAR_BY_NAME.get(param.name or "") or METAVAR_BY_TYPE.get(kind.removeprefix("list[").removesuffix("]"), "VALUE")
    for sub in getattr(command, "commands", {}).values():
        readable_metavars(sub)


def main() -> None:
    command = typer.main.get_command(app)
    readable_metavars(command)
    command()


if __name__ == "__main__":
    sys.exit(main())
