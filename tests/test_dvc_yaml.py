"""dvc.yaml declares exactly what each stage reads: its code (followed through imports), its data, its params.

Static checks over the stage modules' source: every zoofusion module a stage imports (transitively, also inside
functions) lies in a declared dep; every declared code dep is imported; every data path the stage's code names
is a dep or an out; every `params.<key>` it reads is declared and every declared params key is read. A stage
that starts reading an undeclared file or key fails here instead of going stale silently.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

SRC = ROOT / "src"
PKG = SRC / "zoofusion"
DATA_PREFIXES = ("data/", "metrics/", "reports/")


def stages() -> dict[str, dict]:
    """dvc.yaml's stages with foreach expanded for one item (the declarations are the same per item)."""
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, st in doc.items():
        if "foreach" in st:
            item = st["foreach"][0]
            text = yaml.safe_dump(st["do"]).replace("${item}", item)
            out[f"{name}@{item}"] = yaml.safe_load(text)
        else:
            out[name] = st
    return out


def module_file(mod: str) -> Path | None:
    p = SRC / Path(*mod.split("."))
    if p.with_suffix(".py").is_file():
        return p.with_suffix(".py")
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return None


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zoofusion"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("zoofusion"))
    return {m for m in found if module_file(m)}


def closure(mod: str) -> set[Path]:
    seen, todo = set(), [mod]
    while todo:
        m = todo.pop()
        f = module_file(m)
        if f is None or f in seen:
            continue
        seen.add(f)
        todo += imports(f)
    return {f for f in seen if f.name != "__init__.py" or f.stat().st_size > 0}


def stage_module(st: dict) -> str:
    return re.search(r"python -m (zoofusion\.[\w.]+)", st["cmd"]).group(1)


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def own_code(files: set[Path]) -> set[Path]:
    """The stage-specific, non-core modules: where data paths and params reads live (layout.py defines every path;
    a stage names the ones it uses as `layout.<NAME>`)."""
    return {f for f in files if "core" not in f.parts and "render" not in f.parts and f.name != "layout.py"}


def layout_paths(tree: ast.AST) -> set[str]:
    """The paths a module uses from zoofusion.layout (`layout.<NAME>`), as strings."""
    import zoofusion.layout as layout

    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
             and n.value.id == "layout"}
    return {str(getattr(layout, a)) for a in names if isinstance(getattr(layout, a), Path)}


@pytest.mark.parametrize("name", list(stages()))
def test_code_deps_are_exactly_the_imported_modules(name):
    st = stages()[name]
    deps = [d for d in st["deps"] if d.startswith("src/")]
    used = {str(f.relative_to(ROOT)) for f in closure(stage_module(st))}
    missing = sorted(f for f in used if not covered(f, deps))
    assert not missing, f"{name}: imports code that dvc.yaml does not list as a dep: {missing}"
    unused = [d for d in deps if not any(covered(f, [d]) for f in used)]
    assert not unused, f"{name}: declares code deps it never imports: {unused}"
    # steps are listed file by file: a stage must not go stale when another stage's step changes
    assert "src/zoofusion/steps" not in [d.rstrip("/") for d in deps], f"{name}: list its steps/*.py, not the folder"


@pytest.mark.parametrize("name", list(stages()))
def test_data_paths_named_in_code_are_declared(name):
    st = stages()[name]
    declared = [d for d in st.get("deps", [])] + [o if isinstance(o, str) else next(iter(o))
                                                  for key in ("outs", "metrics", "plots") for o in st.get(key, [])]
    named, prefixes = set(), set()
    for f in own_code(closure(stage_module(st))):
        tree = ast.parse(f.read_text())
        named |= layout_paths(tree)
        in_fstring = {id(c) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for c in n.values}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(DATA_PREFIXES) \
                    and " " not in node.value:
                (prefixes if id(node) in in_fstring else named).add(node.value)
    undeclared_prefixes = sorted(p for p in prefixes if not any(d.startswith(p) for d in declared)
                                 and not covered(p, declared))
    assert not undeclared_prefixes, f"{name}: its code builds paths dvc.yaml does not declare: {undeclared_prefixes}"
    named = {n for n in named if not n.startswith("data/cache")}  # private, code-fingerprinted caches
    # a folder named in code (e.g. "metrics") is fine when the stage declares something under it
    undeclared = sorted(n for n in named if not covered(n, declared)
                        and not any(d.startswith(n.rstrip("/") + "/") for d in declared))
    assert not undeclared, f"{name}: its code reads or writes paths dvc.yaml does not declare: {undeclared}"


def params_read(files: set[Path]) -> set[str]:
    """Dotted keys of every `params.<a>.<b>...` chain in the code (`params.torch_device()` reads `device`)."""
    keys = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            chain, n = [], node
            while isinstance(n, ast.Attribute):
                chain.append(n.attr)
                n = n.value
            if isinstance(n, ast.Name) and n.id == "params":
                keys.add(".".join(reversed(chain)))
    keys = {"device" if k.startswith("torch_device") else k for k in keys}
    keys = {k for k in keys if k not in ("items", "keys", "values", "get")}  # a local dict named params
    # a method called on a section (e.g. `.model_dump()`) reads that section
    return {re.sub(r"\.(model_dump|umap_kwargs|method_params|core_kwargs|gamma|variant)$", "", k) for k in keys}


def overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


@pytest.mark.parametrize("name", [n for n in stages() if n != "validate"])
def test_params_declared_are_exactly_those_read(name):
    st = stages()[name]
    declared = [str(p) for p in st.get("params", [])]
    read = params_read(own_code(closure(stage_module(st))))
    undeclared = sorted(k for k in read if not any(overlaps(k, d) for d in declared))
    assert not undeclared, f"{name}: reads params dvc.yaml does not declare: {undeclared}"
    unread = sorted(d for d in declared if not any(overlaps(k, d) for k in read))
    assert not unread, f"{name}: declares params it never reads: {unread}"


def test_no_stage_imports_another_stage_and_core_imports_core_only():
    for f in (PKG / "stages").glob("*.py"):
        others = {m for m in imports(f) if m.startswith("zoofusion.stages.")}
        assert not others, f"{f.name} imports another stage: {others}"
    # one chain: the steps, the benchmark and every other module call steps, never a stage's shell
    for f in PKG.rglob("*.py"):
        if "stages" not in f.relative_to(PKG).parts:
            assert not {m for m in imports(f) if m.startswith("zoofusion.stages")}, f"{f} imports a stage"
    for f in (PKG / "core").rglob("*.py"):  # rglob: core/cyclegan/ is a package
        outside = {m for m in imports(f) if not m.startswith("zoofusion.core")}
        assert not outside, f"core/{f.relative_to(PKG / 'core')} imports outside core: {outside}"
    for f in (PKG / "render").glob("*.py"):
        bad = {m for m in imports(f) if not m.startswith(("zoofusion.core", "zoofusion.render"))}
        assert not bad, f"render/{f.name} imports {bad}"


def test_every_stage_module_has_a_dvc_stage():
    mods = {stage_module(st) for st in stages().values()}
    files = {f"zoofusion.stages.{f.stem}" for f in (PKG / "stages").glob("*.py") if f.stem != "__init__"}
    assert files == mods


def test_core_writes_no_files():
    """core/ is the science: tensors and arrays in and out; files, checkpoints and their schedules live in steps/."""
    io_calls = {"open", "write_text", "write_bytes", "savefig", "mkdir", "unlink", "rmtree", "replace", "makedirs"}
    for f in (PKG / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            base = fn.value.id if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) else ""
            file_io = name in io_calls or (base in ("torch", "np", "numpy", "pickle", "json") and name in (
                "save", "load", "savez", "savez_compressed", "dump"))
            assert not file_io, f"{f.relative_to(PKG)}:{node.lineno} calls {base + '.' if base else ''}{name}(): " \
                                "core writes (and reads) no files"


def test_dvc_yaml_paths_are_the_layouts():
    """Every data, metrics and reports path dvc.yaml declares is one of zoofusion.layout's (or inside one), and
    every path layout declares is used by some stage: the paths are defined in one module."""
    import zoofusion.layout as layout

    ours = [str(p) for p in layout.DECLARED]
    declared = set()
    for st in stages().values():
        for key in ("deps", "outs", "metrics", "plots"):
            for o in st.get(key, []):
                d = o if isinstance(o, str) else next(iter(o))
                if d.startswith(DATA_PREFIXES) and not d.startswith("data/source"):  # params data.path / labels
                    declared.add(d)
    strays = sorted(d for d in declared if not covered(d, ours))
    assert not strays, f"dvc.yaml declares paths zoofusion/layout.py does not define: {strays}"
    unused = sorted(p for p in ours if not any(covered(d, [p]) for d in declared))
    assert not unused, f"zoofusion/layout.py defines paths no stage declares: {unused}"
