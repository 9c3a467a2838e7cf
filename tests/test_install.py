"""The install claims of pyproject.toml are true: Python and dependency bounds agree with the code, CI and bootstrap."""

from __future__ import annotations

import inspect
import platform
import re
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the lower bound is checked on the newer interpreters

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def check_version(current: str, spec: str) -> bool:
    from ultralytics.utils.checks import check_version as ultralytics_check

    return ultralytics_check(current, spec, hard=False, verbose=False)


def dependency_specs() -> dict[str, str]:
    """Distribution name -> version specifier of every required dependency."""
    specs = {}
    for requirement in PROJECT["dependencies"]:
        name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", requirement).groups()
        specs[name.lower()] = spec
    return specs


def pins(script: str) -> dict[str, str]:
    """Distribution name -> version pinned with ``name==version`` in a shell script of the repository."""
    return {n.lower(): v for n, v in re.findall(r"([A-Za-z0-9_.-]+)==([0-9][0-9A-Za-z.]*)", (ROOT / script).read_text())}


def test_requires_python_agrees_with_classifiers_and_this_interpreter():
    requires = PROJECT["requires-python"]
    lowest = re.fullmatch(r">=\s*(3\.\d+)", requires).group(1)
    versions = sorted(
        (c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"] if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)),
        key=lambda v: int(v.split(".")[1]),
    )
    assert versions and versions[0] == lowest, (versions, requires)
    assert check_version(platform.python_version(), requires)


def test_installed_dependencies_satisfy_the_declared_ranges():
    for name, spec in dependency_specs().items():
        assert check_version(metadata.version(name), spec), f"{name} {metadata.version(name)} does not satisfy {spec}"


@pytest.mark.parametrize("script", ["scripts/bootstrap.sh", ".ci/run"])
def test_pinned_versions_satisfy_the_declared_ranges(script):
    specs = dependency_specs()
    pinned = {name: version for name, version in pins(script).items() if name in specs}
    assert "torch" in pinned
    for name, version in pinned.items():
        assert check_version(version, specs[name]), f"{script} pins {name}=={version}, pyproject says {specs[name]}"


def test_lower_bounds_are_what_the_code_and_ci_need():
    import torch

    specs = dependency_specs()
    # bench.py exports with torch.onnx.export(dynamo=False): the keyword exists from torch 2.5
    assert "dynamo" in inspect.signature(torch.onnx.export).parameters
    assert check_version("2.5.0", specs["torch"]) and not check_version("2.4.1", specs["torch"])
    # the oldest Ultralytics release CI tests is the lower bound
    oldest = pins(".ci/run")["ultralytics"]
    assert check_version(oldest, specs["ultralytics"])
    assert not check_version(f"{oldest[:oldest.rindex('.')]}.{int(oldest.rsplit('.', 1)[1]) - 1}", specs["ultralytics"])
