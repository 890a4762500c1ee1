"""The production set carries no test tools, and pyproject's dependencies are the pinned, installed ones."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
TEST_TOOLS = {"pytest", "pytest-timeout", "pytest-xdist", "selenium", "aiosmtpd", "trio"}


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "-r")):
            name, _, pinned = line.partition("==")
            assert pinned, f"{path.name}: {line!r} is not pinned with =="
            found[canonicalize_name(name)] = pinned
    return found


def test_the_runtime_set_has_no_test_tools_and_the_dev_set_builds_on_it():
    runtime, dev = pins(REPO / "requirements.txt"), pins(REPO / "requirements-dev.txt")
    assert not TEST_TOOLS & set(runtime)
    assert TEST_TOOLS - {"trio"} <= set(dev)
    assert not set(runtime) & set(dev), "a package pinned in both files"
    assert (REPO / "requirements-dev.txt").read_text().splitlines().count("-r requirements.txt") == 1


def test_pyproject_dependencies_are_pinned_to_versions_they_allow():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = pins(REPO / "requirements.txt")
    assert len(project["dependencies"]) >= 20
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in runtime, f"{req.name} is a dependency but not pinned in requirements.txt"
        assert req.specifier.contains(runtime[name]), f"{req.name}=={runtime[name]} is outside {spec!r}"
    for spec in project["optional-dependencies"]["test"]:
        assert canonicalize_name(Requirement(spec).name) in pins(REPO / "requirements-dev.txt")


def test_this_environment_has_the_pinned_versions():
    wrong = {}
    for name, pinned in {**pins(REPO / "requirements.txt"), **pins(REPO / "requirements-dev.txt")}.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong[name] = (pinned, installed)
    assert not wrong, f"pinned vs installed: {wrong}"
