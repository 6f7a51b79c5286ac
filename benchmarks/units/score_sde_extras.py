"""score_sde's extra: every variant's sampler with the exact score of known distributions.

No network error is left, so what the rows show is the sampler's: a sampler that is wrong for
the step count the benchmark uses shows up here, not only after training.
- ``eight_gaussians`` (2-D): |mean log p(samples) - mean log p(data)| and the ODE likelihood's
  error (exact divergence) against the true log-density; a scatter plot.
- ``narrow16`` (40 Gaussians of width 0.05 in [-1, 1]^16) and ``digits`` (the training images
  smoothed by Gaussian noise of ``smoothing_width``): the RMS distance of the samples to their
  nearest component over width x sqrt(D) (1 for exact samples, < 1 collapsed, > 1 blurred),
  and for digits the FID against the training set. Rows qualified ``betas=ddpm`` use the
  reference's VP discretisation (beta_i = beta(i/N)/N), ``variance=posterior`` DDPM's beta~
  for ancestral sampling, ``snr=`` the corrector's sweep. Rows of the extra itself (no variant)
  score exact samples of the target: the level a perfect sampler reaches.
"""

from __future__ import annotations

import math

import torch

from benchmarks.unit import Measurement, UnitContext
from benchmarks.units.score_sde import FidScorer, sample_with, sampler_sde
from lit_modules.score_sde import make_sde, ode_likelihood


def _settings(bench, ctx: UnitContext, variant) -> list[tuple[str, dict]]:
    """(qualifier suffix, sampler config) for a variant: its own, its snr sweep, the old VP betas
    and, for DDPM, the other ancestral variance."""
    cfg = ctx.config
    keep = {k: cfg[k] for k in ("sample_steps", "snr", "snr_sweep", "ode_tol", "sigma_max", "sample_eps", "discretization")}
    vcfg = bench.config(ctx.preset, variant.name, keep)
    out = [("", vcfg)]
    if vcfg["sweep_snr"] and vcfg["sampler"] == "pc" and vcfg["corrector"] != "none":
        out += [(f",snr={s:g}", {**vcfg, "snr": s}) for s in vcfg["snr_sweep"] if not math.isclose(s, vcfg["snr"])]
    if vcfg["sde"] == "vp" and vcfg["sampler"] != "ode":
        out.append((",betas=ddpm", {**vcfg, "discretization": "ddpm"}))
    if vcfg["sampler"] == "ddpm":
        other = "posterior" if vcfg["ancestral_variance"] == "beta" else "beta"
        out.append((f",variance={other}", {**vcfg, "ancestral_variance": other}))
    return out


def _draw(target, vcfg: dict, n: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, int]:
    sde = sampler_sde(vcfg)
    torch.manual_seed(0)
    return sample_with(sde, target.score_fn(sde), vcfg, (n, *shape))


def eight_gaussians_rows(ctx: UnitContext, bench) -> list[Measurement]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datamodules.mixtures import make_mixture

    cfg = ctx.config
    mixture = make_mixture("eight_gaussians")
    real = mixture.sample(cfg["mixture_samples"])
    target = float(mixture.log_prob(real).mean())
    test = mixture.sample(cfg["mixture_nll_points"]).double()
    rows, panels = [], []
    for variant in bench.variants:
        vcfg = _settings(bench, ctx, variant)[0][1]
        x, nfe = _draw(mixture, vcfg, cfg["mixture_samples"], (2,))
        gap = abs(float(mixture.log_prob(x).mean()) - target)
        sde = make_sde(vcfg["sde"], vcfg["sigma_min"], vcfg["sigma_max"], vcfg["beta_min"], vcfg["beta_max"])
        logp, _, _ = ode_likelihood(sde, mixture.score_fn(sde), test, divergence="exact")
        nll_err = float((logp - mixture.log_prob(test)).abs().mean())
        rows += [Measurement("mixture_logp_gap", gap, variant=variant.name),
                 Measurement("mixture_nll_err", nll_err, variant=variant.name),
                 Measurement("mixture_nfe", nfe, variant=variant.name)]
        panels.append((variant.name, x, nfe))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3 * (len(panels) + 1), 3), sharex=True, sharey=True)
    for ax, (title, pts, nfe) in zip(axes, [("data", real, 0), *panels]):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        ax.set_title(f"{title}" + (f" (NFE {nfe})" if nfe else ""), fontsize=9)
        ax.set_xlim(-3.5, 3.5)
        ax.set_ylim(-3.5, 3.5)
        ax.set_aspect("equal")
    fig.suptitle("eight Gaussians, exact score: what each sampler adds", fontsize=10)
    fig.tight_layout()
    fig.savefig(ctx.artifact("mixture_exact_score.png"), dpi=90)
    plt.close(fig)
    return rows


def narrow_rows(ctx: UnitContext, bench, targets: list[tuple[str, object, tuple[int, ...], int, FidScorer | None]]):
    """Width ratios (and FIDs where a scorer is given) for every variant's settings."""
    rows = []
    for name, target, shape, n, scorer in targets:
        torch.manual_seed(1)
        exact = target.sample(n).reshape(n, *shape)
        rows.append(Measurement(f"exact_width_ratio@{name}", target.width_ratio(exact)))
        if scorer is not None:
            rows.append(Measurement(f"exact_fid_{scorer.tag}@{name}", scorer.score(exact)[f"fid_{scorer.tag}"]))
        for variant in bench.variants:
            for suffix, vcfg in _settings(bench, ctx, variant):
                x, _ = _draw(target, vcfg, n, shape)
                q = f"@{name}{suffix}"
                rows.append(Measurement(f"exact_width_ratio{q}", target.width_ratio(x), variant=variant.name))
                if scorer is not None:
                    rows.append(Measurement(f"exact_fid_{scorer.tag}{q}", scorer.score(x)[f"fid_{scorer.tag}"],
                                            variant=variant.name))
    return rows


def exact_score_mixture(ctx: UnitContext) -> list[Measurement]:
    """The extra: eight Gaussians, a 16-D mixture of narrow Gaussians and the smoothed data set."""
    from benchmarks.registry import get_benchmark
    from datamodules.mixtures import IsotropicMixture, narrow_mixture

    cfg, bench = ctx.config, get_benchmark(ctx.benchmark)
    rows = eight_gaussians_rows(ctx, bench)
    targets = [("narrow16", narrow_mixture(), (16,), cfg["mixture_samples"], None)]
    if cfg["exact_data_samples"]:
        data = ctx.datamodule()
        means = data.x["train"][: cfg["exact_max_components"]]
        smoothed = IsotropicMixture(means.reshape(len(means), -1), cfg["smoothing_width"])
        targets.append((data.name, smoothed, data.shape, cfg["exact_data_samples"], FidScorer(ctx, data)))
    return rows + narrow_rows(ctx, bench, targets)
