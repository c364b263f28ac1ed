"""README.md stays true to the code: its stage table names exactly the stages of dvc.yaml, and its code-layout
table names every module of src/zoofusion (and nothing that is not there)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from conftest import ROOT

PKG = ROOT / "src" / "zoofusion"


def table_after(heading: str) -> list[list[str]]:
    """The rows (cells as text) of the first Markdown table after the line `heading`."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(heading)
    rows, seen = [], False
    for line in lines[start + 1:]:
        if line.startswith("|"):
            seen = True
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                rows.append(cells)
        elif seen:
            break
    return rows[1:]  # without the header


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def dvc_stages() -> set[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = set()
    for name, body in stages.items():
        items = body.get("foreach")
        out |= {f"{name}@{i}" for i in items} if items else {name}
    return out


def test_stage_table_names_every_dvc_stage():
    listed = {n for row in table_after("## What it does") for n in
              names(row[0])}
    assert listed == dvc_stages(), f"README stage table: missing {dvc_stages() - listed}, extra {listed - dvc_stages()}"


def covered(entry: str, module: str) -> bool:
    """`core/cnn.py` names one file, `render/` a folder, `stages/<stage>.py` every file of a folder."""
    if "<" in entry:
        pattern = "[a-z_]+".join(re.escape(part) for part in re.split(r"<[^>]+>", entry))
        return re.fullmatch(pattern, module) is not None
    return module == entry or (entry.endswith("/") and module.startswith(entry))


def test_code_layout_table_names_every_module():
    entries = [n for row in table_after("### Code layout (`src/zoofusion/`)") for n in names(row[0])]
    modules = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if p.name != "__init__.py")
    for e in entries:
        target = PKG / re.sub(r"<[^>]+>.*", "", e)
        assert target.exists(), f"README code layout names {e}, which is not in src/zoofusion"
    # a folder whose files the table names one by one must have all of them named
    by_file = {str(Path(e).parent) for e in entries if e.endswith(".py") and "<" not in e}
    for m in modules:
        folder = str(Path(m).parent)
        matches = [e for e in entries if covered(e, m) and not (e.endswith("/") and folder in by_file)]
        assert matches, f"README code layout does not name {m}"


def section(heading: str) -> str:
    """The README's text from `heading` to the next heading of the same or a higher level."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n{heading}\n")
    level = heading.split()[0]
    ends = [m.start() for m in re.finditer(r"\n#{1,%d} " % len(level), text) if m.start() > start]
    return text[start:ends[0] if ends else len(text)]


def test_the_replication_numbers_quoted_are_those_of_reports_replication_json():
    """README numbers are produced, not typed: every number the replication section quotes is the committed
    reports/replication.json's (the file `make replicate` writes), in the format the section uses."""
    import json

    rep = json.loads((ROOT / "reports/replication.json").read_text())
    text = " ".join(section("## Replication across seeds").split())  # line breaks as spaces
    pe = rep["pooled"]["primary"]
    per = [s for s in rep["per_seed"] if "primary" in s["endpoints"]]
    quoted = [f"commit {rep['commit'][:7]}",
              f"per seed ({', '.join(str(s['seed']) for s in per)}): "
              + ", ".join(f"{s['endpoints']['primary']['difference']:+.3f}" for s in per),
              f"pooled {pe['mean']:+.3f}, sd {pe['sd']:.3f}, 95% t-interval [{pe['low']:+.3f}, {pe['high']:+.3f}]",
              f"one run detects {pe['mdd_one_run']:.3f}", f"the mean of {pe['k']} seeds {pe['mdd_pooled_mean']:.3f}"]
    missing = [q for q in quoted if q not in text]
    assert not missing, f"README's replication section does not quote reports/replication.json: {missing}"
