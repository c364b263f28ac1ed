"""`python -m zoofusion.prune [--dry-run]`: delete the private caches that the workspace does not use.

Zoo shards (data/cache/zoo/<domain>-<key>/) and CycleGAN checkpoints (data/cache/cyclegan/<variant>-<unit>-<key>.ckpt)
are keyed by params, data and code (`steps.zoo.cache_key`, `steps.cyclegan.checkpoint_path`), so every edit leaves
the old entries behind. This keeps exactly the entries that params.yaml, the data in data/prepared and data/kernels,
and the code of this checkout key today, which after `dvc repro` (or `dvc checkout`) are the ones dvc.lock's
outputs came from, and deletes the rest. Nothing else is touched; `--dry-run` only lists.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import zoofusion.layout as layout
from zoofusion.config import DOMAINS, VARIANTS, ConfigError, Params, load_params
from zoofusion.io import code_fingerprint, file_md5
from zoofusion.steps import cyclegan as gan_step
from zoofusion.steps import zoo as zoo_step

ZOO_CACHE = layout.ZOO_CACHE
GAN_CACHE = layout.GAN_CACHE


def live_entries(params: Params, root: Path) -> set[Path]:
    """The cache entries the workspace's params, data and code key."""
    device = params.torch_device()
    live = set()
    for d in DOMAINS:
        data = root / "data/prepared" / f"{d}.npz"
        if data.is_file():
            live.add(root / ZOO_CACHE / f"{d}-{zoo_step.cache_key(file_md5(data), params.zoo, params.seed, device)}")
    code = code_fingerprint(gan_step.CODE)
    for variant in VARIANTS:
        v = params.translation.variant(variant)
        files = gan_step.kernel_files(root / "data/kernels", v)
        if not all(f.is_file() for f in files):
            continue
        md5 = "".join(file_md5(f) for f in files)
        for unit in gan_step.unit_names(v):
            cfg = gan_step.make_config(params.cyclegan, v, params.seed, device, unit)
            live.add(gan_step.checkpoint_path(root / GAN_CACHE, f"{variant}-{unit}", cfg, md5, code))
    return live


def prune(params: Params, root: Path = Path("."), dry_run: bool = False) -> list[Path]:
    """Delete (or with `dry_run` only list) every cache entry outside `live_entries`; returns them."""
    live = live_entries(params, root)
    stale = sorted(p for cache in (root / ZOO_CACHE, root / GAN_CACHE) if cache.is_dir()
                   for p in cache.iterdir() if p not in live)
    if not dry_run:
        for p in stale:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        stale = prune(params, Path("."), args.dry_run)
    except ConfigError as e:
        print(f"prune: {e}", file=sys.stderr)
        return 1
    for p in stale:
        print(f"{'would delete' if args.dry_run else 'deleted'} {p}")
    print(f"prune: {len(stale)} stale cache entries {'found' if args.dry_run else 'deleted'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
