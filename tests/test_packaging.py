"""conda.yaml (the `mlflow run` environment) and pyproject.toml cannot drift: the same requirements, string for
string, and a python pin that pyproject's requires-python admits."""

from __future__ import annotations

import re
import tomllib

from packaging.specifiers import SpecifierSet

from conftest import ROOT
from zoofusion.config import read_yaml


def _conda() -> tuple[list[str], list[str]]:
    """conda.yaml's conda dependencies and its pip list."""
    deps = read_yaml(ROOT / "conda.yaml")["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pips = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "conda.yaml: expected one `pip:` list"
    return conda, pips[0]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_conda_pip_list_is_pyprojects_dependencies():
    _, pip = _conda()
    assert "-e ." in pip  # the project itself, editable: a run executes the working tree
    reqs = [r for r in pip if r != "-e ."]
    deps = _project()["dependencies"]
    assert len(reqs) == len(set(reqs)), "conda.yaml lists a requirement twice"
    assert sorted(reqs) == sorted(deps), (f"only in conda.yaml: {sorted(set(reqs) - set(deps))}; "
                                          f"only in pyproject.toml: {sorted(set(deps) - set(reqs))}")


def test_conda_python_pin_is_allowed_by_requires_python():
    conda, _ = _conda()
    pins = [d for d in conda if re.match(r"python\s*[=<>]", d)]
    assert len(pins) == 1, f"conda.yaml: expected one python pin, got {pins}"
    m = re.fullmatch(r"python\s*=\s*(\d+\.\d+(?:\.\d+)?)", pins[0].split("#")[0].strip())
    assert m, f"conda.yaml: python pin {pins[0]!r} is not python=X.Y[.Z]"
    allowed = SpecifierSet(_project()["requires-python"])
    assert m.group(1) in allowed, f"conda.yaml pins python {m.group(1)}, pyproject requires-python {allowed}"
