"""docs/performance.md's figures table: a bench replaces its own rows and keeps everyone else's."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from copyhunt.bench.docs import BEGIN, END, Figure, _parse_rows, update_figures

REPO = Path(__file__).resolve().parents[1]


def table_rows(doc: Path) -> list[list[str]]:
    text = doc.read_text()
    return _parse_rows(text.split(BEGIN, 1)[1].split(END, 1)[0].splitlines())


def test_a_bench_replaces_only_its_own_rows(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Performance\n\nThe method, by hand.\n\n{BEGIN}\n{END}\n\n## More text\n")
    update_figures(doc, "throughput", [Figure("fingerprint", "2.0 ms", "naive 6.2 ms", ">= 3x"), Figure("build", "89 s")], dt.date(2026, 12, 1))
    update_figures(doc, "robustness", [Figure("recall | crop", "0.920", "pHash 0.1")], dt.date(2026, 12, 2), "2 cores")
    update_figures(doc, "throughput", [Figure("fingerprint", "1.9 ms")], dt.date(2026, 12, 3))

    rows = table_rows(doc)
    assert rows == [
        ["robustness", "recall | crop", "0.920", "pHash 0.1", "", "2026-12-02, 2 cores"],
        ["throughput", "fingerprint", "1.9 ms", "", "", "2026-12-03"],
    ]
    text = doc.read_text()
    assert "The method, by hand." in text and text.rstrip().endswith("## More text")
    assert text.count(BEGIN) == 1 and text.count(END) == 1


def test_a_document_without_the_table_is_refused_not_overwritten(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Someone's notes\n")
    with pytest.raises(ValueError, match="no figures table"):
        update_figures(doc, "throughput", [Figure("x", "1")], dt.date(2026, 12, 1))
    assert doc.read_text() == "# Someone's notes\n"


def test_the_repository_document_has_one_current_table_and_the_readme_no_figures():
    rows = table_rows(REPO / "docs" / "performance.md")
    assert rows and all(len(r) == 6 for r in rows)
    assert {r[0] for r in rows} >= {"throughput", "robustness"}
    readme = (REPO / "README.md").read_text()
    assert "docs/performance.md" in readme
    # A measured figure is a number with a unit of time, speed, size or ratio.
    figures = re.findall(r"\b\d+(?:[.,]\d+)?\s?(?:ms|s|x|MB|GB|KiB|GiB|/s|images/s)\b", readme)
    assert figures == [], f"measured figures in the README: {figures}"
