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

from zoofusion.core.cnn import CONV_KEYS, HEAD_KEYS, batched_features, init_weights
from zoofusion.core.darkness import darkness
from zoofusion.core.seeds import derive_seed, rng

# --- heads and controls (issue 22): kinds scored by a softmax head, and the two controls -------------------------
# head-A: log p(dark) of one black-zoo model's own head; head-B: log p(cat) of one cat-zoo model's; experts: the
# product of experts p(dark) x p(cat) of a (black, cat) pair, as its log. control-positive: the conv part of a LeNet
# trained directly on (weakly labelled) dark cat vs other (stage `control`), through the protocol; control-head: that
# LeNet's own log p(black cat). untrained-<variant>: kernels translated by the variant's CycleGANs at initialisation.
HEAD_KINDS = ("head-A", "head-B", "experts")
CONTROL_KINDS = ("control-positive", "control-head")


def untrained_kind(variant: str) -> str:
    """The kind of the translation control of a variant: its source models through its untrained generators."""
    return f"untrained-{variant}"
# --- end heads and controls -----------------------------------------------------------------------------------------

# the baselines every evaluation has; the literature's noise kinds and the translation controls follow (baseline_kinds)
BASELINE_KINDS = ("random", "zoo-A", "zoo-B", "average", "aligned", "concat", "pixels", "darkness", "avg-k", "gauss-fit",
                  *HEAD_KINDS, *CONTROL_KINDS)
KINDS = ("generated", *BASELINE_KINDS)  # with a single, unnamed translation and no noise kinds


def generated_kind(variant: str) -> str:
    """The kind of a translation variant's generated models: `generated-<variant>`."""
    return f"generated-{variant}"


def is_generated(kind: str) -> bool:
    return kind == "generated" or kind.startswith("generated-")


def noise_kind(sigma: float) -> str:
    """The kind of zoo models plus Gaussian noise at one relative sigma: `noise-<sigma>` (e.g. `noise-0.1`)."""
    return f"noise-{sigma:g}"


def baseline_kinds(variants: tuple[str, ...] | list[str], noise_sigmas: Sequence[float]) -> tuple[str, ...]:
    """Every baseline kind of an evaluation with these translation variants and noise grid
    (evaluate.baselines.noise_sigmas): BASELINE_KINDS, one noise kind per sigma, then each variant's translation
    control (`untrained-<variant>`)."""
    return (*BASELINE_KINDS, *(noise_kind(s) for s in noise_sigmas), *(untrained_kind(v) for v in variants))


def is_control(kind: str) -> bool:
    """A control rather than a rival: the positive control (trained on labelled black cats) and the untrained
    translation. They are scored and reported like any kind, but the comparator `all` leaves them out: the primary
    endpoint asks whether the generator beats what needs no generator and no labels."""
    return kind in CONTROL_KINDS or kind.startswith("untrained-")


def kinds_of(variants: tuple[str, ...] | list[str], noise_sigmas: Sequence[float]) -> tuple[str, ...]:
    """Every kind of an evaluation with these translation variants and noise grid: generated kinds first, then
    the baselines."""
    return (*(generated_kind(v) for v in variants), *baseline_kinds(variants, noise_sigmas))


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
    # a softmax head (fc.weight [2,400], fc.bias [2]) on `weights`' features (and `head2` on `weights2`'): when set,
    # the candidate's feature is the 1-d score log p(class 1) (summed over both heads: a product of experts)
    head: dict[str, torch.Tensor] | None = None
    head2: dict[str, torch.Tensor] | None = None


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
                   noise_sigmas: Sequence[float], average_k: int, untrained: dict[str, dict] | None = None,
                   control: dict | None = None) -> list[Candidate]:
    """Every variant's generated candidates (kind `generated-<variant>`, ids `<variant>/<id>`), then the baselines,
    each kind with the same budget: `budget`, or (0) as many as the variants' generated models. noise_sigmas and
    average_k: the literature's baselines (:func:`literature_candidates`).

    untrained: variant -> its translation control (generate's `untrained.pt`), drawn like the generated models
    (the same sources: paired); control: the positive control's stacked LeNets (stage `control`)."""
    k = budget_of(min(len(g["ids"]) for g in generated.values()), budget)
    out = []
    for variant, g in generated.items():
        out += generated_candidates(g, k, seed, generated_kind(variant), f"{variant}/")
    out += baseline_candidates(kernels, k, seed, noise_sigmas, average_k)
    if control is not None:
        out += control_candidates(control, k)
    for variant, u in (untrained or {}).items():
        out += generated_candidates(u, k, seed, untrained_kind(variant), f"untrained-{variant}/")
    return out


# --- heads and controls (issue 22) -----------------------------------------------------------------------------------
def _head(d: dict, j: int, where: str) -> dict[str, torch.Tensor]:
    missing = [key for key in HEAD_KEYS if key not in d]
    if missing:
        raise ValueError(f"{where} lacks the head {missing}; rerun the stage that wrote it (`dvc repro kernels`)")
    return {key: d[key][j] for key in HEAD_KEYS}


def head_candidates(kernels: dict[str, dict], k: int, seed: int) -> list[Candidate]:
    """The zoos' own heads, k per kind (zero training beyond the zoos): head-A (log p(dark) of a black-zoo model,
    drawn like zoo-A), head-B (log p(cat) of a cat-zoo model, drawn like zoo-B) and experts (log p(dark) +
    log p(cat) = log of the product of experts p(dark) x p(cat), over the pairs of `model_pairs`, as `average`)."""
    black, cat = kernels["black"], kernels["cat"]
    out = []
    for d, letter in ((black, "A"), (cat, "B")):
        for j in _sample(len(d["model_index"]), k, seed, "zoo", letter):
            idx = int(d["model_index"][j])
            out.append(Candidate(f"head-{letter}-{idx}", f"head-{letter}", letter, idx,
                                 {key: d[key][j] for key in CONV_KEYS}, head=_head(d, j, f"the {letter} harvest")))
    for ja, jb in model_pairs(len(black["model_index"]), len(cat["model_index"]), k, seed):
        ia, ib = int(black["model_index"][ja]), int(cat["model_index"][jb])
        out.append(Candidate(f"experts-{ia}A-{ib}B", "experts", weights={key: black[key][ja] for key in CONV_KEYS},
                             weights2={key: cat[key][jb] for key in CONV_KEYS}, head=_head(black, ja, "the A harvest"),
                             head2=_head(cat, jb, "the B harvest")))
    return out


def control_candidates(control: dict, k: int) -> list[Candidate]:
    """The positive control's first k LeNets (fewer only where it has fewer): control-positive (its conv features,
    through the protocol like any CNN) and control-head (its own log p(black cat), a 1-d score)."""
    n = min(k, int(control["conv1.weight"].shape[0]))
    out = [Candidate(f"control-{j}", "control-positive", weights={key: control[key][j] for key in CONV_KEYS})
           for j in range(n)]
    return out + [Candidate(f"control-head-{j}", "control-head", weights={key: control[key][j] for key in CONV_KEYS},
                            head=_head(control, j, "the control models")) for j in range(n)]


def log_p1(features: np.ndarray, head: dict[str, torch.Tensor]) -> np.ndarray:
    """log p(class 1) = -log(1 + exp(z0 - z1)) of a softmax head's logits z on 400-d features [N,400] -> [N], in
    float64: no saturation near p = 1, where float32 probabilities (and z1 - logsumexp(z)) of confident images tie."""
    w, b = head["fc.weight"].double().numpy(), head["fc.bias"].double().numpy()
    z = features.astype(np.float64) @ w.T + b
    return -np.logaddexp(0.0, z[:, 0] - z[:, 1])
# --- end heads and controls -----------------------------------------------------------------------------------------


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
    return out + head_candidates(kernels, k, seed) + literature_candidates(kernels, k, seed, noise_sigmas, average_k)


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
    heads: list[dict[str, torch.Tensor]] = []  # the softmax heads, stacked likewise (`head` / `head2`: rows)

    def head_row(h: dict[str, torch.Tensor] | None) -> int:
        if h is None:
            return -1
        heads.append(h)
        return len(heads) - 1

    head = [head_row(c.head) for c in cands]
    head2 = [head_row(c.head2) for c in cands]
    conv.update({k: (torch.stack([h[k] for h in heads]).to(torch.float32).contiguous() if heads
                     else torch.empty(0)) for k in HEAD_KEYS})
    return {"ids": [c.id for c in cands], "kinds": [c.kind for c in cands],
            "source_domain": [c.source_domain for c in cands],
            "source_index": torch.tensor([c.source_index for c in cands], dtype=torch.int64),
            "seed": torch.tensor([c.seed for c in cands], dtype=torch.int64),
            "weights": torch.tensor(weights, dtype=torch.int64), "weights2": torch.tensor(weights2, dtype=torch.int64),
            "head": torch.tensor(head, dtype=torch.int64), "head2": torch.tensor(head2, dtype=torch.int64), **conv}


def unpack(d: dict) -> list[Candidate]:
    """The candidates :func:`pack` packed (their conv tensors are rows of the packed stacks)."""
    missing = [k for k in ("ids", "kinds", "source_domain", "source_index", "seed", "weights", "weights2", *CONV_KEYS,
                           "head", "head2", *HEAD_KEYS) if k not in d]
    if missing:
        raise ValueError(f"packed candidates lack {missing}; rebuild them (`dvc repro evaluate`)")

    def conv(r: int) -> dict[str, torch.Tensor] | None:
        return None if r < 0 else {k: d[k][r] for k in CONV_KEYS}

    def head(r: int) -> dict[str, torch.Tensor] | None:
        return None if r < 0 else {k: d[k][r] for k in HEAD_KEYS}

    return [Candidate(cid, kind, dom, int(si), conv(int(w)), conv(int(w2)), seed=int(s), head=head(int(h)),
                      head2=head(int(h2)))
            for cid, kind, dom, si, s, w, w2, h, h2 in zip(d["ids"], d["kinds"], d["source_domain"], d["source_index"],
                                                           d["seed"], d["weights"], d["weights2"], d["head"],
                                                           d["head2"])]


def compute_features(cands: list[Candidate], x: torch.Tensor, batch: int,
                     dark_luminance: int = 70) -> list[np.ndarray]:
    """Features of every candidate on the same preprocessed images x [N,3,32,32], batched across models.

    A CNN's are its 400-d conv features (`concat`: both models', 800-d); a candidate with a head (head-A, head-B,
    experts, control-head) has the 1-d score [N,1] log p(class 1) of its head on them, summed over its two heads for
    `experts` (log p(dark) + log p(cat): the log of the product of experts, same ranking as the product)."""
    feats: list[np.ndarray | None] = [None] * len(cands)
    conv = [(i, c.weights) for i, c in enumerate(cands) if c.weights is not None]
    conv += [(i, c.weights2) for i, c in enumerate(cands) if c.weights2 is not None]
    if conv:
        stacked = {k: torch.stack([w[k] for _, w in conv]) for k in CONV_KEYS}
        f = batched_features(stacked, x, batch_size=batch).numpy()
        second: dict[int, np.ndarray] = {}
        for j, (i, _) in enumerate(conv):
            if feats[i] is None:
                feats[i] = f[j]
            else:
                second[i] = f[j]
        for i, c in enumerate(cands):  # heads score their own model's features; `concat` puts both side by side
            if c.head is not None:
                s = log_p1(feats[i], c.head) + (log_p1(second[i], c.head2) if c.head2 is not None else 0.0)
                feats[i] = s[:, None].astype(np.float32)
            elif i in second:
                feats[i] = np.concatenate([feats[i], second[i]], axis=1)
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
