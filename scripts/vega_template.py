"""An offline HTML template for `dvc plots show` / `dvc plots diff`: Vega, Vega-Lite and vega-embed inlined.

    python scripts/vega_template.py [--out data/cache/vega/offline_template.html] [--configure-dvc]
    dvc plots show --html-template data/cache/vega/offline_template.html

DVC's own page loads the three libraries from cdn.jsdelivr.net, so offline it stays blank. This script fetches
them from the npm registry once, at set-up time (`npm pack`, into a temporary folder; nothing is committed), and
writes a template with their minified builds (the files the CDN serves: each package's `jsdelivr` entry) in
<script> tags. The default output is under data/cache/, which git ignores. --configure-dvc also records the
template in .dvc/config.local (`plots.html_template`, per machine: a path there that does not exist on another
machine would break `dvc plots show`), so that a plain `dvc plots show` is offline.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "data" / "cache" / "vega" / "offline_template.html"
# The majors DVC's page uses (vega@5.20.2, vega-lite@5.2.0, vega-embed@6.18.2); vega-embed 6 has UMD builds that
# work from a plain <script>. Pinned by version and by the npm registry's sha512 of each package tarball
# (`npm view <name>@<version> dist.integrity`), so every machine inlines the same bytes or refuses.
PINNED = {"vega": ("5.33.1", "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw=="),
          "vega-lite": ("5.23.0", "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA=="),
          "vega-embed": ("6.29.0", "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==")}
PACKAGES = tuple(f"{name}@{version}" for name, (version, _) in PINNED.items())
# dvc_render fills a template by str.replace of these; `{scripts}` is left out on purpose, since DVC puts its
# CDN <script src> tags there.
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- {versions}: inlined by scripts/vega_template.py, so that the page needs no network -->
{libraries}
    <style>
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def fetch(packages=PACKAGES, npm: str = "npm", timeout: float = 300) -> dict[str, tuple[str, str]]:
    """{name: (version, minified build source)} of the npm packages, fetched with `npm pack`."""
    exe = shutil.which(npm)
    if not exe:
        raise RuntimeError(f"{npm} not found: apt-get install -y npm")
    libs = {}
    with tempfile.TemporaryDirectory(prefix="vega-npm-") as tmp:
        r = subprocess.run([exe, "pack", "--json", "--silent", *packages], cwd=tmp, capture_output=True, text=True,
                           timeout=timeout, check=False)
        if r.returncode:
            raise RuntimeError(f"npm pack {' '.join(packages)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        for pkg in json.loads(r.stdout):
            check_pinned(pkg["name"], pkg["version"], pkg["integrity"])
            with tarfile.open(Path(tmp) / pkg["filename"]) as tar:
                meta = json.load(tar.extractfile("package/package.json"))
                build = meta.get("jsdelivr") or meta["unpkg"]  # what cdn.jsdelivr.net/npm/<name>@<v> serves
                source = tar.extractfile("package/" + build.removeprefix("./")).read().decode("utf-8")
            libs[meta["name"]] = (meta["version"], source)
    return libs


def check_pinned(name: str, version: str, integrity: str) -> None:
    """The tarball npm fetched is the pinned version with the pinned checksum, or it is refused."""
    want = PINNED.get(name)
    if want is None or want != (version, integrity):
        raise RuntimeError(f"{name}@{version}: not the pinned package ({integrity[:20]}... from the registry); "
                           f"expected {name}@{want[0] if want else '?'} with {want[1][:20] if want else '?'}...; "
                           "update PINNED in scripts/vega_template.py only after checking the new release")


def render(libs: dict[str, tuple[str, str]]) -> str:
    """The template text: each library in its own <script>, in dependency order (vega-embed needs the others)."""
    scripts = []
    for name, (version, source) in libs.items():
        found = [p for p in PLACEHOLDERS if p in source]
        if found:  # DVC would replace it inside the library
            raise RuntimeError(f"{name}@{version} contains DVC's placeholder {found[0]}")
        # A literal "</script" would end the inline <script> early; "<\/" means the same in JavaScript strings.
        source = re.sub(r"</(script)", r"<\\/\1", source, flags=re.IGNORECASE)
        # The source map is not shipped: drop the comment that points at it (a DevTools fetch of a missing file).
        source = re.sub(r"^//# sourceMappingURL=.*$", "", source, flags=re.MULTILINE)
        scripts.append(f'    <script data-library="{name}@{version}">\n{source}\n    </script>')
    versions = ", ".join(f"{n}@{v}" for n, (v, _) in libs.items())
    return PAGE.format(libraries="\n".join(scripts), versions=versions, refresh_tag="{refresh_tag}",
                       plot_divs="{plot_divs}")


def build(out: Path = DEFAULT_OUT, packages=PACKAGES, npm: str = "npm", timeout: float = 300) -> dict[str, str]:
    """Fetch the libraries, write the template to `out` (atomically), return {name: version}."""
    libs = fetch(packages, npm, timeout)
    order = [p.rsplit("@", 1)[0] for p in packages]
    libs = {n: libs[n] for n in order}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render(libs), encoding="utf-8")
    tmp.replace(out)
    return {n: v for n, (v, _) in libs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"template path (default: {DEFAULT_OUT})")
    ap.add_argument("--npm", default="npm", help="npm executable")
    ap.add_argument("--configure-dvc", action="store_true",
                    help="set plots.html_template in .dvc/config.local of this repository to the template")
    args = ap.parse_args(argv)
    try:
        versions = build(args.out.resolve(), npm=args.npm)
    except (RuntimeError, OSError, subprocess.TimeoutExpired, KeyError) as e:
        print(f"vega_template: {e}", file=sys.stderr)
        return 1
    out = args.out.resolve()
    print(f"{out}: " + ", ".join(f"{n}@{v}" for n, v in versions.items()) + f" ({out.stat().st_size // 1024} KiB)")
    if args.configure_dvc:
        # DVC resolves a relative plots.html_template against .dvc/.
        rel = Path("..") / out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
        dvc = Path(sys.executable).with_name("dvc")
        subprocess.run([str(dvc) if dvc.exists() else "dvc", "config", "--local", "plots.html_template", str(rel)],
                       cwd=ROOT, check=True)
        print(f".dvc/config.local: plots.html_template = {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
