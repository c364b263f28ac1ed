"""The weight-generation literature's baselines, as pure functions on conv tensors.

Zeng, Yin, Xu & Liu, "Generative Modeling of Weights: Generalization or Memorization?" (arXiv 2506.07998) find
that weight generators mostly reproduce or interpolate their training checkpoints, and compare them with two
generators that need no training: a training model plus Gaussian noise, and an average (ensemble) of training
models. Here those two, plus our own addition, a per-parameter Gaussian fitted to the aligned zoo (the simplest
generative model of weights: independent parameters, each with the zoo's mean and spread):

- :func:`add_noise`: w[key] + sigma * std(w[key]) * N(0, 1), each tensor's noise relative to that tensor's own
  spread (its population std over its elements), so one sigma means the same for conv1 and conv2, weights and
  biases; sigma = 0 is the model itself.
- :func:`average_aligned`: the element-wise mean of k models after each is aligned to the first by weight
  matching (`core.align`, Git Re-Basin), so that channel i of every model means the same thing before averaging.
- :func:`fit_gaussian` / :func:`sample_gaussian`: mean and std (maximum likelihood, population std) of each
  parameter over a stack of already-aligned models, and samples mean + std * N(0, 1).

Dicts of tensors in (conv keys of one model, or stacked with a leading model dim), dicts out; randomness only
through the torch.Generator passed in, so the same seed gives the same bytes. Statistics are taken in float64 and
cast back, so k identical models average (and fit) to exactly that model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from zoofusion.core.align import align

Weights = Mapping[str, torch.Tensor]


def _sigma(sigma: float) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma >= 0:
        raise ValueError(f"sigma must be a number >= 0, got {sigma!r}")
    return float(sigma)


def add_noise(w: Weights, sigma: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """w plus Gaussian noise of std `sigma` times each tensor's own std (population, over its elements).

    One N(0, 1) draw per element, in the dict's key order, from `gen`: two sigmas with equally seeded generators
    get the same noise direction at two magnitudes. sigma = 0 returns exact copies.
    """
    s = _sigma(sigma)
    out = {}
    for k, t in w.items():
        z = torch.randn(t.shape, generator=gen, dtype=torch.float64)
        scale = t.detach().to(torch.float64).std(unbiased=False)  # population std: 0 for a single element
        out[k] = (t.to(torch.float64) + s * scale * z).to(t.dtype)
    return out


def average_aligned(models: Sequence[Weights]) -> dict[str, torch.Tensor]:
    """The element-wise mean of `models`, each first aligned to models[0] by weight matching (`core.align.align`,
    as the `aligned` merge does). Models that differ only by a channel permutation average to models[0] exactly."""
    if len(models) == 0:
        raise ValueError("average_aligned needs at least one model")
    ref = models[0]
    aligned = [dict(ref)] + [align(ref, m) for m in models[1:]]
    return {k: torch.stack([m[k].to(torch.float64) for m in aligned]).mean(0).to(ref[k].dtype) for k in ref}


def fit_gaussian(stacked: Weights) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(mean, std) per parameter over the leading model dim of `stacked` (already aligned), in its dtype; taken in
    float64, the std the maximum-likelihood one (population, ddof 0), so identical models have std exactly 0."""
    if not stacked or any(t.ndim < 1 or t.shape[0] < 1 for t in stacked.values()):
        raise ValueError("fit_gaussian needs stacked tensors with at least one model")
    x = {k: t.detach().to(torch.float64) for k, t in stacked.items()}
    dt = {k: t.dtype for k, t in stacked.items()}
    return ({k: t.mean(0).to(dt[k]) for k, t in x.items()},
            {k: t.std(0, unbiased=False).to(dt[k]) for k, t in x.items()})


def sample_gaussian(mean: Weights, std: Weights, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One model drawn from the per-parameter Gaussian: mean + std * N(0, 1), one draw per parameter in the dict's
    key order, in mean's dtype (std 0: exactly the mean)."""
    return {k: (mean[k].to(torch.float64) + std[k].to(torch.float64)
                * torch.randn(mean[k].shape, generator=gen, dtype=torch.float64)).to(mean[k].dtype) for k in mean}


def generator(seed: int) -> torch.Generator:
    """A CPU torch generator seeded with `seed` (derive it with core.seeds.derive_seed)."""
    return torch.Generator().manual_seed(int(seed))
