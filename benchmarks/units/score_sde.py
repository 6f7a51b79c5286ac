"""score_sde: what a unit runs (run and dataset factories; the extra is in ``score_sde_extras``,
the FID machinery in ``score_sde_fid``). The declaration, verdict and the description of the
benchmark are in ``benchmarks/specs/score_sde.py``.

A unit trains (or reuses) its SDE's score network, draws ``n_samples`` with its sampler and
scores them. Variants that share an SDE share one network: it is trained once per (config,
seed) and cached under the run's artifacts folder, so VE-PC, VE-P (and the snr sweep) use the
same VE network and VP-PC, DDPM and VP-ODE the same VP network. Every sampler of a seed starts
from the same prior draws (seeded), so per-seed differences are paired.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.train import make_trainer
from benchmarks.unit import Measurement, UnitContext
from benchmarks.units.score_sde_fid import (  # noqa: F401  (re-exported: the tests and extras use them here)
    EXTRACTORS, INCEPTION_MIN_SAMPLES, FidScorer, GenImages, SmallClassifier, _key, cached, cifar10, digits,
    feature_space, fidelity_metrics, register_classifier_extractor, to_uint8_nchw, train_classifier,
)
from lit_modules.score_sde import (
    ScoreSDEModule, bits_per_dim, ddpm_ancestral, dequantize, make_sde, ode_likelihood, ode_sampler, pc_sampler,
)

NET_KEYS = ("sde", "sigma_min", "sigma_max", "beta_min", "beta_max", "num_scales", "ch", "ch_mult",
            "num_res_blocks", "dropout", "lr", "warmup", "ema_decay", "train_eps", "fourier_scale")
SAMPLERS = ("pc", "ode", "ddpm")


# ------------------------------------------------------------------------------- training
def _device(ctx: UnitContext) -> torch.device:
    gpu = ctx.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def _net_cfg(cfg: dict) -> dict[str, Any]:
    return {k: (tuple(cfg[k]) if k == "ch_mult" else cfg[k]) for k in NET_KEYS}


def full_params(config: dict, variant: str = "") -> int:
    """Trainable parameters of the score network for ``config`` on 32x32x3 images (not its EMA copy). Built on the CPU
    (35M parameters, 140 MB): on the meta device the SDE's discretisation tables met CPU tensors, depending on what
    ran before in the process."""
    module = ScoreSDEModule(in_ch=3, reduce_mean=config["sde"] != "ve", **_net_cfg(config))
    return sum(p.numel() for p in module.net.parameters())


def trained_model(ctx: UnitContext, data: GenImages) -> tuple[ScoreSDEModule, dict[str, float]]:
    """The variant's score network, trained once per (net config, data, steps, seed) per run."""
    cfg = ctx.config
    net_cfg = _net_cfg(cfg)
    key = _key(net_cfg, data.name, cfg["max_steps"], cfg["batch_size"], cfg["grad_clip"], ctx.seed)
    path = Path(ctx.artifacts_dir) / "cache" / f"net-{cfg['sde']}-{key}-seed{ctx.seed}.pt"

    def train() -> dict[str, Any]:
        torch.manual_seed(ctx.seed)
        module = ScoreSDEModule(in_ch=data.shape[0], reduce_mean=cfg["sde"] != "ve", **net_cfg)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x["train"]),
                                             batch_size=cfg["batch_size"], shuffle=True, drop_last=True)
        trainer = make_trainer(ctx, log_name="score_network", max_steps=cfg["max_steps"],
                               gradient_clip_val=cfg["grad_clip"], limit_val_batches=0)
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader)
        seconds = time.perf_counter() - start
        loss = float(trainer.callback_metrics.get("train_loss", torch.tensor(float("nan"))))
        return {"state": module.state_dict(), "train_s": seconds, "loss_dsm": loss}

    saved, _ = cached(path, train)
    module = ScoreSDEModule(in_ch=data.shape[0], reduce_mean=cfg["sde"] != "ve", **net_cfg)
    module.load_state_dict(saved["state"])
    module.to(_device(ctx)).eval()
    return module, {"train_s": saved["train_s"], "loss_dsm": saved["loss_dsm"]}


# ------------------------------------------------------------------------------- sampling
def sampler_sde(cfg: dict, N_pc: int | None = None):
    """The SDE a variant samples with: N = sample_steps for PC (P + C) and the ODE, 2x that for
    predictor-only and DDPM samplers (equal score evaluations with PC)."""
    if cfg["sampler"] not in SAMPLERS:
        raise ValueError(f"unknown sampler {cfg['sampler']!r}; known: {', '.join(SAMPLERS)}")
    steps = cfg["sample_steps"] if N_pc is None else N_pc
    one_eval_per_step = cfg["sampler"] == "ddpm" or (cfg["sampler"] == "pc" and cfg["corrector"] == "none")
    return make_sde(cfg["sde"], cfg["sigma_min"], cfg["sigma_max"], cfg["beta_min"], cfg["beta_max"],
                    steps * (2 if one_eval_per_step else 1), cfg["sample_eps"], cfg["discretization"])


def sample_with(sde, score_fn, cfg: dict, shape: tuple[int, ...], device: torch.device | str = "cpu"):
    """One batch with the variant's sampler: (samples, NFE per sample)."""
    if cfg["sampler"] == "pc":
        return pc_sampler(sde, score_fn, shape, cfg["predictor"], cfg["corrector"], cfg["snr"],
                          cfg["n_corrector_steps"], device=device)
    if cfg["sampler"] == "ode":
        return ode_sampler(sde, score_fn, shape, rtol=cfg["ode_tol"], atol=cfg["ode_tol"], device=device)
    return ddpm_ancestral(sde, score_fn, shape, device=device, variance=cfg["ancestral_variance"])


def draw_samples(module: ScoreSDEModule, cfg: dict, n: int, shape: tuple[int, ...], device: torch.device):
    """n samples with the variant's sampler; (samples, NFE per sample, seconds)."""
    h = module.hparams
    sde = sampler_sde({**cfg, **{k: h[k] for k in ("sde", "sigma_min", "sigma_max", "beta_min", "beta_max")}})
    score_fn = module.score_fn(ema=True)
    chunks, nfes, start = [], [], time.perf_counter()
    for lo in range(0, n, cfg["sample_batch"]):
        b = (min(cfg["sample_batch"], n - lo), *shape)
        x, nfe = sample_with(sde, score_fn, cfg, b, device)
        chunks.append(x.cpu())
        nfes.append((nfe, b[0]))
    seconds = time.perf_counter() - start
    return torch.cat(chunks), sum(k * m for k, m in nfes) / n, seconds


def test_bpd(module: ScoreSDEModule, data: GenImages, cfg: dict, device: torch.device) -> tuple[float, float]:
    """Mean bits/dim of ``n_bpd`` uniformly dequantised test images by the ODE (Hutchinson); and NFE."""
    x01 = (data.x["test"][: cfg["n_bpd"]] + 1) / 2
    bpds, nfes = [], []
    for lo in range(0, len(x01), cfg["sample_batch"]):  # one ODE solve per batch, as the reference
        y = (dequantize(x01[lo: lo + cfg["sample_batch"]], data.n_bins) * 2 - 1).to(device)
        logp, _, nfe = ode_likelihood(module.sde, module.score_fn(ema=True), y, rtol=cfg["ode_tol"], atol=cfg["ode_tol"])
        bpds.append(bits_per_dim(logp, y[0].numel(), data.n_bins).cpu())
        nfes.append(nfe)
    return float(torch.cat(bpds).mean()), float(np.mean(nfes))


def save_grid(x: torch.Tensor, path: Path, nrow: int = 8, scale: int = 4) -> None:
    from torchvision.utils import save_image

    x = F.interpolate(((x[: nrow * nrow].clamp(-1, 1) + 1) / 2), scale_factor=scale, mode="nearest")
    save_image(x, path, nrow=nrow, padding=2, pad_value=1.0)


def snr_values(cfg: dict) -> list[float]:
    """The corrector's snr first (unqualified rows), then the sweep's others (rows ``@snr=``)."""
    if not (cfg["sweep_snr"] and cfg["sampler"] == "pc" and cfg["corrector"] != "none"):
        return [cfg["snr"]]
    return [cfg["snr"], *[s for s in cfg["snr_sweep"] if not math.isclose(s, cfg["snr"])]]


def _feature_throughput(scorer: FidScorer, x: torch.Tensor, device: torch.device) -> float:
    """Images/s of the feature extractor alone on the generated samples (median of 3 passes)."""
    from torch_fidelity.utils import create_feature_extractor

    fe = create_feature_extractor(scorer.extractor, ["penultimate" if scorer.tag == "clf" else "2048"],
                                  cuda=device.type == "cuda", feature_extractor_weights_path=scorer.weights, verbose=False)
    fake = to_uint8_nchw(x, clip=True, channels=scorer.channels)
    timings = []
    with torch.no_grad():
        for _ in range(3):
            t0 = time.perf_counter()
            for lo in range(0, len(fake), 256):
                fe(fake[lo: lo + 256].to(device))
            timings.append(time.perf_counter() - t0)
    return len(fake) / sorted(timings)[1]


def run(ctx: UnitContext) -> list[Measurement]:
    cfg = ctx.config
    device = _device(ctx)
    data = ctx.datamodule()
    scorer = FidScorer(ctx, data, cuda=device.type == "cuda")
    ref_cached = scorer.ref_cached()
    module, train_info = trained_model(ctx, data)
    rows: list[Measurement] = []
    for snr in snr_values(cfg):
        torch.manual_seed(ctx.seed + 1)  # the same prior draws for every sampler of this seed (paired)
        samples, nfe, sample_s = draw_samples(module, {**cfg, "snr": snr}, cfg["n_samples"], data.shape, device)
        start = time.perf_counter()
        metrics = scorer.score(samples)
        metric_s = time.perf_counter() - start
        if snr != cfg["snr"]:
            rows += [Measurement(f"{k}@snr={snr:g}", v) for k, v in metrics.items() if not k.startswith("is_")]
            continue
        if ctx.seed == 0:
            save_grid(samples, ctx.artifact(f"samples_{ctx.variant}.png"))
        rows += [Measurement(k, v) for k, v in metrics.items()]
        n_floor = scorer.floor_count()
        if n_floor < len(samples):  # the same count as the real-data floor
            rows.append(Measurement(f"fid_{scorer.tag}@n={n_floor}", scorer.score(samples[:n_floor])[f"fid_{scorer.tag}"]))
        rows += [
            Measurement("nfe", nfe), Measurement("n_samples", len(samples)),
            Measurement("sampling_s", sample_s), Measurement("score_evals_per_s", nfe * len(samples) / sample_s),
            Measurement("metric_s", metric_s), Measurement("fid_features_per_s", _feature_throughput(scorer, samples, device)),
            Measurement("out_of_range_frac", float(((samples < -1) | (samples > 1)).float().mean())),
        ]
    bpd, bpd_nfe = cached(Path(ctx.artifacts_dir) / "cache" / f"bpd-{_net_id(ctx)}.pt",
                          lambda: test_bpd(module, data, cfg, device))[0] if cfg["n_bpd"] else (math.nan, math.nan)
    rows += [
        Measurement(f"fid_floor_{scorer.tag}", scorer.floor()),
        Measurement("bpd", bpd), Measurement("bpd_nfe", bpd_nfe), Measurement("ref_stats_cached", float(ref_cached)),
        # one name per definition: the reference sums the squared error over dimensions for VE (reduce_mean False)
        # and averages it for VP / sub-VP, so the two are not one quantity
        Measurement(f"loss_dsm@reduce={'sum' if cfg['sde'] == 've' else 'mean'}", train_info["loss_dsm"]),
        Measurement("train_s", train_info["train_s"]),
    ]
    rows += [Measurement(k, v) for k, v in scorer.info.items()]
    return rows


def _net_id(ctx: UnitContext) -> str:
    cfg = ctx.config
    return _key(_net_cfg(cfg), ctx.dataset, cfg["max_steps"], cfg["batch_size"], cfg["n_bpd"], cfg["ode_tol"], ctx.seed)
