"""Cache keys come from the code that computes: `code_fingerprint` hashes a module's import closure in the package.

Edits happen in a temporary copy of the package (`package_root`), never in src/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zoofusion.io import FINGERPRINT_EXCLUDE, PACKAGE, code_fingerprint, import_closure

ZOO = "zoofusion.steps.zoo"


@pytest.fixture()
def pkg(tmp_path) -> Path:
    root = tmp_path / "zoofusion"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def edit(f: Path, text: str = "\n# an edit\n") -> bytes:
    old = f.read_bytes()
    f.write_bytes(old + text.encode())
    return old


def test_zoo_closure_holds_the_training_code_and_not_the_reporting_code():
    c = set(import_closure(ZOO))
    assert {"zoofusion.core.train", "zoofusion.core.cnn", "zoofusion.core.seeds", "zoofusion.io",
            "zoofusion.executor", "zoofusion", "zoofusion.steps", ZOO} <= c
    assert not {m for m in c if m.startswith(("zoofusion.tracking", "zoofusion.console", "zoofusion.render",
                                              "zoofusion.cli", "zoofusion.config", "zoofusion.core.protocol"))}


def test_the_copy_has_the_same_fingerprint_as_the_package(pkg):
    # paths are hashed relative to the package root, so only the sources count
    assert code_fingerprint(ZOO, package_root=pkg) == code_fingerprint(ZOO)


def test_every_edit_in_the_closure_changes_the_key_and_its_revert_restores_it(pkg):
    base = code_fingerprint(ZOO, package_root=pkg)
    files = import_closure(ZOO, package_root=pkg)
    assert len(files) >= 9
    seen = {base}
    for name, f in files.items():
        old = edit(f)
        changed = code_fingerprint(ZOO, package_root=pkg)
        assert changed not in seen, f"editing {name} did not give a new key"
        seen.add(changed)
        f.write_bytes(old)
        assert code_fingerprint(ZOO, package_root=pkg) == base, f"reverting {name} did not restore the key"


@pytest.mark.parametrize("rel", ["render/tables.py", "render/kernel_grid.py", "tracking.py", "console.py", "cli.py",
                                 "stages/report.py", "stages/zoo.py", "core/verdict.py", "core/protocol.py",
                                 "config.py"])
def test_edits_outside_the_closure_keep_the_key(pkg, rel):
    base = code_fingerprint(ZOO, package_root=pkg)
    edit(pkg / rel, "\nlog_message = 'reworded'\n")
    assert code_fingerprint(ZOO, package_root=pkg) == base


def test_excluded_modules_are_a_constant_with_submodules_covered(pkg):
    assert set(FINGERPRINT_EXCLUDE) == {"zoofusion.tracking", "zoofusion.console", "zoofusion.render", "zoofusion.cli"}
    # without the exclusions, the stage's logging and figures are in its closure (stages/zoo.py imports them)
    stage = "zoofusion.stages.zoo"
    everything = set(import_closure(stage, exclude=(), package_root=pkg))
    assert {"zoofusion.tracking", "zoofusion.render.kernel_grid", "zoofusion.cli"} <= everything
    base = code_fingerprint(stage, exclude=(), package_root=pkg)
    edit(pkg / "render" / "kernel_grid.py")
    assert code_fingerprint(stage, exclude=(), package_root=pkg) != base


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_closure_follows_every_import_form_and_nothing_else(tmp_path):
    root = tmp_path / "zoofusion"
    _write(root, {
        "__init__.py": "",
        "a.py": ("import os\nimport numpy as np\nimport zoofusion.e as E\nfrom zoofusion import c\n"
                 "from zoofusion.sub import d_attr\nfrom zoofusion.tracking import log\n"
                 "def f():\n    from .b import g  # lazy, as the stages import\n    return g\n"
                 "from typing import TYPE_CHECKING\nif TYPE_CHECKING:  # annotations only: never runs\n"
                 "    from zoofusion import typed\nelse:\n    from zoofusion import h\n"),
        "b.py": "from . import c\ng = 1\n",
        "c.py": "",
        "e.py": "",
        "sub/__init__.py": "from .d import d_attr\nfrom ..f import *\n",
        "sub/d.py": "d_attr = 1\n",
        "f.py": "",
        "tracking.py": "from zoofusion import y\n",  # excluded: neither hashed nor followed
        "y.py": "",
        "unused.py": "",
        "typed.py": "",
        "h.py": "",
    })
    c = import_closure("zoofusion.a", package_root=root)
    assert set(c) == {"zoofusion", "zoofusion.a", "zoofusion.b", "zoofusion.c", "zoofusion.e", "zoofusion.sub",
                      "zoofusion.sub.d", "zoofusion.f", "zoofusion.h"}
    assert c["zoofusion.sub"] == root / "sub" / "__init__.py"
    assert "zoofusion.y" in import_closure("zoofusion.a", exclude=(), package_root=root)


def test_unknown_module_is_one_clear_error(pkg):
    with pytest.raises(FileNotFoundError, match="zoofusion.stages.nope: no such module in the zoofusion package"):
        code_fingerprint("zoofusion.stages.nope", package_root=pkg)
    with pytest.raises(FileNotFoundError, match="numpy: no such module"):
        code_fingerprint("numpy")
