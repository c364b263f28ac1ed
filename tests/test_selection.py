"""Selection on val: the verdict metric per method, and ties broken by the seed, never by id order."""

import numpy as np
import pytest

from zoofusion.core.selection import VERDICT_METRIC, best_on_val, rank_on_val, rank_rows, select_key, tie_keys
from zoofusion.core.verdict import VERDICT_METRIC as VERDICTS_OWN


def test_one_place_decides_the_metric():
    assert VERDICTS_OWN is VERDICT_METRIC
    assert {m: select_key(m) for m in VERDICT_METRIC} == {
        "kmeans": "val/kmeans/auroc", "ocsvm": "val/ocsvm/auroc", "dbscan": "val/dbscan/ari",
        "kmeans_direct": "val/kmeans_direct/auroc", "ocsvm_direct": "val/ocsvm_direct/auroc",
        "dbscan_direct": "val/dbscan_direct/ari", "probe": "val/probe/auroc"}
    # selection covers every method of every arm the verdict compares
    from zoofusion.core.protocol import VERDICT_METHODS
    assert set(VERDICT_METRIC) == set(VERDICT_METHODS)
    with pytest.raises(ValueError, match="unknown method"):
        select_key("hdbscan")


def test_ties_resolve_by_seed_not_by_id_order():
    ids = [f"cand-{i:02d}" for i in range(20)]
    tied = np.full(len(ids), 0.5)
    winners = {ids[best_on_val(ids, tied, seed)] for seed in range(12)}
    assert len(winners) > 3  # the seed decides; "lowest id wins" would give cand-00 every time
    # the same seed gives the same winner whatever the order the candidates come in, and in any subset
    for seed in (0, 1, 42):
        w = ids[best_on_val(ids, tied, seed)]
        rev = ids[::-1]
        assert rev[best_on_val(rev, tied, seed)] == w
        sub = [i for i in ids if i != ids[0]] if w != ids[0] else ids
        assert w in sub and sub[best_on_val(sub, np.full(len(sub), 0.5), seed)] == w
    # the seeded order is a permutation, not id order
    order = rank_on_val(ids, tied, 42)
    assert sorted(order) == list(range(20)) and order != list(range(20))
    assert np.array_equal(tie_keys(ids, 7), tie_keys(ids, 7)) and not np.array_equal(tie_keys(ids, 7), tie_keys(ids, 8))


def test_higher_val_wins_and_nan_is_last():
    ids = ["a", "b", "c", "d"]
    assert rank_on_val(ids, [0.2, np.nan, 0.9, 0.5], 0)[:2] == [2, 3]
    assert rank_on_val(ids, [0.2, np.nan, 0.9, 0.5], 0)[-1] == 1
    rows = [{"id": i, "metrics": {"val/dbscan/ari": v, "test/dbscan/ari": -v}} for i, v in zip(ids, (0.1, 0.3, 0.2, 0))]
    assert [r["id"] for r in rank_rows(rows, "dbscan", 0)] == ["b", "c", "a", "d"]  # val decides, test never
    with pytest.raises(ValueError, match="no 'val/kmeans/auroc'"):
        rank_rows(rows, "kmeans", 0)
