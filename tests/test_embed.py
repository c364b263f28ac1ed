"""`embed` gives one answer on any input: repeated feature rows (a near-dead network) included.

Identical rows once made UMAP's embedding differ from fit to fit even with a seed (umap's layout of the
disconnected zero-distance cliques drew from scipy ARPACK's unseeded generator). The UMAP fits run in two fresh
processes at once (umap import + numba JIT ~25 s each), so the pytest process itself never imports umap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoofusion.core.protocol import _distinct_rows, embed

KW = dict(standardize=True, n_neighbors=15, min_dist=0.1, n_components=2, metric="euclidean", n_epochs=None, seed=0)
SRC = Path(__file__).resolve().parents[1] / "src"


def repeated(n: int, k: int, seed: int) -> np.ndarray:
    """n rows drawn from k distinct 8-d rows (two groups of distinct values, no noise), every value repeated."""
    r = np.random.default_rng(seed)
    vals = r.normal(size=(k, 8))
    vals[: k // 2] += 4.0
    idx = np.r_[np.arange(k), r.integers(0, k, n - k)]  # every distinct row at least once
    return vals[r.permutation(idx)]


def test_distinct_rows_first_appearance_order_and_inverse():
    a, b, c = [1.0, 2.0], [0.0, 5.0], [-3.0, 1.0]
    x = np.array([b, a, b, c, a, c, c])
    first, inverse = _distinct_rows(x)
    assert first.tolist() == [0, 1, 3]  # b, a, c in order of appearance (np.unique alone sorts: c, b, a)
    assert inverse.tolist() == [0, 1, 0, 2, 1, 2, 2]
    np.testing.assert_array_equal(x[first][inverse], x)


def test_distinct_rows_all_distinct_is_identity():
    x = np.random.default_rng(0).normal(size=(9, 3))
    first, inverse = _distinct_rows(x)
    assert first.tolist() == list(range(9)) and inverse.tolist() == list(range(9))


def test_few_distinct_rows_give_zero_embedding_with_warning(caplog):
    # 5 distinct rows <= n_neighbors=15: nothing UMAP can embed (it would scatter at random); no umap import
    x = repeated(600, 5, seed=1)
    with caplog.at_level(logging.WARNING, logger="zoofusion.core.protocol"):
        ev, et = embed(x[:300], x[300:], **KW)
    assert ev.shape == (300, 2) and et.shape == (300, 2)
    assert not ev.any() and not et.any()
    assert "only 5 distinct val feature rows among 300" in caplog.text


# Run in a fresh process: a 600-row matrix with 40 distinct rows embedded twice, and distinct-row data embedded
# both by `embed` and by a plain umap call on the same standardised features.
SCRIPT = r"""
import sys, numpy as np
sys.path.insert(0, {tests!r})
from test_embed import KW, repeated
from zoofusion.core.protocol import embed
x = repeated(600, 40, seed=2)
rep1 = embed(x, None, **KW)[0]
rep2 = embed(x, None, **KW)[0]
tr1 = np.concatenate(embed(x[:250], x[250:], **KW))
d = np.random.default_rng(3).normal(size=(60, 6))
ours = embed(d, None, **KW)[0]
import umap
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
with threadpool_limits(1):
    plain = umap.UMAP(n_neighbors=15, min_dist=0.1, n_components=2, metric="euclidean", random_state=0,
                      n_jobs=1).fit_transform(StandardScaler().fit_transform(d))
    plain30 = umap.UMAP(n_neighbors=15, min_dist=0.1, n_components=2, metric="euclidean", n_epochs=30,
                        random_state=0, n_jobs=1).fit_transform(StandardScaler().fit_transform(d))
ours30 = embed(d, None, **{{**KW, "n_epochs": 30}})[0]
np.savez({out!r}, rep1=rep1, rep2=rep2, tr1=tr1, ours=ours, plain=np.asarray(plain, dtype=np.float64),
         ours30=ours30, plain30=np.asarray(plain30, dtype=np.float64))
"""


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> list[dict[str, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("embed")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    outs = [tmp / f"p{i}.npz" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT.format(tests=str(Path(__file__).parent), out=str(o))],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for o in outs]
    for p in procs:
        log_text, _ = p.communicate(timeout=300)
        assert p.returncode == 0, log_text[-3000:]
    return [dict(np.load(o)) for o in outs]


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_repeated_rows_embed_identically_across_fits_and_fresh_processes(two_processes):
    hashes = [sha(r[k]) for r in two_processes for k in ("rep1", "rep2")]
    assert len(set(hashes)) == 1, hashes
    emb, x = two_processes[0]["rep1"], repeated(600, 40, seed=2)
    assert np.isfinite(emb).all() and emb.shape == (600, 2)
    # every repeat of a row sits exactly on that row's point: 40 distinct points, one per distinct row
    first, inverse = _distinct_rows(x)
    np.testing.assert_array_equal(emb, emb[first][inverse])
    assert np.unique(emb, axis=0).shape[0] == 40
    # val fitted, test transformed: the same bytes in both processes too
    assert len({sha(r["tr1"]) for r in two_processes}) == 1


def test_without_repeats_embed_is_the_plain_umap_fit(two_processes):
    for r in two_processes:
        np.testing.assert_array_equal(r["ours"], r["plain"])


def test_n_epochs_reaches_umap(two_processes):
    # umap.n_epochs (params.yaml) is umap-learn's n_epochs: 30 gives umap's 30-epoch layout, not its default one
    for r in two_processes:
        np.testing.assert_array_equal(r["ours30"], r["plain30"])
        assert not np.allclose(r["ours30"], r["ours"])
