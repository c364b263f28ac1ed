"""scripts/vega_template.py: an HTML template for `dvc plots show` with Vega inlined, so plots render offline."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
LOSSES = ["0.912345", "0.512345", "0.312345"]  # distinctive values: they must reach the page's spec


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    vt = load_script("vega_template")
    out = tmp_path_factory.mktemp("vega") / "offline.html"
    try:
        vt.build(out, timeout=120)
    except (RuntimeError, subprocess.TimeoutExpired) as e:  # no npm, or the registry is unreachable
        pytest.skip(f"cannot fetch vega from npm: {e}")
    return out


@pytest.fixture(scope="module")
def plots_html(template: Path, tmp_path_factory) -> Path:
    """`dvc plots show --html-template` in a scratch DVC project with one plot over a CSV."""
    proj = tmp_path_factory.mktemp("dvcproj")
    dvc = str(Path(sys.executable).with_name("dvc"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=proj, env=env, check=True)
    (proj / "loss.csv").write_text("epoch,loss\n" + "".join(f"{i},{v}\n" for i, v in enumerate(LOSSES, 1)))
    (proj / "dvc.yaml").write_text("plots:\n  - loss.csv:\n      x: epoch\n      y: loss\n")
    subprocess.run([dvc, "plots", "show", "--html-template", str(template), "-o", "plots"], cwd=proj, env=env,
                   check=True, capture_output=True)
    return proj / "plots" / "index.html"


def test_template_has_libraries_and_dvc_placeholder(template: Path):
    text = template.read_text()
    assert "{plot_divs}" in text
    assert "{scripts}" not in text  # DVC would put its CDN <script src> tags there
    for name in ("vega", "vega-lite", "vega-embed"):
        assert re.search(rf'<script data-library="{name}@\d+\.\d+\.\d+">', text), name
    assert "sourceMappingURL" not in text


def test_dvc_plots_page_is_self_contained(plots_html: Path):
    html = plots_html.read_text()
    assert all(v in html for v in LOSSES)
    assert "vegaEmbed(" in html and 'data-library="vega-embed@' in html
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", html, re.IGNORECASE)
    assert "cdn.jsdelivr.net" not in html


@pytest.mark.slow
def test_dvc_plots_page_renders_offline(plots_html: Path, tmp_path: Path):
    pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium")
    ui = load_script("ui_screenshot")
    with ui.browser(str(CHROMIUM), 1000, 700, 1.0) as context:
        shot = ui.check_plots(context, plots_html, tmp_path)  # raises unless a chart is drawn with no http(s)
    assert shot.stat().st_size > 5000


def test_only_the_pinned_packages_are_inlined():
    """Version and checksum pinned: another release, or a tampered tarball, is refused before anything is written."""
    vt = load_script("vega_template")
    assert vt.PACKAGES == tuple(f"{n}@{v}" for n, (v, _) in vt.PINNED.items())
    name, (version, integrity) = next(iter(vt.PINNED.items()))
    vt.check_pinned(name, version, integrity)
    with pytest.raises(RuntimeError, match=f"^{name}@{version}: not the pinned package"):
        vt.check_pinned(name, version, "sha512-" + "A" * 86 + "==")
    with pytest.raises(RuntimeError, match=f"^{name}@9.9.9: not the pinned package"):
        vt.check_pinned(name, "9.9.9", integrity)
