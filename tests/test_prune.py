"""zoofusion.prune: the private caches the workspace keys are kept, every other entry goes."""

from __future__ import annotations

import numpy as np
import torch

from conftest import ROOT, make_params
from zoofusion import prune
from zoofusion.io import save_npz


def test_prune_keeps_what_the_workspace_keys_and_deletes_the_rest(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    params = make_params({})
    for d in ("black", "cat"):
        save_npz(tmp_path / "data/prepared" / f"{d}.npz", images=np.zeros((2, 32, 32, 3), np.uint8),
                 labels=np.array([0, 1]))
        for harvest in ("raw", "aligned"):
            (tmp_path / "data/kernels" / harvest).mkdir(parents=True, exist_ok=True)
            torch.save({"d": d, "h": harvest}, tmp_path / "data/kernels" / harvest / f"{d}.pt")
    live = prune.live_entries(params, tmp_path)
    assert len(live) == 2 + 3  # a zoo folder per domain; study conv1 + conv2, aligned pair
    for p in live:
        (p.mkdir(parents=True) if p.parent.name == "zoo" else (p.parent.mkdir(parents=True, exist_ok=True),
                                                                p.write_bytes(b"ckpt")))
    stale = [tmp_path / "data/cache/zoo/black-0123456789ab", tmp_path / "data/cache/cyclegan/study-conv1-old.ckpt"]
    stale[0].mkdir()
    (stale[0] / "shard_00000-00007.pt").write_bytes(b"old")
    stale[1].write_bytes(b"old")

    assert prune.main(["--dry-run"]) == 0
    assert all(p.exists() for p in [*live, *stale])
    assert capsys.readouterr().out.splitlines()[-1] == "prune: 2 stale cache entries found"
    assert prune.main([]) == 0
    assert all(p.exists() for p in live) and not any(p.exists() for p in stale)
    # a changed param keys other entries: what the old params keyed is now stale
    other = make_params({"zoo": {"epochs": 3}})
    assert {p for p in live if "zoo" in p.parts} & prune.live_entries(other, tmp_path) == set()
