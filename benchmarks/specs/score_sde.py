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

Quick preset: 1,600 training steps, 1,000 samples per FID, 3 seeds for the judged VE pair and 2 for the
VP / sub-VP variants reported beside it (``seeds``; the primary comparison's power estimate asked for 5, later 23). Measured on an idle-ish 2-core machine: a network's 1,600
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

from dataclasses import replace
from typing import TYPE_CHECKING

from benchmarks.registry import (Benchmark, FastDev, Metric, PaperNumber, PaperParams, PaperRef, Task, Variant, Verdict, lazy,
                                 register_benchmark)
from benchmarks.verdict import Comparison, judge, judge_values, make_verdict, per_seed

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

UNITS = "benchmarks.units.score_sde"


# -------------------------------------------------------------------------------- verdict
PAPER_VP_PC, PAPER_DDPM = 3.18, 3.24  # Table 1, VP (DDPM): reverse diffusion PC1000 vs ancestral P2000
DEFAULT_SNR = 0.16  # = defaults["snr"], the reference's default (configs/default_cifar10_configs.py)
# Declared before the run. FID is lower-is-better and its scale depends on the feature space (Inception or the
# offline classifier), so effects are relative to the baseline's FID, per seed.
VE_PC_VS_P = Comparison(
    "ve_pc", "ve_p", "fid", "better", delta=0.05, higher_is_better=False, relative=True, label="VE-PC vs VE-P",
    source="5 % of VE-P's FID, the smallest gain counted (FID from 1,000 samples moves by a few % with the sample "
           "draw); the paper's effect is 24 % (Table 1, VE: P2000 4.74 vs PC1000 3.60)")
VP_PC_VS_DDPM = Comparison(
    "vp_pc", "ddpm_ancestral", "fid", "better", delta=0.0, higher_is_better=False, relative=True,
    label="VP-PC vs DDPM ancestral", source="secondary, reported: the paper's effect is 1.9 % (Table 1, 3.18 vs 3.24)")


def chosen_snr(df: pd.DataFrame, tag: str) -> tuple[float, str]:
    """The corrector's snr, chosen by a declared procedure that does not look at the judged FIDs: the snr
    of ``snr_sweep`` whose VE-PC samples with the *exact* score of the smoothed training set (the
    ``exact_score_mixture`` extra: no trained network) have the lowest FID. Without that extra (``--no-extras``,
    or data where it does not run) the reference's default, 0.16."""
    found = {}
    for metric, value in df.loc[(df["variant"] == "ve_pc") & df["metric"].str.startswith(f"exact_fid_{tag}@"),
                                ["metric", "value"]].itertuples(index=False):
        parts = metric.split("@", 1)[1].split(",")
        extra = [p for p in parts[1:] if not p.startswith("snr=")]
        if not extra:
            snr = next((float(p[4:]) for p in parts[1:] if p.startswith("snr=")), DEFAULT_SNR)
            found[snr] = float(value)
    if not found:
        return DEFAULT_SNR, f"snr {DEFAULT_SNR:g}: the reference's default (no exact-score extra in this run)"
    best = min(found, key=found.get)
    listing = ", ".join(f"{k:g}: {v:.3g}" for k, v in sorted(found.items()))
    return best, f"snr {best:g}, chosen by the exact-score extra's VE-PC FID (no trained network; {listing})"


def claim_verdict(df: pd.DataFrame) -> Verdict:
    """Primary: VE-PC vs VE-P on the same VE networks at equal NFE (paired by seed), at the snr the
    exact-score extra chose; the other snr values, the real-data floor and VP-PC vs DDPM as evidence."""
    metric = next((m for m in ("fid_inception", "fid_clf") if (df["metric"] == m).any()), None)
    if metric is None:
        return Verdict("inconclusive", "no FID rows")
    tag = metric.split("_", 1)[1]
    snr, how = chosen_snr(df, tag)
    pc_metric = metric if abs(snr - DEFAULT_SNR) < 1e-12 else f"{metric}@snr={snr:g}"
    primary = judge_values(replace(VE_PC_VS_P, metric=pc_metric), per_seed(df, "ve_pc", pc_metric),
                           per_seed(df, "ve_p", metric), note=how)
    secondary = judge(df, replace(VP_PC_VS_DDPM, metric=metric))
    parts = []
    sweep = sorted({m.split("@snr=")[1] for m in df["metric"].unique() if m.startswith(f"{metric}@snr=")}, key=float)
    if sweep:
        others = [f"{DEFAULT_SNR:g} (ve_pc's own rows): "
                  + judge_values(replace(VE_PC_VS_P, metric=metric), per_seed(df, "ve_pc", metric), per_seed(df, "ve_p", metric)).estimate.text()]
        for x in sweep:
            j = judge_values(replace(VE_PC_VS_P, metric=f"{metric}@snr={x}"), per_seed(df, "ve_pc", f"{metric}@snr={x}"),
                             per_seed(df, "ve_p", metric))
            others.append(f"snr {x}: {j.estimate.text()}")
        parts.append("VE-PC vs VE-P at every swept snr (relative effect [95 % CI]): " + ", ".join(others))
    floor = df[df["metric"] == metric.replace("fid_", "fid_floor_")]["value"]
    matched = sorted({m for m in df["metric"].unique() if m.startswith(f"{metric}@n=")})
    if not floor.empty:
        text = f"real-data floor (held-out real images, the same extractor) {floor.mean():.3g}"
        for m in matched:
            n = m.split("@n=")[1]
            means = {v: per_seed(df, v, m) for v in ("ve_pc", "ve_p", "vp_pc", "ddpm_ancestral", "vp_ode", "subvp_ode")}
            text += (f"; the models' FID from as many samples ({n}): " + ", ".join(
                f"{v} {sum(x.values()) / len(x):.3g}" for v, x in means.items() if x))
        parts.append(text)
    gain = 100 * (PAPER_DDPM - PAPER_VP_PC) / PAPER_DDPM
    parts.append(f"secondary ({secondary.comparison.name}) is reported, not judged: the paper's effect is {gain:.1f}% "
                 f"({PAPER_VP_PC} vs {PAPER_DDPM})")
    return make_verdict(primary.status, [primary, secondary], "; ".join(parts))


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
            "primary, declared before the run: VE-PC vs VE-P on the same VE networks and prior draws, the relative "
            "FID gain (FID(ve_p) − FID(ve_pc)) / FID(ve_p) per seed (Inception FID when available, else the "
            "classifier feature space), 95 % paired t-interval; holds if its lower end is above 0 (and its upper end "
            "not below 0.05), does not hold if its upper end is below 0.05 (the smallest gain counted), else "
            "inconclusive. The corrector's snr is the one of snr_sweep whose VE-PC samples with the exact score "
            "(the exact_score_mixture extra, no trained network) have the lowest FID; 0.16 without that extra. "
            "Every swept snr, the real-data floor (as many held-out real images as the models' matched FID, the same "
            "extractor) and VP-PC vs DDPM ancestral (reported, beside the paper's 1.9 %) are in the evidence"
        ),
        variants=[
            Variant("ve_pc", "method", {"sde": "ve", **pc, "sweep_snr": True},
                    "VE SDE, reverse diffusion + Langevin corrector, N/2 steps each; also at every snr of snr_sweep"),
            Variant("ve_p", "baseline", {"sde": "ve", **pc, "corrector": "none"},
                    "the VE network of ve_pc, reverse diffusion predictor only with N steps (equal NFE)"),
            Variant("vp_pc", "method", {"sde": "vp", **pc}, "VP SDE, reverse diffusion predictor + Langevin corrector",
                seeds={"quick": 2}),
            Variant("ddpm_ancestral", "baseline", {"sde": "vp", "sampler": "ddpm"},
                    "the VP network of vp_pc, DDPM ancestral sampling with 2x the steps (equal NFE)",
                        seeds={"quick": 2}),
            Variant("vp_ode", "method", {"sde": "vp", "sampler": "ode"}, "VP SDE, probability-flow ODE (RK45)",
                seeds={"quick": 2}),
            Variant("subvp_ode", "method", {"sde": "subvp", "sampler": "ode"}, "sub-VP SDE, probability-flow ODE (RK45)",
                seeds={"quick": 2}),
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
            # compare tolerances cover the same commit on two CPUs (Intel Xeon vs AMD EPYC, seeds 0-1: the trained
            # networks differ in float rounding): FID moved by up to 21 % (ve_pc at snr 0.3), KID by up to 122 %
            Metric("fid_clf", False, primary=True, tolerance=0.25,
                   description="FID in the feature space of a small CNN trained on the same dataset "
                               "(torch-fidelity extractor iclrbench-clf-<dataset>); not Inception FID"),
            Metric("fid_floor_clf", False, kind="info",
                   description="FID of held-out real images (digits: test + val, 536; at most n_samples) against the "
                               "same reference: the real-data level, to read beside the models' fid_clf@n=<that count> "
                               "(FID is biased upwards at small counts, so only equal counts compare)"),
            Metric("fid_floor_inception", False, kind="info", description="the same floor with Inception-v3"),
            Metric("is_clf", True, tolerance=0.1, description="Inception Score formula on the classifier's logits"),
            Metric("kid_clf", False, tolerance=1.5, description="KID (polynomial kernel MMD) in the classifier's features"),
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
            Metric("loss_dsm", False, tolerance=0.2,
                   description="final denoising score matching loss; @reduce=sum (VE: summed over dimensions, the "
                               "reference's reduce_mean=False) and @reduce=mean (VP, sub-VP) are different quantities"),
            Metric("train_s", False, kind="efficiency", tolerance=0.3, description="training wall time (cached: shared by variants)"),
            Metric("sampling_s", False, kind="efficiency", tolerance=0.3, description="wall time to draw n_samples"),
            Metric("score_evals_per_s", True, kind="efficiency", tolerance=0.3, description="per-example score evaluations / s"),
            Metric("fid_features_per_s", True, kind="efficiency", tolerance=0.3, description="images/s of the FID feature extractor"),
            Metric("metric_s", False, kind="efficiency", tolerance=0.5, description="wall time of the torch-fidelity call"),
        ],
        run=lazy(f"{UNITS}:run"),
        extras={"exact_score_mixture": lazy("benchmarks.units.score_sde_extras:exact_score_mixture")},
        verdict=claim_verdict,
        tasks={"full": {"cifar10": Task()}},  # the paper's CIFAR-10 (the full network is sized for 32x32x3)
        # fast dev run: two training batches; 21 sampler steps for 16 samples (the DDPM rule needs N > beta_max = 20:
        # at N = 2 the exact-score extra refused to run), the snr sweep's first point, a
        # two-step feature classifier, the likelihood ODE on 2 images at a loose tolerance (an RK45 solve at 1e-5
        # takes hundreds of network evaluations); on a CPU a batch of 8 (ch 128 at batch 128: about a minute a step)
        fast_dev=FastDev(config=dict(sample_steps=21, n_samples=16, sample_batch=16, n_bpd=2, ode_tol=0.1, clf_steps=2,
                                     snr_sweep=[0.16], kid_subset_size=8, isc_splits=2, mixture_samples=64,
                                     mixture_nll_points=4, exact_data_samples=0),
                         batch_keys=("batch_size", "sample_batch"), cpu_batch=8),
        paper_architecture="DDPM's CIFAR-10 U-Net as in score_sde's ddpm configs: ch 128, ch_mult (1, 2, 2, 2), 2 residual "
                           "blocks per resolution, attention at 16x16, dropout 0.1",
        paper_params=[PaperParams(v, 35_700_000, "Ho et al. 2020 (arXiv 2006.11239) Appendix B: 'Our CIFAR10 model has "
                                  "35.7 million parameters'; score_sde's ddpm_continuous configs use this network",
                                  tolerance=0.05)
                      for v in ("ve_pc", "ve_p", "vp_pc", "ddpm_ancestral", "vp_ode", "subvp_ode")],
        param_count=lazy(f"{UNITS}:full_params"),
        # quick seeds, sized by a power estimate from the 2-seed cpu-quick.csv of commit 2ef76d5, within the quick budget:
        # VE-PC vs VE-P at the exact-score extra's snr (0.3) needs about 5 paired seeds at the stored spread (relative
        # gain +0.23, sd 0.13); 4 is what the budget affords (130 s per seed for the VE pair); the VP and sub-VP
        # variants, reported beside, run 2 seeds (about 200 s per seed)
        # The 4-seed run of commit 214083a (VE-PC vs VE-P +0.112 [-0.174, +0.398]) said about 23 seeds: beyond the
        # quick budget either way, so quick runs the 3 the verdicts issue asks for (about 170 s of unit time saved)
        seeds={"quick": 3},
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
