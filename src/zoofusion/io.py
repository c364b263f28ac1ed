"""Files: atomic writes (one helper for files, one for folders), npz and JSON, md5s, the repository root,
and fingerprints of the code that decides a cached result."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a whole output folder in a temporary sibling, then swap it in (old content kept on failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write an .npz that np.load reads, byte-identical for identical arrays (fixed zip timestamps)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def save_torch(path: str | Path, obj: Any) -> None:
    """torch.save `obj` to `path` atomically, byte-identical for equal objects: torch names the archive's root
    folder after the file it writes (here a pid-stamped temporary), so serialise to memory (a fixed name) first."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the stage that makes it (`dvc repro`)")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def file_md5(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def repo_root() -> Path:
    """The project root: the nearest folder above the cwd holding dvc.yaml (else the cwd)."""
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "dvc.yaml").is_file():
            return p
    return here


PACKAGE = Path(__file__).resolve().parent


# Left out of code fingerprints (neither hashed nor followed): logging, progress output, MLflow tracking, figures
# and tables, and the command line decide how a result is reported, never its content — editing a log message
# must not retrain a zoo. A name covers its submodules.
FINGERPRINT_EXCLUDE: tuple[str, ...] = ("zoofusion.tracking", "zoofusion.console", "zoofusion.render",
                                        "zoofusion.cli")


def import_closure(module: str, *, exclude: tuple[str, ...] = FINGERPRINT_EXCLUDE,
                   package_root: Path | None = None) -> dict[str, Path]:
    """module name -> source file of every module of the package that `module` imports, directly or through
    other package modules, `module` itself and the packages (``__init__.py``) they sit in included.

    Found by parsing the sources with `ast`, so imports inside functions (the stages import lazily) count too;
    modules outside the package and those under `exclude` are not followed. Imports built at run time
    (importlib) are not seen. `package_root` is the package's folder (default: this zoofusion).
    """
    import ast

    root = Path(package_root) if package_root is not None else PACKAGE
    pkg = root.name

    def source(name: str) -> Path | None:
        base = root.joinpath(*name.split(".")[1:])
        for f in (base / "__init__.py", base.with_suffix(".py")):
            if f.is_file():
                return f
        return None

    def excluded(name: str) -> bool:
        return any(name == e or name.startswith(e + ".") for e in exclude)

    if (module != pkg and not module.startswith(pkg + ".")) or source(module) is None:
        raise FileNotFoundError(f"{module}: no such module in the {pkg} package at {root}")
    found: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in found or (excluded(name) and name != module):
            continue
        f = source(name)
        if f is None:  # `from pkg.mod import attr` where attr is not a module: the parent is already queued
            continue
        found[name] = f
        is_pkg = f.name == "__init__.py"
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        for node in _runtime_nodes(ast.parse(f.read_bytes(), filename=str(f))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] == pkg]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, one level up per extra dot
                    anchor = parts if is_pkg else parts[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base.split(".")[0] == pkg:
                    todo.append(base)
                    todo += [f"{base}.{a.name}" for a in node.names if a.name != "*"]  # submodules imported
    return found


def _runtime_nodes(tree):
    """Every node of `tree` except the bodies of `if TYPE_CHECKING:` (imports for annotations never run)."""
    import ast

    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
            continue
        todo += list(ast.iter_child_nodes(node))


def code_fingerprint(module: str, *, exclude: tuple[str, ...] = FINGERPRINT_EXCLUDE,
                     package_root: Path | None = None) -> str:
    """sha256 (first 16 hex) over the sources of :func:`import_closure` of `module` (relative path + bytes).

    Key a cache by the fingerprint of the module whose function computes the cached thing: an edit anywhere in the
    code it runs changes the key, so no cache serves results of other code, and reverting an edit gives the old
    key back. Edits to excluded modules (logging, tracking, rendering) keep the key.
    """
    root = Path(package_root) if package_root is not None else PACKAGE
    h = hashlib.sha256()
    for f in sorted(import_closure(module, exclude=exclude, package_root=root).values()):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]
