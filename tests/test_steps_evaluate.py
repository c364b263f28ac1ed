"""evaluate's steps: the saved candidate pool, the saved per-image scores, the verdict from them, and tune reading
the pool instead of rebuilding it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_params
from zoofusion.core.candidates import CONV_KEYS, is_control, is_generated, kinds_of
from zoofusion.core.cnn import init_weights
from zoofusion.core.protocol import (ALL_METHODS, DIRECT_METHODS, SCORED_METHODS, UMAP_METHODS, VERDICT_METHODS,
                                    evaluate_features)
from zoofusion.core.scores import roc_auc
from zoofusion.core.seeds import derive_seed
from zoofusion.io import file_md5, load_npz, save_npz
from zoofusion.steps import candidates as steps_candidates
from zoofusion.steps.candidates import build_pool, features, load_pool
from zoofusion.steps.evaluate import headline, judge, replicate_arrays, verdict
from zoofusion.steps.scores import _compact_scores, best_on_val_ids, load_scores, load_seed_runs, score, umap_seed

VARIANTS = ("study", "aligned")
SEED = 5
BASELINES = make_params({}).evaluate.baselines  # the literature's baselines as params.yaml sets them
# params.yaml's clustering with a short UMAP layout: these tests check how scores are stored and read, not UMAP
CLUSTERING = make_params({"evaluate": {"clustering": {"umap": {"n_epochs": 30}}}}).evaluate.clustering
KINDS = kinds_of(VARIANTS, BASELINES.noise_sigmas)
UMAP_SEEDS = 2


def _stack(seeds: list[int], keys=CONV_KEYS) -> dict[str, torch.Tensor]:
    ws = [init_weights(s) for s in seeds]
    return {k: torch.stack([w[k] for w in ws]) for k in keys}


def make_inputs(root: Path) -> dict[str, Path]:
    """Tiny generate/kernels/control/val/test outputs: 4 generated (and 4 untrained-translated) models per variant,
    3 zoo models per domain (conv tensors and heads), 2 control LeNets."""
    paths = {}
    for j, v in enumerate(VARIANTS):
        f = paths[v] = root / f"data/generated/{v}/models.pt"
        f.parent.mkdir(parents=True)
        for name, base in (("models.pt", 100), ("untrained.pt", 700)):
            torch.save({**_stack([base * (j + 1) + i for i in range(4)]),
                        "ids": [f"{i // 2}/{'AB'[i % 2]}" for i in range(4)],
                        "source_domain": torch.tensor([i % 2 for i in range(4)]),
                        "source_index": torch.tensor([i // 2 for i in range(4)])}, f.parent / name)
        paths[f"untrained-{v}"] = f.parent / "untrained.pt"
    for i, d in enumerate(("black", "cat")):
        f = paths[d] = root / f"data/kernels/raw/{d}.pt"
        f.parent.mkdir(parents=True, exist_ok=True)
        torch.save({**_stack([50 + 10 * i + k for k in range(3)], (*CONV_KEYS, "fc.weight", "fc.bias")),
                    "model_index": torch.arange(3)}, f)
    f = paths["control"] = root / "data/control/weights.pt"
    f.parent.mkdir(parents=True)
    torch.save({"weights": _stack([900, 901], (*CONV_KEYS, "fc.weight", "fc.bias"))}, f)
    r = np.random.default_rng(0)
    for name, n in (("val", 45), ("test", 48)):
        labels = (np.arange(n) % 3 == 0).astype(np.int64)
        images = r.integers(0, 256, size=(n, 32, 32, 3)).astype(np.uint8)
        images[labels == 1] //= 4  # black cats are dark
        f = paths[name] = root / f"data/{name}.npz"
        save_npz(f, images=images, labels=labels, ids=np.arange(n))
    return paths


def pool_of(root: Path, paths: dict[str, Path], budget: int = 2):
    return build_pool({v: paths[v] for v in VARIANTS}, {d: paths[d] for d in ("black", "cat")},
                      root / "data/evaluate/candidates.pt", budget, SEED, BASELINES.noise_sigmas, BASELINES.average_k,
                      {v: paths[f"untrained-{v}"] for v in VARIANTS}, paths["control"])


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A pool of budget 1 (every kind once) scored on val and test."""
    root = tmp_path_factory.mktemp("ev")
    paths = make_inputs(root)
    pool = pool_of(root, paths, budget=1)
    out = root / "data/evaluate"
    rows, _ = score(pool, paths["val"], paths["test"], out / "scores.npz", out / "candidates.csv", CLUSTERING,
                    SEED, 64, 70, workers=1, umap_seeds=UMAP_SEEDS)
    return root, paths, pool, rows


def test_candidates_round_trip_weights_metadata_and_features(tmp_path):
    paths = make_inputs(tmp_path)
    built = pool_of(tmp_path, paths)
    f = tmp_path / "data/evaluate/candidates.pt"
    loaded = load_pool(f)
    assert [(c.id, c.kind, c.source_domain, c.source_index, c.seed) for c in loaded] == \
           [(c.id, c.kind, c.source_domain, c.source_index, c.seed) for c in built]
    assert {c.kind for c in loaded} == set(KINDS)
    for b, c in zip(built, loaded):
        for attr in ("weights", "weights2"):
            wb, wc = getattr(b, attr), getattr(c, attr)
            assert (wb is None) == (wc is None), (b.id, attr)
            if wb is not None:
                assert all(torch.equal(wb[k], wc[k]) and wc[k].dtype == torch.float32 for k in CONV_KEYS)
    # a random candidate's saved seed regenerates its weights
    r = next(c for c in loaded if c.kind == "random")
    assert r.seed == derive_seed(SEED, "baseline-random", 0)
    assert all(torch.equal(init_weights(r.seed)[k], r.weights[k]) for k in CONV_KEYS)
    images = load_npz(paths["val"])["images"]
    for a, b in zip(features(built, images, 64, 70), features(loaded, images, 64, 70)):
        np.testing.assert_array_equal(a, b)
    # only weights are saved, and the bytes are reproducible
    md5 = file_md5(f)
    pool_of(tmp_path, paths)
    assert file_md5(f) == md5
    assert f.stat().st_size < 2 * sum(4 * 2872 for c in loaded for w in (c.weights, c.weights2) if w is not None)
    assert [c.id for c in load_pool(f, ["pixels", "random-1"])] == ["pixels", "random-1"]
    with pytest.raises(ValueError, match="no candidate"):
        load_pool(f, ["random-9"])


def test_scores_hold_the_evaluations_per_image_scores(scored):
    root, paths, pool, rows = scored
    z = load_npz(root / "data/evaluate/scores.npz")
    assert z["score_test_kmeans"].dtype == np.float32 and z["clusters_test_dbscan"].dtype == np.int16
    loaded = load_scores(root / "data/evaluate/scores.npz")
    assert [r["id"] for r in loaded] == [c.id for c in pool]
    v, t = load_npz(paths["val"]), load_npz(paths["test"])
    c = CLUSTERING
    i = next(j for j, cand in enumerate(pool) if cand.kind == "generated-aligned")
    f = features([pool[i]], np.concatenate([v["images"], t["images"]]), 64, 70)[0]
    ev = evaluate_features(f[:45], v["labels"], f[45:], t["labels"], **c.umap_kwargs(), p=c.method_params(),
                           seed=derive_seed(SEED, "evaluate"))
    r = loaded[i]
    assert r["metrics"] == ev.metrics  # exact: float64
    for (split, method), labels in ev.clusters.items():
        np.testing.assert_array_equal(r["clusters"][f"{split}/{method}"], labels)
    for (split, method), s in ev.scores.items():
        np.testing.assert_allclose(r["scores"][f"{split}/{method}"], s, rtol=1e-6, atol=1e-6)
    # the stored scores rank the images as the Evaluation's: the same AUROC
    assert roc_auc(t["labels"], r["scores"]["test/kmeans"]) == ev.metrics["test/kmeans/auroc"]
    np.testing.assert_allclose(r["emb_test"], ev.emb_test, rtol=1e-6, atol=1e-6)


def test_verdict_from_saved_scores_equals_the_in_memory_one(scored, tmp_path):
    root, paths, pool, rows = scored
    e = make_params({"evaluate": {"n_boot": 100, "n_selected": 1}, "tune": {"top_models": 1}}).evaluate
    vp = make_params({}).verdict
    j = judge(root / "data/evaluate/scores.npz", paths["test"], tmp_path / "verdict.json", tmp_path / "selected.json",
              e, SEED, KINDS, val=paths["val"], vp=vp)
    assert j.comparisons == verdict(rows, load_npz(paths["test"])["labels"], 100, SEED, family=vp.secondary_family,
                                    alpha=vp.alpha)
    assert json.loads((tmp_path / "verdict.json").read_text()) == j.summary
    sel = json.loads((tmp_path / "selected.json").read_text())
    assert set(sel["by_kind"]) == {"generated-study", "generated-aligned"} and len(sel["selected"]) == 2
    assert set(sel["by_method"]) == set(VERDICT_METHODS) and sel["by_kind"] == sel["by_method"]["kmeans"]
    assert sel["select_metric"] == {"kmeans": "val/kmeans/auroc", "dbscan": "val/dbscan/ari", "ocsvm": "val/ocsvm/auroc",
                                    "kmeans_direct": "val/kmeans_direct/auroc", "probe": "val/probe/auroc",
                                    "dbscan_direct": "val/dbscan_direct/ari", "ocsvm_direct": "val/ocsvm_direct/auroc"}
    # the secondary family holds every arm's best-on-val comparisons, Holm-adjusted together
    assert {c.method for c in j.comparisons} == set(VERDICT_METHODS)
    assert sel["champion"] in sel["selected"]


def test_judge_writes_the_primary_endpoint_and_holm_adjusted_secondaries(scored, tmp_path):
    """The JSON contract: the primary endpoint (declared in params), its selection-aware interval with the
    sources included and left out, the breakdown and the MDD; every secondary comparison with p, p_holm and the
    adjusted outcome. Budget 1 here: one candidate per kind, so candidates cannot be resampled either."""
    root, paths, pool, rows = scored
    e = make_params({"evaluate": {"n_boot": 200}}).evaluate
    vp = make_params({"verdict": {"declared_in": "abc1234"}}).verdict
    j = judge(root / "data/evaluate/scores.npz", paths["test"], tmp_path / "verdict.json", tmp_path / "selected.json",
              e, SEED, KINDS, val=paths["val"], vp=vp)
    pr = json.loads((tmp_path / "verdict.json").read_text())["primary"]
    assert pr == j.primary
    assert {"metric", "method", "generated", "comparator", "difference", "low", "high", "se", "p", "sources",
            "not_included", "breakdown", "mdd", "power", "level", "outcome", "declared_in", "declaration"} <= set(pr)
    assert (pr["metric"], pr["method"], pr["declared_in"]) == ("auroc", "kmeans", "abc1234")
    assert pr["arm"] == "umap" and "arm" not in pr["declaration"]  # the declared primary is the study's protocol
    assert pr["generated"]["kind"].startswith("generated-") and pr["comparator"]["kind"] in pr["comparator"]["kinds"]
    # `all` is every rival: the controls (the positive control, the untrained translation) are left out
    assert set(pr["comparator"]["kinds"]) == {k for k in KINDS if not is_generated(k) and not is_control(k)}
    assert {"control-positive", "untrained-study", "head-A", "noise-0.1"} & set(pr["comparator"]["kinds"]) == \
        {"head-A", "noise-0.1"}
    # the stored UMAP seed runs (UMAP_SEEDS more of each kind's best-on-val candidates) enter the interval
    assert pr["sources"] == ["umap_replicates", "val_images", "test_images"] and set(pr["breakdown"]) == set(pr["sources"])
    assert set(pr["not_included"]) == {"pipeline_seeds", "candidates"}
    runs = load_seed_runs(root / "data/evaluate/scores.npz")
    assert pr["umap_runs"] == {"seeds": UMAP_SEEDS, "candidates_with_runs": len(runs["ids"]), "candidates": len(rows)}
    # the synthetic black cats are dark: most candidates separate them perfectly (test AUROC 1), so 0 can be exact
    assert pr["low"] <= pr["difference"] <= pr["high"] and pr["mdd"] >= 0
    assert pr["difference"] == round(pr["generated"]["test_value"] - pr["comparator"]["test_value"], 4) or \
        abs(pr["difference"] - (pr["generated"]["test_value"] - pr["comparator"]["test_value"])) < 2e-4
    for c in j.summary["comparisons"]:
        assert 0 <= c["p"] <= c["p_holm"] <= 1 and c["adjusted_outcome"] in ("generated", "baseline", "none")
        assert c["mean_p_holm"] is None  # the family: best-on-val comparisons only
    assert j.summary["secondary_family"]["hypotheses"] == len(j.summary["comparisons"])
    from zoofusion.registry import primary_metrics  # what the stage logs to the MLflow evaluate run

    m = primary_metrics(pr)
    assert m["primary/difference"] == pr["difference"] and m["primary/mdd"] == pr["mdd"]
    assert {k for k in m if "breakdown" in k} == {f"primary/breakdown/{s}/width" for s in pr["sources"]}


def test_compact_scores_keep_float64_where_float32_would_tie():
    a = np.array([[0.1, 0.2, 0.3], [1.0, 1.0 + 1e-12, 2.0]])
    assert _compact_scores(a).dtype == np.float64
    assert _compact_scores(a[:1]).dtype == np.float32


def test_tune_reads_the_saved_pool_without_generated_models_or_kernels(scored, tmp_path, monkeypatch):
    from zoofusion.core import candidates as core_candidates
    from zoofusion.steps.tune import tune, tuned

    root, paths, pool, rows = scored
    proj = tmp_path / "p"
    shutil.copytree(root / "data", proj / "data")
    shutil.rmtree(proj / "data/generated")
    shutil.rmtree(proj / "data/kernels")

    def no_rebuild(*a, **k):
        raise AssertionError("the pool was rebuilt")

    monkeypatch.setattr(core_candidates, "all_candidates", no_rebuild)
    monkeypatch.setattr(steps_candidates, "all_candidates", no_rebuild)
    ev = proj / "data/evaluate"
    judge(ev / "scores.npz", proj / "data/test.npz", ev / "verdict.json", ev / "selected.json",
          make_params({"evaluate": {"n_boot": 100}}).evaluate, SEED, KINDS, val=proj / "data/val.npz",
          vp=make_params({}).verdict)
    tp = make_params({"evaluate": {"n_selected": 1}, "tune": {"n_trials": 1, "top_models": 1, "methods": ["kmeans"],
                                                         "storage": f"sqlite:///{tmp_path / 'o.db'}", "workers": 1}}).tune
    (proj / "data/val_only").mkdir()
    shutil.move(proj / "data/test.npz", proj / "data/val_only/test.npz")  # tune must not need the test split
    best, metrics = tune(ev / "candidates.pt", ev / "candidates.csv", ev / "selected.json", proj / "data/val.npz",
                         proj / "data/tune/best_params.json", proj / "metrics/tune.json", tp, CLUSTERING,
                         SEED, 64, 70)
    cands = best["methods"]["kmeans"]["candidates"]
    assert {e["kind"] for e in cands.values()} == set(KINDS)
    assert json.loads((proj / "data/tune/best_params.json").read_text()) == best
    out = tuned(proj / "data/tune/best_params.json", ev / "candidates.pt", ev / "candidates.csv", proj / "data/val.npz",
                proj / "data/val_only/test.npz", proj / "data/tuned/tuned.csv", CLUSTERING, SEED, 64, 70)
    assert {r["Model"] for r in out} == set(cands)
    # the untuned configuration (trial 0) through tuned's protocol reproduces evaluate's test numbers
    by_id = {r["id"]: r for r in rows}
    for r in out:
        assert r["Test accuracy tuned"] == round(by_id[r["Model"]]["metrics"]["test/kmeans/accuracy"], 4)
    assert not (proj / "data/generated").exists() and not (proj / "data/kernels").exists()


def test_extra_umap_seed_runs_of_the_best_on_val_candidates_are_stored(scored):
    root, paths, pool, rows = scored
    runs = load_seed_runs(root / "data/evaluate/scores.npz")
    best = best_on_val_ids(rows, SEED)
    assert runs["best"] == {(k, m): i for k, m, i in best} and set(runs["ids"]) == {i for _, _, i in best}
    assert runs["seeds"] == [umap_seed(SEED, s) for s in (1, 2)] and umap_seed(SEED, 0) == derive_seed(SEED, "evaluate")
    v, t = load_npz(paths["val"]), load_npz(paths["test"])
    R = len(runs["ids"])
    for split, n in (("val", 45), ("test", 48)):
        for m in ("kmeans", "ocsvm"):
            assert runs[f"score_{split}_{m}"].shape == (R, UMAP_SEEDS, n)
        for m in ("kmeans", "dbscan", "ocsvm", "dbscan_val_eps"):
            assert runs[f"clusters_{split}_{m}"].shape == (R, UMAP_SEEDS, n)
    assert runs["metrics"].shape == (R, UMAP_SEEDS, len(runs["metric_keys"]))
    # one stored run is the protocol with that seed, exactly
    cid = runs["ids"][0]
    cand = next(c for c in pool if c.id == cid)
    c = CLUSTERING
    f = features([cand], np.concatenate([v["images"], t["images"]]), 64, 70)[0]
    # the extra seeds rerun the UMAP arm only (the other arms fit no UMAP)
    ev = evaluate_features(f[:45], v["labels"], f[45:], t["labels"], **c.umap_kwargs(), p=c.method_params(),
                           seed=runs["seeds"][1], methods=UMAP_METHODS)
    np.testing.assert_array_equal(runs["score_test_kmeans"][0, 1], ev.scores[("test", "kmeans")])
    np.testing.assert_array_equal(runs["clusters_test_dbscan"][0, 1], ev.clusters[("test", "dbscan")])
    assert dict(zip(runs["metric_keys"], runs["metrics"][0, 1])) == ev.metrics


def test_the_primary_bootstrap_draws_stored_umap_runs_only_where_a_candidate_has_them(scored):
    root, paths, pool, rows = scored
    runs = load_seed_runs(root / "data/evaluate/scores.npz")
    for split in ("val", "test"):
        for method, name in (("kmeans", "score"), ("dbscan", "clusters")):
            a = replicate_arrays(rows, runs, split, method)
            assert a.shape == (1 + UMAP_SEEDS, len(rows), len(rows[0]["clusters"][f"{split}/kmeans"]))
            for c, r in enumerate(rows):
                main = r["scores" if name == "score" else "clusters"][f"{split}/{method}"]
                np.testing.assert_array_equal(a[0, c], main)  # run 0: the main run
                if r["id"] in runs["ids"]:  # runs 1..S: the stored seed runs
                    np.testing.assert_array_equal(a[1:, c], runs[f"{name}_{split}_{method}"][runs["ids"].index(r["id"])])
                else:  # no stored run: drawing a run leaves the candidate as it is
                    assert all(np.array_equal(a[s, c], main) for s in range(1 + UMAP_SEEDS))
    assert replicate_arrays(rows, {"ids": [], "seeds": []}, "val", "kmeans") is None


def test_shuffling_test_labels_changes_no_selection_mapping_or_val_number(scored, tmp_path):
    """The whole scoring and selection path, run again with the test labels permuted: every val number, every
    test cluster, call and score, every selection (selected.json, the champion, the headline's best-on-val
    models, the extra seed runs' candidates) is unchanged; only test metrics may move."""
    root, paths, pool, rows = scored
    t = load_npz(paths["test"])
    shuffled = tmp_path / "test.npz"
    save_npz(shuffled, images=t["images"], labels=np.random.default_rng(1).permutation(t["labels"]), ids=t["ids"])
    out = tmp_path / "ev"
    rows2, _ = score(pool, paths["val"], shuffled, out / "scores.npz", out / "candidates.csv",
                     CLUSTERING, SEED, 64, 70, workers=1, umap_seeds=UMAP_SEEDS)
    for a, b in zip(rows, rows2):
        assert a["id"] == b["id"]
        # assert_equal: NaN equals NaN (a one-dimensional feature's no-UMAP DBSCAN has no eps)
        np.testing.assert_equal({k: v for k, v in a["metrics"].items() if k.startswith("val/")},
                                {k: v for k, v in b["metrics"].items() if k.startswith("val/")})
        for key in a["clusters"]:
            np.testing.assert_array_equal(a["clusters"][key], b["clusters"][key])
        for key in a["scores"]:
            np.testing.assert_array_equal(a["scores"][key], b["scores"][key])
        # every arm is stored and covered: the no-UMAP arm (a one-dimensional feature's val-chosen direction and
        # threshold give its scores and 0/1 calls, compared above) and the probe (cross-fitted on val)
        assert {k.split("/")[1] for k in a["clusters"]} == set(ALL_METHODS)
        assert {k.split("/")[1] for k in a["scores"]} == set(SCORED_METHODS)
    dark = [i for i, r in enumerate(rows) if r["kind"] == "darkness"]
    assert dark, "the darkness feature (one-dimensional) is in the pool"
    for m in DIRECT_METHODS:
        np.testing.assert_array_equal(rows[dark[0]]["clusters"][f"test/{m}"], rows2[dark[0]]["clusters"][f"test/{m}"])
    e = make_params({"evaluate": {"n_boot": 100, "n_selected": 2}}).evaluate
    vp = make_params({}).verdict
    j1 = judge(root / "data/evaluate/scores.npz", paths["test"], tmp_path / "v1.json", tmp_path / "s1.json", e, SEED,
               KINDS, val=paths["val"], vp=vp)
    j2 = judge(out / "scores.npz", shuffled, tmp_path / "v2.json", tmp_path / "s2.json", e, SEED, KINDS,
               val=paths["val"], vp=vp)
    # the primary endpoint's two sides are chosen on val too
    assert [j1.primary[s]["id"] for s in ("generated", "comparator")] == \
        [j2.primary[s]["id"] for s in ("generated", "comparator")]
    assert json.loads((tmp_path / "s1.json").read_text()) == json.loads((tmp_path / "s2.json").read_text())
    assert set(json.loads((tmp_path / "s1.json").read_text())["by_method"]) == set(VERDICT_METHODS)
    assert j1.champion == j2.champion
    assert [(c.generated_id, c.baseline_id) for c in j1.comparisons] == [(c.generated_id, c.baseline_id)
                                                                         for c in j2.comparisons]
    h1, h2 = headline(rows, j1.selected, KINDS, SEED), headline(rows2, j2.selected, KINDS, SEED)
    kinds = [k for k in KINDS if k in h1]
    assert kinds and {k: {m: h1[k][m]["best_on_val"] for m in h1[k]} for k in kinds} == \
        {k: {m: h2[k][m]["best_on_val"] for m in h2[k]} for k in kinds}
    r1, r2 = load_seed_runs(root / "data/evaluate/scores.npz"), load_seed_runs(out / "scores.npz")
    assert r1["ids"] == r2["ids"] and r1["best"] == r2["best"]
    np.testing.assert_array_equal(r1["score_val_ocsvm"], r2["score_val_ocsvm"])
