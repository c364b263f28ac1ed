"""The candidates of an evaluation: generated models and the baselines they are compared with, as conv weights.

Every candidate turns images into features the same way (400-d conv2 outputs; raw pixels for `pixels`), so the
protocol treats them identically. Generated models come in kinds, one per translation variant
(`generated-<variant>`, e.g. `generated-study`, `generated-aligned`); each kind, generated or baseline, gets the
same budget. Pure: tensors in, candidates and features out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from zoofusion.core.cnn import CONV_KEYS, batched_features, init_weights
from zoofusion.core.darkness import darkness
from zoofusion.core.seeds import derive_seed, rng

# the baselines every evaluation has; the literature's noise kinds follow, one per sigma (baseline_kinds)
BASELINE_KINDS = ("random", "zoo-A", "zoo-B", "average", "aligned", "concat", "pixels", "darkness", "avg-k", "gauss-fit")
KINDS = ("generated", *BASELINE_KINDS)  # with a single, unnamed translation and no noise kinds


def generated_kind(variant: str) -> str:
    """The kind of a translation variant's generated models: `generated-<variant>`."""
    return f"generated-{variant}"


def is_generated(kind: str) -> bool:
    return kind == "generated" or kind.startswith("generated-")


def noise_kind(sigma: float) -> str:
    """The kind of zoo models plus Gaussian noise at one relative sigma: `noise-<sigma>` (e.g. `noise-0.1`)."""
    return f"noise-{sigma:g}"


def baseline_kinds(noise_sigmas: Sequence[float]) -> tuple[str, ...]:
    """Every baseline kind of an evaluation whose noise grid is `noise_sigmas` (evaluate.baselines.noise_sigmas)."""
    return (*BASELINE_KINDS, *(noise_kind(s) for s in noise_sigmas))


def kinds_of(variants: tuple[str, ...] | list[str], noise_sigmas: Sequence[float]) -> tuple[str, ...]:
    """Every kind of an evaluation with these translation variants and noise grid: generated kinds first, then
    the baselines."""
    return (*(generated_kind(v) for v in variants), *baseline_kinds(noise_sigmas))


@dataclass
class Candidate:
    id: str
    kind: str
    source_domain: str = ""  # "A" (black zoo) or "B" (cat zoo) for generated and zoo models
    source_index: int = -1
    weights: dict[str, torch.Tensor] | None = None  # conv tensors of one model; None = not a CNN
    weights2: dict[str, torch.Tensor] | None = None  # a second model whose features are concatenated (`concat`)
    extra: dict = field(default_factory=dict)
    seed: int = -1  # the seed of a candidate's own random draw (random's init, noise, gauss-fit); -1 for the others


def budget_of(n_generated: int, budget: int) -> int:
    """Candidates per kind: `budget`, or every generated model when 0 (never more than there are)."""
    return n_generated if budget == 0 else min(budget, n_generated)


def _sample(n: int, k: int, seed: int, *tags) -> np.ndarray:
    """k of range(n) without replacement, sorted; all of them when k >= n."""
    if k >= n:
        return np.arange(n)
    return np.sort(rng(seed, *tags).choice(n, size=k, replace=False))


def generated_candidates(g: dict, budget: int, seed: int, kind: str = "generated",
                         prefix: str = "") -> list[Candidate]:
    """`budget` generated models (0 = all), a seeded sample over both source domains, ids `<prefix><id>`.

    The sample depends on the seed and the number of models only, so variants that translate the same source
    models get the same sources: their candidates are paired.
    """
    n = len(g["ids"])
    return [Candidate(prefix + g["ids"][i], kind, "AB"[int(g["source_domain"][i])], int(g["source_index"][i]),
                      {k: g[k][i] for k in CONV_KEYS}) for i in _sample(n, budget_of(n, budget), seed, "generated")]


def all_candidates(generated: dict[str, dict], kernels: dict[str, dict], budget: int, seed: int,
                   noise_sigmas: Sequence[float], average_k: int) -> list[Candidate]:
    """Every variant's generated candidates (kind `generated-<variant>`, ids `<variant>/<id>`), then the baselines,
    each kind with the same budget: `budget`, or (0) as many as the variants' generated models. noise_sigmas and
    average_k: the literature's baselines (:func:`literature_candidates`)."""
    k = budget_of(min(len(g["ids"]) for g in generated.values()), budget)
    out = []
    for variant, g in generated.items():
        out += generated_candidates(g, k, seed, generated_kind(variant), f"{variant}/")
    return out + baseline_candidates(kernels, k, seed, noise_sigmas, average_k)


def model_pairs(na: int, nb: int, k: int, seed: int) -> list[tuple[int, int]]:
    """k distinct (black model, cat model) pairs, seeded; shared by every kind built from two models."""
    flat = _sample(na * nb, k, seed, "pairs")
    return [(int(f // nb), int(f % nb)) for f in flat]


def baseline_candidates(kernels: dict[str, dict], k: int, seed: int, noise_sigmas: Sequence[float],
                        average_k: int) -> list[Candidate]:
    """The baselines with k candidates per kind (equal budgets; fewer only where fewer exist):

    random (PyTorch default init, untrained); zoo-A / zoo-B (untranslated zoo models, up to all kept ones);
    average (element-wise mean of a black and a cat model); aligned (the same pairs, the cat model's channels
    first permuted to match the black model by weight matching, Git Re-Basin, then averaged); concat (both
    models' features side by side, 800-d: the ensemble a merge tries to reach); and one each of the
    deterministic pixels (raw pixels) and darkness (fraction of dark pixels, the one-number "black" detector);
    then the literature's baselines (:func:`literature_candidates`: noise-<sigma>, avg-k, gauss-fit).
    """
    from zoofusion.core.align import align

    out = []
    for j in range(k):
        w = init_weights(derive_seed(seed, "baseline-random", j))
        out.append(Candidate(f"random-{j}", "random", weights={key: w[key] for key in CONV_KEYS},
                             seed=derive_seed(seed, "baseline-random", j)))
    black, cat = kernels["black"], kernels["cat"]
    na, nb = len(black["model_index"]), len(cat["model_index"])
    for d, letter, m in ((black, "A", na), (cat, "B", nb)):
        for j in _sample(m, k, seed, "zoo", letter):
            idx = int(d["model_index"][j])
            out.append(Candidate(f"zoo-{letter}-{idx}", f"zoo-{letter}", letter, idx,
                                 {key: d[key][j] for key in CONV_KEYS}))
    for ja, jb in model_pairs(na, nb, k, seed):
        ia, ib = int(black["model_index"][ja]), int(cat["model_index"][jb])
        wa = {key: black[key][ja] for key in CONV_KEYS}
        wb = {key: cat[key][jb] for key in CONV_KEYS}
        out.append(Candidate(f"avg-{ia}A-{ib}B", "average", weights={key: (wa[key] + wb[key]) / 2 for key in CONV_KEYS}))
        wb_aligned = align(wa, wb)
        out.append(Candidate(f"aligned-{ia}A-{ib}B", "aligned",
                             weights={key: (wa[key] + wb_aligned[key]) / 2 for key in CONV_KEYS}))
        out.append(Candidate(f"concat-{ia}A-{ib}B", "concat", weights=wa, weights2=wb))
    out.append(Candidate("pixels", "pixels"))
    out.append(Candidate("darkness", "darkness"))
    return out + literature_candidates(kernels, k, seed, noise_sigmas, average_k)


def literature_candidates(kernels: dict[str, dict], k: int, seed: int, noise_sigmas: Sequence[float],
                          average_k: int) -> list[Candidate]:
    """The weight-generation literature's baselines (Zeng, Yin, Xu & Liu 2025, arXiv 2506.07998) and our
    per-parameter Gaussian, exactly k candidates per kind (`core.baselines` holds the math):

    noise-<sigma> (one kind per sigma): a zoo model plus Gaussian noise of sigma times each tensor's own std;
    avg-k: the model and average_k - 1 other models of its zoo (seeded; average_k clipped to the zoo's size),
    aligned to it by weight matching and averaged; gauss-fit: a sample of the per-parameter Gaussian fitted to the
    model's zoo aligned to its first kept model (no source model: source_index -1). Candidate j of every kind
    starts from the same source model, a seeded permutation of both zoos pooled (so each zoo contributes in
    proportion to its size, like the generated sample, and the kinds are paired); past the pooled size the sources
    repeat, each with fresh randomness. Every sigma draws the same noise (seed per j): one direction, sigma sizes.
    One avg-k kind over both zoos rather than one per zoo, like the noise kinds and the generated side: the
    comparator picks the best on val anyway, and fewer kinds keep the Holm family small; source_domain says which.
    """
    from zoofusion.core.align import align_many
    from zoofusion.core.baselines import add_noise, average_aligned, fit_gaussian, generator, sample_gaussian

    zoos = {"A": kernels["black"], "B": kernels["cat"]}
    sizes = {letter: len(d["model_index"]) for letter, d in zoos.items()}
    pooled = [(letter, j) for letter in "AB" for j in range(sizes[letter])]
    order = rng(seed, "literature-sources").permutation(len(pooled))
    sources = [pooled[int(order[j % len(pooled)])] for j in range(k)]
    model = {letter: [{key: d[key][j] for key in CONV_KEYS} for j in range(sizes[letter])] for letter, d in zoos.items()}
    fits = {letter: fit_gaussian(align_many(model[letter][0], {key: d[key] for key in CONV_KEYS}))
            for letter, d in zoos.items() if letter in {s for s, _ in sources}}
    out = []
    for sigma in noise_sigmas:
        for j, (letter, i) in enumerate(sources):
            idx, s = int(zoos[letter]["model_index"][i]), derive_seed(seed, "noise", j)
            out.append(Candidate(f"{noise_kind(sigma)}-{j}-{letter}{idx}", noise_kind(sigma), letter, idx,
                                 add_noise(model[letter][i], sigma, generator(s)), seed=s))
    for j, (letter, i) in enumerate(sources):
        m = min(average_k, sizes[letter])
        others = [o for o in range(sizes[letter]) if o != i]
        picked = np.sort(rng(seed, "avg-k", j).choice(len(others), size=m - 1, replace=False))
        idx = int(zoos[letter]["model_index"][i])
        out.append(Candidate(f"avg-k-{j}-{letter}{idx}", "avg-k", letter, idx,
                             average_aligned([model[letter][i], *(model[letter][others[p]] for p in picked)])))
    for j, (letter, _) in enumerate(sources):
        s = derive_seed(seed, "gauss-fit", j)
        out.append(Candidate(f"gauss-fit-{j}-{letter}", "gauss-fit", letter, -1,
                             sample_gaussian(*fits[letter], generator(s)), seed=s))
    return out


def pack(cands: list[Candidate]) -> dict:
    """The candidates as plain tensors and lists (what `torch.load(weights_only=True)` reads back): metadata per
    candidate, and the conv tensors of every CNN stacked once (`weights` / `weights2`: a candidate's row, -1 for
    none). Float32 conv weights only, so the pool stays small whatever the number of images."""
    rows: list[dict[str, torch.Tensor]] = []

    def row(w: dict[str, torch.Tensor] | None) -> int:
        if w is None:
            return -1
        rows.append(w)
        return len(rows) - 1

    weights = [row(c.weights) for c in cands]
    weights2 = [row(c.weights2) for c in cands]
    conv = {k: (torch.stack([w[k] for w in rows]).to(torch.float32).contiguous() if rows
                else torch.empty(0)) for k in CONV_KEYS}
    return {"ids": [c.id for c in cands], "kinds": [c.kind for c in cands],
            "source_domain": [c.source_domain for c in cands],
            "source_index": torch.tensor([c.source_index for c in cands], dtype=torch.int64),
            "seed": torch.tensor([c.seed for c in cands], dtype=torch.int64),
            "weights": torch.tensor(weights, dtype=torch.int64), "weights2": torch.tensor(weights2, dtype=torch.int64),
            **conv}


def unpack(d: dict) -> list[Candidate]:
    """The candidates :func:`pack` packed (their conv tensors are rows of the packed stacks)."""
    missing = [k for k in ("ids", "kinds", "source_domain", "source_index", "seed", "weights", "weights2", *CONV_KEYS)
               if k not in d]
    if missing:
        raise ValueError(f"packed candidates lack {missing}; rebuild them (`dvc repro evaluate`)")

    def conv(r: int) -> dict[str, torch.Tensor] | None:
        return None if r < 0 else {k: d[k][r] for k in CONV_KEYS}

    return [Candidate(cid, kind, dom, int(si), conv(int(w)), conv(int(w2)), seed=int(s))
            for cid, kind, dom, si, s, w, w2 in zip(d["ids"], d["kinds"], d["source_domain"], d["source_index"],
                                                    d["seed"], d["weights"], d["weights2"])]


def compute_features(cands: list[Candidate], x: torch.Tensor, batch: int,
                     dark_luminance: int = 70) -> list[np.ndarray]:
    """Features of every candidate on the same preprocessed images x [N,3,32,32], batched across models."""
    feats: list[np.ndarray | None] = [None] * len(cands)
    conv = [(i, c.weights) for i, c in enumerate(cands) if c.weights is not None]
    conv += [(i, c.weights2) for i, c in enumerate(cands) if c.weights2 is not None]
    if conv:
        stacked = {k: torch.stack([w[k] for _, w in conv]) for k in CONV_KEYS}
        f = batched_features(stacked, x, batch_size=batch).numpy()
        for j, (i, _) in enumerate(conv):
            feats[i] = f[j] if feats[i] is None else np.concatenate([feats[i], f[j]], axis=1)
    for i, c in enumerate(cands):
        if c.kind == "pixels":
            feats[i] = x.reshape(len(x), -1).numpy()
        elif c.kind == "darkness":
            uint8 = np.rint((x.permute(0, 2, 3, 1).numpy() * 0.5 + 0.5) * 255).astype(np.uint8)
            feats[i] = darkness(uint8, dark_luminance)[:, None].astype(np.float32)
    return feats  # type: ignore[return-value]


def higher_is_better(metric_key: str) -> bool:
    return not metric_key.endswith("/entropy")


def rank(rows: list[dict], key: str) -> list[dict]:
    """Sort by one metric key, best first (entropy: lower is better); ties keep id order."""
    sign = -1 if higher_is_better(key) else 1
    return sorted(rows, key=lambda r: (sign * r["metrics"][key], r["id"]))


def target_domain(source_domain: str) -> str:
    return {"A": "B", "B": "A"}.get(source_domain, "")
