"""Score SDEs (VE / VP / sub-VP; PC and probability-flow ODE samplers) vs predictor-only and DDPM (paper 5).

Per unit: train (or reuse, see below) the variant's score network, draw ``n_samples`` with the
variant's sampler, score them with FID / IS / KID through torch-fidelity at one choke point
(``to_uint8_nchw``), beside the real-data floor (the held-out test images scored the same way),
compute bits/dim with the probability-flow ODE on test images, and save a grid of samples.
Variants that share an SDE (VE-PC and VE-P; VP-PC, VP-ODE and DDPM) share one network: it is
trained once per (config, seed) and cached under the run's artifacts folder, so a comparison
differs only in the sampler, and every sampler of a seed starts from the same prior draws, so
the verdict uses per-seed paired differences. ``ve_pc`` also samples at each snr of
``snr_sweep`` (rows ``fid_clf@snr=0.08`` ...): one unit, one network, the same prior draws.
The extra ``exact_score_mixture`` runs every sampler with the exact score of known mixtures.

Quick preset: 1,600 training steps, 1,000 samples per FID, meant for 3 seeds (``--seeds 3``; the
harness's default for quick is 2). Measured on an idle-ish 2-core machine: a network's 1,600
steps take about 55 s on one thread (41 s on two), 1,000 samples at 100 NFE about 16 s (9 s);
the whole quick preset (9 networks, 21 samplings, the extra) is about 12 minutes of unit time
on 2 cores, twice the 6 the suite budget allows (see the issue 15 notes for what to cut).

Feature spaces: with Inception weights (``fid_weights`` = the torch-fidelity .pth, or weights
already in the torch hub cache) the metrics are ``fid_inception`` / ``is_inception`` /
``kid_inception``. Offline they are ``fid_clf`` / ``is_clf`` / ``kid_clf``: the same formulas
in the feature space of a small CNN classifier trained on the same dataset, registered with
torch-fidelity as ``iclrbench-clf-<dataset>``. Those numbers are not comparable to Inception
FIDs, only to each other within one run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchmarks.registry import Benchmark, Metric, PaperNumber, PaperRef, Variant, Verdict, lazy, register_benchmark

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

UNITS = "benchmarks.units.score_sde"


# -------------------------------------------------------------------------------- verdict
PAPER_VP_PC, PAPER_DDPM = 3.18, 3.24  # Table 1, VP (DDPM): reverse diffusion PC1000 vs ancestral P2000


def paired(df: pd.DataFrame, method: str, baseline: str, metric: str) -> tuple[float, float, int, float]:
    """Per-seed paired differences baseline - method (positive: the method is better, lower FID):
    (mean, sample std (0 for one seed), seeds, the baseline's mean)."""
    rows = df[df["step"].isna() & (df["metric"] == metric)]
    m = rows[rows["variant"] == method].groupby("seed")["value"].mean()
    b = rows[rows["variant"] == baseline].groupby("seed")["value"].mean()
    d = (b - m).dropna()
    if d.empty:
        return math.nan, math.nan, 0, math.nan
    return float(d.mean()), float(d.std(ddof=1)) if len(d) > 1 else 0.0, int(len(d)), float(b.mean())


def paired_verdict(df: pd.DataFrame, method: str, baseline: str, metric: str) -> tuple[str, str]:
    """holds / does not hold / inconclusive on the paired differences, and the evidence."""
    d, sd, n, base = paired(df, method, baseline, metric)
    if n == 0:
        return "inconclusive", f"no paired {metric} for {method} and {baseline}"
    width = max(2 * sd / math.sqrt(n), 0.05 * abs(base))  # 2 standard errors, at least 5% of the baseline
    status = "holds" if d > width else "does not hold" if d < -width else "inconclusive"
    return status, (f"{metric} {baseline} - {method} = {d:+.3g} per seed (sd {sd:.2g}, {n} seeds, band ±{width:.2g}; "
                    f"{baseline} {base:.3g})")


def claim_verdict(df: pd.DataFrame) -> Verdict:
    """Primary: VE-PC vs VE-P on the same VE networks at equal NFE (paired by seed), at the
    corrector's snr; the sweep's other snr values and the secondary claim (VP-PC vs DDPM) as evidence."""
    import pandas  # only when a verdict is made: listing the spec stays light

    metric = next((m for m in ("fid_inception", "fid_clf") if (df["metric"] == m).any()), None)
    if metric is None:
        return Verdict("inconclusive", "no FID rows")
    status, evidence = paired_verdict(df, "ve_pc", "ve_p", metric)
    sweep = sorted({m.split("@snr=")[1] for m in df["metric"].unique() if m.startswith(f"{metric}@snr=")})
    if sweep:
        parts = []
        for snr in sweep:
            q = df[df["metric"] == f"{metric}@snr={snr}"].assign(metric=metric, variant="ve_pc_sweep")
            base = df[(df["metric"] == metric) & (df["variant"] == "ve_p")]
            d, sd, n, _ = paired(pandas.concat([q, base]), "ve_pc_sweep", "ve_p", metric)
            parts.append(f"snr {snr}: {d:+.3g} (sd {sd:.2g})")
        evidence += "; at other snr: " + ", ".join(parts)
    floor = df[df["metric"] == metric.replace("fid_", "fid_floor_")]["value"]
    if not floor.empty:
        evidence += f"; real-data floor {floor.mean():.3g}"
    second, ev2 = paired_verdict(df, "vp_pc", "ddpm_ancestral", metric)
    gain = 100 * (PAPER_DDPM - PAPER_VP_PC) / PAPER_DDPM
    evidence += (f". Secondary, VP-PC vs DDPM ancestral: {second} ({ev2}); the paper's effect is {gain:.1f}% "
                 f"({PAPER_VP_PC} vs {PAPER_DDPM}), below what this scale can resolve")
    return Verdict(status, f"primary, VE-PC vs VE-P: {evidence}")


@register_benchmark
def score_sde() -> Benchmark:
    pc = {"sampler": "pc", "predictor": "reverse_diffusion", "corrector": "langevin"}
    return Benchmark(
        name="score_sde",
        paper=PaperRef(
            title="Score-Based Generative Modeling through Stochastic Differential Equations",
            arxiv="2011.13456",
            code="https://github.com/yang-song/score_sde_pytorch",
        ),
        claim=(
            "With the same score network and the same number of score evaluations, predictor-corrector sampling "
            "(reverse diffusion + Langevin, N/2 steps each) gives better samples (lower FID) than the predictor "
            "alone with N steps, most clearly for the VE SDE (Table 1: 3.60 vs 4.74 on CIFAR-10); for VP the "
            "paper's gain over DDPM ancestral sampling is 2% (3.18 vs 3.24). The probability-flow ODE gives "
            "exact likelihoods (bits/dim) and adaptive-NFE sampling."
        ),
        verdict_rule=(
            "primary: per-seed paired differences FID(ve_p) - FID(ve_pc) on the same VE networks, at the corrector's "
            "snr 0.16 (Inception FID when available, else the classifier feature space); holds if their mean exceeds "
            "the band (2 standard errors over seeds, at least 5% of ve_p's FID), does not hold if below minus the "
            "band, else inconclusive. The snr sweep (0.08, 0.3), the real-data floor and the secondary claim "
            "(vp_pc vs ddpm_ancestral by the same rule, beside the paper's 2%) are stated in the evidence"
        ),
        variants=[
            Variant("ve_pc", "method", {"sde": "ve", **pc, "sweep_snr": True},
                    "VE SDE, reverse diffusion + Langevin corrector, N/2 steps each; also at every snr of snr_sweep"),
            Variant("ve_p", "baseline", {"sde": "ve", **pc, "corrector": "none"},
                    "the VE network of ve_pc, reverse diffusion predictor only with N steps (equal NFE)"),
            Variant("vp_pc", "method", {"sde": "vp", **pc}, "VP SDE, reverse diffusion predictor + Langevin corrector"),
            Variant("ddpm_ancestral", "baseline", {"sde": "vp", "sampler": "ddpm"},
                    "the VP network of vp_pc, DDPM ancestral sampling with 2x the steps (equal NFE)"),
            Variant("vp_ode", "method", {"sde": "vp", "sampler": "ode"}, "VP SDE, probability-flow ODE (RK45)"),
            Variant("subvp_ode", "method", {"sde": "subvp", "sampler": "ode"}, "sub-VP SDE, probability-flow ODE (RK45)"),
        ],
        datasets={"digits": lazy(f"{UNITS}:digits"), "cifar10": lazy(f"{UNITS}:cifar10")},
        defaults=dict(
            sde="vp", sampler="pc", predictor="reverse_diffusion", corrector="langevin",
            snr=0.16,  # reference default (configs/default_cifar10_configs.py), not overridden by its VP configs
            snr_sweep=[0.08, 0.16, 0.3], sweep_snr=False,
            # VP betas from the sampler's grid (see lit_modules/score_sde/sdes.py); "ddpm" = the reference's rule.
            discretization="grid",
            # DDPM's sigma^2 = beta_i (the reference): with the exact score of narrow mixtures it converges to the
            # right width (1.30x at N=100, 1.00x at N=1000), beta~ collapses (0.68x, 0.92x); see the extra.
            ancestral_variance="beta",
            n_corrector_steps=1, sample_steps=1000, sample_eps=1e-3, ode_tol=1e-5, sample_batch=500,
            sigma_min=0.01, sigma_max=50.0, beta_min=0.1, beta_max=20.0, num_scales=1000,
            ch=32, ch_mult=[1, 2], num_res_blocks=1, dropout=0.0, fourier_scale=16.0,
            lr=2e-4, warmup=5000, ema_decay=0.9999, train_eps=1e-5, grad_clip=1.0, max_steps=2000, batch_size=128,
            n_samples=1000, n_bpd=100, split_seed=0,
            fid_extractor="auto", fid_weights="", clf_steps=400, isc_splits=10, kid_subset_size=1000,
            mixture_samples=2000, mixture_nll_points=32,
            exact_data_samples=1000, exact_max_components=2000, smoothing_width=0.02,
        ),
        presets={
            "smoke": dict(ch=8, ch_mult=[1], max_steps=3, batch_size=32, warmup=1, sample_steps=25, n_samples=40,
                          mixture_samples=200, mixture_nll_points=4, exact_data_samples=40, snr_sweep=[0.16],
                          sample_batch=40, n_bpd=4, ode_tol=1e-2, clf_steps=5, sigma_max=10.0, ema_decay=0.99,
                          fourier_scale=1.0),
            # sigma_max = 10: Technique 1 of Song & Ermon (2020), the largest pairwise distance of the digits
            # in [-1, 1] is 9.6. Learning rate and EMA are scaled to a CPU budget. fourier_scale = 1: with 8
            # frequencies (the reference has 128) at scale 16 the embedding of log sigma is a random hash that
            # a small network does not learn (VE-PC FID 169 / 193 at 400 steps; 49 / 38 with scale 1).
            "quick": dict(ch=16, ch_mult=[1, 2], max_steps=1600, batch_size=64, lr=2e-3, warmup=50, ema_decay=0.99,
                          sigma_max=10.0, fourier_scale=1.0, sample_steps=50, n_samples=1000, sample_batch=1000,
                          n_bpd=32, ode_tol=1e-3),
            "full": dict(ch=128, ch_mult=[1, 2, 2, 2], num_res_blocks=2, dropout=0.1, max_steps=1_300_000,
                         n_samples=50_000, sample_batch=1000, n_bpd=10_000, sample_steps=1000, clf_steps=5000,
                         exact_data_samples=0),
        },
        metrics=[
            Metric("fid_clf", False, primary=True, tolerance=0.15,
                   description="FID in the feature space of a small CNN trained on the same dataset "
                               "(torch-fidelity extractor iclrbench-clf-<dataset>); not Inception FID"),
            Metric("fid_floor_clf", False, kind="info",
                   description="FID of the held-out real test images (360 for digits) against the same reference: "
                               "the real-data level; biased upwards against n_samples = 1,000 (fewer images)"),
            Metric("fid_floor_inception", False, kind="info", description="the same floor with Inception-v3"),
            Metric("is_clf", True, tolerance=0.1, description="Inception Score formula on the classifier's logits"),
            Metric("kid_clf", False, tolerance=0.3, description="KID (polynomial kernel MMD) in the classifier's features"),
            Metric("fid_inception", False, tolerance=0.15, description="FID with torch-fidelity's Inception-v3"),
            Metric("is_inception", True, tolerance=0.1, description="Inception Score"),
            Metric("kid_inception", False, tolerance=0.3, description="KID with Inception-v3 features"),
            Metric("bpd", False, tolerance=0.05,
                   description="bits/dim of dequantised test images by the probability-flow ODE (Hutchinson); "
                               "digits have 17 grey levels, so log2(17/2) replaces CIFAR's offset of 7"),
            Metric("bpd_nfe", False, kind="info", description="score evaluations of the likelihood ODE solve"),
            Metric("nfe", False, kind="info", description="score evaluations per sample"),
            Metric("n_samples", True, kind="info", description="generated samples behind FID/IS/KID"),
            Metric("out_of_range_frac", False, kind="info", description="fraction of sample pixels outside [-1, 1] (clipped)"),
            Metric("clf_test_acc", True, kind="info", description="test accuracy of the offline feature classifier"),
            Metric("ref_stats_cached", True, kind="info", description="1 if the reference features came from the run's cache"),
            Metric("mixture_logp_gap", False, tolerance=0.3,
                   description="exact-score extra (eight 2-D Gaussians): |mean log p(samples) - mean log p(data)|, nats"),
            Metric("mixture_nll_err", False, tolerance=0.3,
                   description="exact-score extra: mean |ODE log-likelihood - true log-density| of test points, nats "
                               "(for VE it includes the prior's mismatch with p_T, about 0.015)"),
            Metric("mixture_nfe", False, kind="info", description="exact-score extra: score evaluations per sample"),
            Metric("exact_width_ratio", False, kind="info",
                   description="exact-score extra (@narrow16: 40 Gaussians of width 0.05 in 16-D; @digits: the "
                               "training set smoothed by smoothing_width): RMS distance to the nearest component / "
                               "(width sqrt(D)); 1 for exact samples, < 1 collapsed, > 1 blurred"),
            Metric("exact_fid_clf", False, tolerance=0.3,
                   description="exact-score extra: FID of samples of the smoothed training set against it"),
            Metric("exact_fid_inception", False, tolerance=0.3, description="the same with Inception-v3"),
            Metric("loss_dsm", False, tolerance=0.2, description="final denoising score matching loss"),
            Metric("train_s", False, kind="efficiency", tolerance=0.3, description="training wall time (cached: shared by variants)"),
            Metric("sampling_s", False, kind="efficiency", tolerance=0.3, description="wall time to draw n_samples"),
            Metric("score_evals_per_s", True, kind="efficiency", tolerance=0.3, description="per-example score evaluations / s"),
            Metric("fid_features_per_s", True, kind="efficiency", tolerance=0.3, description="images/s of the FID feature extractor"),
            Metric("metric_s", False, kind="efficiency", tolerance=0.5, description="wall time of the torch-fidelity call"),
        ],
        run=lazy(f"{UNITS}:run"),
        extras={"exact_score_mixture": lazy("benchmarks.units.score_sde_extras:exact_score_mixture")},
        verdict=claim_verdict,
        paper_numbers=[
            # Checked against yang-song/score_sde_pytorch's README, which restates Tables 2 and 3 per checkpoint
            # ("FID"/"IS": Table 3's checkpoint; "FID (ODE)"/"NNL (bits/dim)": Table 2's). Our `full` preset is
            # the DDPM architecture (ch 128, ch_mult 1,2,2,2, 2 res blocks, dropout 0.1) trained in continuous
            # time: the "DDPM cont." rows are targets, the deep NCSN++ / DDPM++ rows context.
            PaperNumber("vp_ode", "cifar10", "bpd", 3.21,
                        "arXiv 2011.13456 Table 2, row DDPM cont. (VP), NLL test (README: vp/cifar10_ddpm_continuous)",
                        scope="target"),
            PaperNumber("vp_ode", "cifar10", "fid_inception", 3.69,
                        "arXiv 2011.13456 Table 2, row DDPM cont. (VP), FID with the ODE sampler (README: "
                        "vp/cifar10_ddpm_continuous, FID (ODE))", scope="target"),
            PaperNumber("subvp_ode", "cifar10", "bpd", 3.05,
                        "arXiv 2011.13456 Table 2, row DDPM cont. (sub-VP), NLL test (README: subvp/cifar10_ddpm_continuous)",
                        scope="target"),
            PaperNumber("subvp_ode", "cifar10", "fid_inception", 3.56,
                        "arXiv 2011.13456 Table 2, row DDPM cont. (sub-VP), FID with the ODE sampler (README: "
                        "subvp/cifar10_ddpm_continuous, FID (ODE))", scope="target"),
            # Table 1 (samplers compared on one VP (DDPM) model): our baseline runs ancestral sampling with 2x the
            # steps of vp_pc (equal score evaluations), i.e. the P2000 row, not P1000; issue 18's review gives
            # 3.24 for both. 3.24 is also the README's FID for checkpoint vp/cifar10_ddpm (kept on that basis).
            # PC1000 values checked against two restatements of Table 1 (an English and a Japanese transcription
            # of the paper, identical rows): VE P1000/P2000/PC1000 reverse diffusion 4.79/4.74/3.60, VP 3.21/3.19/
            # 3.18, ancestral VP 3.24/3.24/3.21. The VE column is an SMLD model trained with the discrete
            # objective, not our DDPM-architecture VE: context.
            PaperNumber("ddpm_ancestral", "cifar10", "fid_inception", 3.24,
                        "arXiv 2011.13456 Table 1, VP (DDPM) column, ancestral sampling P2000 (equal NFE with "
                        "PC1000), as the README's FID of checkpoint vp/cifar10_ddpm", scope="target"),
            PaperNumber("vp_pc", "cifar10", "fid_inception", 3.18,
                        "arXiv 2011.13456 Table 1, VP (DDPM) column, reverse diffusion PC1000", scope="target"),
            PaperNumber("ve_pc", "cifar10", "fid_inception", 3.60,
                        "arXiv 2011.13456 Table 1, VE (SMLD) column, reverse diffusion PC1000; context: an SMLD model "
                        "trained with the discrete objective, ours is the DDPM architecture in continuous time",
                        scope="context"),
            PaperNumber("ve_p", "cifar10", "fid_inception", 4.74,
                        "arXiv 2011.13456 Table 1, VE (SMLD) column, reverse diffusion P2000 (equal NFE with PC1000); "
                        "context: an SMLD model trained with the discrete objective, ours is the DDPM architecture",
                        scope="context"),
            # The headlines, from deeper models than ours: context.
            PaperNumber("ve_pc", "cifar10", "fid_inception", 2.20,
                        "arXiv 2011.13456 Table 3, row NCSN++ cont. (deep, VE) (README: ve/cifar10_ncsnpp_deep_continuous); "
                        "context: the deep NCSN++ architecture, ours is the DDPM one", scope="context"),
            PaperNumber("ve_pc", "cifar10", "is_inception", 9.89,
                        "arXiv 2011.13456 Table 3, row NCSN++ cont. (deep, VE) (README: ve/cifar10_ncsnpp_deep_continuous); "
                        "context: the deep NCSN++ architecture, ours is the DDPM one", scope="context"),
            PaperNumber("vp_pc", "cifar10", "fid_inception", 2.41,
                        "arXiv 2011.13456 Table 3, row DDPM++ cont. (deep, VP) (README: vp/cifar10_ddpmpp_deep_continuous, "
                        "FID); context: the deep DDPM++ architecture, ours is the DDPM one", scope="context"),
            PaperNumber("vp_pc", "cifar10", "is_inception", 9.68,
                        "arXiv 2011.13456 Table 3, row DDPM++ cont. (deep, VP) (README: vp/cifar10_ddpmpp_deep_continuous, "
                        "IS); context: the deep DDPM++ architecture, ours is the DDPM one", scope="context"),
            PaperNumber("subvp_ode", "cifar10", "bpd", 2.99,
                        "arXiv 2011.13456 Table 2, row DDPM++ cont. (deep, sub-VP) (README: subvp/cifar10_ddpmpp_deep_continuous); "
                        "context: the deep DDPM++ architecture", scope="context"),
            PaperNumber("subvp_ode", "cifar10", "fid_inception", 2.92,
                        "arXiv 2011.13456 Table 2, row DDPM++ cont. (deep, sub-VP), FID with the ODE sampler (README: "
                        "FID (ODE)); context: the deep DDPM++ architecture", scope="context"),
            PaperNumber("vp_ode", "cifar10", "bpd", 3.13,
                        "arXiv 2011.13456 Table 2, row DDPM++ cont. (deep, VP) (README: vp/cifar10_ddpmpp_deep_continuous); "
                        "context: the deep DDPM++ architecture", scope="context"),
            PaperNumber("vp_ode", "cifar10", "fid_inception", 3.08,
                        "arXiv 2011.13456 Table 2, row DDPM++ cont. (deep, VP), FID with the ODE sampler (README: "
                        "FID (ODE)); context: the deep DDPM++ architecture", scope="context"),
        ],
    )
