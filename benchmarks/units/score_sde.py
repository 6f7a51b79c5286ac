"""score_sde: what a unit runs (run, extras, dataset factories). The declaration, verdict and
the description of the benchmark are in ``benchmarks/specs/score_sde.py``."""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.train import make_trainer
from benchmarks.unit import Measurement, UnitContext, is_rank_zero
from lit_modules.score_sde import (
    ScoreSDEModule, bits_per_dim, ddpm_ancestral, dequantize, make_sde, ode_likelihood, ode_sampler, pc_sampler,
)

INCEPTION_MIN_SAMPLES = 2048  # FID is biased below the Inception feature dimension (2048)
NET_KEYS = ("sde", "sigma_min", "sigma_max", "beta_min", "beta_max", "num_scales", "ch", "ch_mult",
            "num_res_blocks", "dropout", "lr", "warmup", "ema_decay", "train_eps", "fourier_scale")
SAMPLERS = ("pc", "ode", "ddpm")
EXTRACTORS = ("auto", "clf", "inception")


# ------------------------------------------------------------------------------------ data
@dataclass
class GenImages:
    """Images in [-1, 1], NCHW float32, with their labels (for the offline feature extractor)."""

    name: str
    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    n_bins: int  # grey levels of the raw data: 17 for digits (0..16), 256 for 8-bit images

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x["train"].shape[1:])


def digits(config: dict, data_dir: str | None, seed: int) -> GenImages:
    """sklearn digits, split with ``split_seed`` (fixed, so all seeds share reference statistics)."""
    from datamodules.images import load_digits_tensors, split_indices

    x, y = load_digits_tensors()
    tr, va, te = split_indices(len(y), config["split_seed"], 0.1, 0.2)
    x = x * 2 - 1
    return GenImages("digits", {"train": x[tr], "test": x[te]}, {"train": y[tr], "test": y[te]}, n_bins=17)


def cifar10(config: dict, data_dir: str | None, seed: int) -> GenImages:
    from datamodules.images import load_cifar10

    data = load_cifar10(data_dir)
    out = {split: torch.from_numpy(data[split][0]).float() / 255 * 2 - 1 for split in ("train", "test")}
    labels = {split: torch.from_numpy(data[split][1]) for split in ("train", "test")}
    return GenImages("cifar10", out, labels, n_bins=256)


# -------------------------------------------------------------------------------- caching
@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached(path: Path, compute: Callable[[], Any]) -> tuple[Any, bool]:
    """``torch.load(path)`` if present, else ``compute()`` saved atomically; (value, was_cached)."""
    with _locked(path):
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=True), True
        value = compute()
        if is_rank_zero():
            tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
            torch.save(value, tmp)
            os.replace(tmp, path)
        return value, False


def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------- FID / IS / KID choke point
def to_uint8_nchw(x: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0), clip: bool = False,
                  channels: int | None = None) -> torch.Tensor:
    """The one conversion to what torch-fidelity reads: uint8 (N, C, H, W).

    Floats must be finite and lie in ``value_range`` (or be clipped to it with ``clip=True``,
    as the reference does with its samples); uint8 passes through; other dtypes are refused.
    ``channels=3`` repeats a grey channel for Inception.
    """
    if x.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W); got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        out = x
    elif x.is_floating_point():
        if not torch.isfinite(x).all():
            raise ValueError("images contain NaN or infinite values")
        lo, hi = value_range
        if not clip and (x.min() < lo or x.max() > hi):
            raise ValueError(f"images outside {value_range}: min {float(x.min()):.4g}, max {float(x.max()):.4g} "
                             "(pass clip=True to clip generated samples)")
        out = torch.round((x.clamp(lo, hi) - lo) / (hi - lo) * 255).to(torch.uint8)
    else:
        raise ValueError(f"images must be floating point in {value_range} or uint8; got {x.dtype}")
    if channels is not None and out.shape[1] != channels:
        if out.shape[1] != 1:
            raise ValueError(f"cannot turn {out.shape[1]} channels into {channels}")
        out = out.repeat(1, channels, 1, 1)
    return out.contiguous().cpu()


class SmallClassifier(nn.Module):
    """The offline feature network: three 3x3 convs, global average pool, linear head.
    Reads uint8 images (what torch-fidelity passes) and maps them to [-1, 1] itself."""

    def __init__(self, in_ch: int = 1, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x_u8.float() / 255 * 2 - 1)
        return h, self.head(h)


def train_classifier(data: GenImages, steps: int, width: int = 32, seed: int = 0) -> dict[str, Any]:
    """Train the feature network on the training split (Adam, plain loop: a metric tool, not the
    benchmark's model); returns its state, config and test accuracy."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xtr, ytr = to_uint8_nchw(data.x["train"]), data.y["train"]
    net = SmallClassifier(xtr.shape[1], width, int(ytr.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        idx = torch.randint(len(ytr), (128,), generator=g)
        loss = F.cross_entropy(net(xtr[idx])[1], ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(to_uint8_nchw(data.x["test"]))[1].argmax(1) == data.y["test"]).float().mean().item()
    return {"state": net.state_dict(), "config": dict(in_ch=xtr.shape[1], width=width, num_classes=int(ytr.max()) + 1),
            "test_acc": acc}


def _fidelity():
    import torch_fidelity  # noqa: F401  (imported lazily: it pulls in torchvision)
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class ClassifierFeatureExtractor(FeatureExtractorBase):
        """torch-fidelity wrapper of :class:`SmallClassifier`; weights from ``feature_extractor_weights_path``."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            # **kwargs: torch-fidelity passes every calculate_metrics option to extractors.
            super().__init__(name, features_list)
            if feature_extractor_weights_path is None:
                raise ValueError(f"{name} needs feature_extractor_weights_path (the trained classifier)")
            saved = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
            self.net = SmallClassifier(**saved["config"])
            self.net.load_state_dict(saved["state"])

        @staticmethod
        def get_provided_features_list():
            return "penultimate", "logits"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits", "fid": "penultimate", "kid": "penultimate", "prc": "penultimate"}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):
            h, logits = self.net(x)
            feats = {"penultimate": h, "logits": logits}
            return tuple(feats[name] for name in self.features_list)

    return ClassifierFeatureExtractor


def register_classifier_extractor(dataset: str) -> str:
    """Register the offline extractor for ``dataset`` with torch-fidelity (once); its name."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    name = f"iclrbench-clf-{dataset}"
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, _fidelity())
    return name


class _Images(torch.utils.data.Dataset):
    def __init__(self, x_u8: torch.Tensor) -> None:
        self.x = x_u8

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def fidelity_metrics(samples_u8: torch.Tensor, reference_u8: torch.Tensor, extractor: str, tag: str,
                     weights_path: str | None, cache_root: str | None, reference_name: str | None,
                     isc_splits: int = 10, kid_subset_size: int = 1000, cuda: bool = False) -> dict[str, float]:
    """FID, IS and KID of samples against a reference set, through torch-fidelity.

    ``extractor`` is a registered torch-fidelity name; ``tag`` ("inception" or "clf") names
    the metrics. The reference set's features are cached under ``cache_root`` by
    ``reference_name`` (None: no caching). Sample counts too small for a metric are refused.
    """
    import torch_fidelity

    n = min(len(samples_u8), len(reference_u8))
    if n < max(2, isc_splits):
        raise ValueError(f"too few samples for FID/IS: {n} (need at least {max(2, isc_splits)}: "
                         f"a covariance and {isc_splits} IS splits)")
    if tag == "inception" and len(samples_u8) < INCEPTION_MIN_SAMPLES:
        warnings.warn(f"Inception FID from {len(samples_u8)} < {INCEPTION_MIN_SAMPLES} samples is biased upwards "
                      "and not comparable to published numbers", stacklevel=2)
    out = torch_fidelity.calculate_metrics(
        input1=_Images(samples_u8), input2=_Images(reference_u8), fid=True, isc=True, kid=True,
        feature_extractor=extractor, feature_extractor_weights_path=weights_path,
        input2_cache_name=reference_name, cache_root=cache_root, cache=reference_name is not None,
        isc_splits=isc_splits, kid_subset_size=min(kid_subset_size, n), cuda=cuda, save_cpu_ram=True,
        verbose=False, batch_size=256,
    )
    return {f"fid_{tag}": out["frechet_inception_distance"], f"is_{tag}": out["inception_score_mean"],
            f"kid_{tag}": out["kernel_inception_distance_mean"]}


def _inception_weights(config: dict) -> str | None:
    """The Inception weights to use: ``fid_weights``, or torch-fidelity's file already in the hub cache."""
    if config["fid_weights"]:
        path = Path(config["fid_weights"]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"fid_weights={config['fid_weights']!r} is not a file; expected torch-fidelity's "
                                    "weights-inception-2015-12-05-6726825d.pth")
        return str(path)
    hub = Path(torch.hub.get_dir()) / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    return str(hub) if hub.is_file() else None


def feature_space(ctx: UnitContext, data: GenImages) -> tuple[str, str, str, dict[str, float]]:
    """(torch-fidelity extractor name, metric tag, weights path, info rows) for this run."""
    cfg = ctx.config
    choice = cfg["fid_extractor"]
    if choice not in EXTRACTORS:
        raise ValueError(f"unknown fid_extractor {choice!r}; known: {', '.join(EXTRACTORS)}")
    weights = _inception_weights(cfg) if choice in ("auto", "inception") else None
    if choice == "inception" and weights is None:
        raise FileNotFoundError("fid_extractor=inception needs the Inception weights: --set fid_weights=PATH to "
                                "torch-fidelity's weights-inception-2015-12-05-6726825d.pth (no network here)")
    if weights is not None:
        return "inception-v3-compat", "inception", weights, {}
    path = Path(ctx.artifacts_dir) / "cache" / f"clf-{data.name}-{_key(cfg['clf_steps'], data.shape)}.pt"
    saved, _ = cached(path, lambda: train_classifier(data, cfg["clf_steps"]))
    return register_classifier_extractor(data.name), "clf", str(path), {"clf_test_acc": saved["test_acc"]}


# ------------------------------------------------------------------------------- training
def _device(ctx: UnitContext) -> torch.device:
    gpu = ctx.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def trained_model(ctx: UnitContext, data: GenImages) -> tuple[ScoreSDEModule, dict[str, float]]:
    """The variant's score network, trained once per (net config, data, steps, seed) per run."""
    cfg = ctx.config
    net_cfg = {k: (tuple(cfg[k]) if k == "ch_mult" else cfg[k]) for k in NET_KEYS}
    key = _key(net_cfg, data.name, cfg["max_steps"], cfg["batch_size"], cfg["grad_clip"], ctx.seed)
    path = Path(ctx.artifacts_dir) / "cache" / f"net-{cfg['sde']}-{key}-seed{ctx.seed}.pt"

    def train() -> dict[str, Any]:
        torch.manual_seed(ctx.seed)
        module = ScoreSDEModule(in_ch=data.shape[0], reduce_mean=cfg["sde"] != "ve", **net_cfg)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x["train"]),
                                             batch_size=cfg["batch_size"], shuffle=True, drop_last=True)
        trainer = make_trainer(ctx, log_name="score_network", max_steps=cfg["max_steps"], gradient_clip_val=cfg["grad_clip"], limit_val_batches=0)
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
def draw_samples(module: ScoreSDEModule, cfg: dict, n: int, shape: tuple[int, ...], device: torch.device):
    """n samples with the variant's sampler; (samples, NFE per sample, seconds)."""
    if cfg["sampler"] not in SAMPLERS:
        raise ValueError(f"unknown sampler {cfg['sampler']!r}; known: {', '.join(SAMPLERS)}")
    h = module.hparams
    score_fn = module.score_fn(ema=True)
    steps = cfg["sample_steps"] * (2 if cfg["sampler"] == "ddpm" else 1)  # DDPM at the NFE of PC (P + C)
    sde = make_sde(h.sde, h.sigma_min, h.sigma_max, h.beta_min, h.beta_max, steps)
    chunks, nfes, start = [], [], time.perf_counter()
    for lo in range(0, n, cfg["sample_batch"]):
        b = (min(cfg["sample_batch"], n - lo), *shape)
        if cfg["sampler"] == "pc":
            x, nfe = pc_sampler(sde, score_fn, b, cfg["predictor"], cfg["corrector"], cfg["snr"],
                                cfg["n_corrector_steps"], cfg["sample_eps"], device=device)
        elif cfg["sampler"] == "ode":
            x, nfe = ode_sampler(sde, score_fn, b, cfg["sample_eps"], cfg["ode_tol"], cfg["ode_tol"], device=device)
        else:
            x, nfe = ddpm_ancestral(sde, score_fn, b, cfg["sample_eps"], device=device)
        chunks.append(x.cpu())
        nfes.append((nfe, b[0]))
    seconds = time.perf_counter() - start
    nfe_mean = sum(k * m for k, m in nfes) / n
    return torch.cat(chunks), nfe_mean, seconds


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


def run(ctx: UnitContext) -> list[Measurement]:
    cfg = ctx.config
    device = _device(ctx)
    data = ctx.datamodule()
    extractor, tag, weights, info = feature_space(ctx, data)
    module, train_info = trained_model(ctx, data)
    torch.manual_seed(ctx.seed + 1)  # the same sampling noise whichever units ran before
    samples, nfe, sample_s = draw_samples(module, cfg, cfg["n_samples"], data.shape, device)
    out_of_range = float(((samples < -1) | (samples > 1)).float().mean())
    if ctx.seed == 0:
        save_grid(samples, ctx.artifact(f"samples_{ctx.variant}.png"))
    channels = 3 if tag == "inception" else None
    fake = to_uint8_nchw(samples, clip=True, channels=channels)
    real = to_uint8_nchw(data.x["train"], channels=channels)
    cache_root = Path(ctx.artifacts_dir) / "cache" / "fidelity"
    ref_name = f"{data.name}-train{len(real)}-{_key(weights, Path(weights).stat().st_mtime if weights else 0)}"
    ref_cached = any(cache_root.glob(f"{ref_name}-{extractor}-*")) if cache_root.is_dir() else False
    start = time.perf_counter()
    metrics = fidelity_metrics(fake, real, extractor, tag, weights, str(cache_root), ref_name, cfg["isc_splits"],
                               cfg["kid_subset_size"], cuda=device.type == "cuda")
    metric_s = time.perf_counter() - start
    rows = [Measurement(k, v) for k, v in metrics.items()]
    # Feature throughput of the extractor alone, on the generated samples (median of 3 passes).
    from torch_fidelity.utils import create_feature_extractor

    fe = create_feature_extractor(extractor, ["penultimate" if tag == "clf" else "2048"], cuda=device.type == "cuda",
                                  feature_extractor_weights_path=weights, verbose=False)
    timings = []
    with torch.no_grad():
        for _ in range(3):
            t0 = time.perf_counter()
            for lo in range(0, len(fake), 256):
                fe(fake[lo: lo + 256].to(device))
            timings.append(time.perf_counter() - t0)
    bpd, bpd_nfe = cached(Path(ctx.artifacts_dir) / "cache" / f"bpd-{_net_id(ctx)}.pt",
                          lambda: test_bpd(module, data, cfg, device))[0] if cfg["n_bpd"] else (math.nan, math.nan)
    rows += [
        Measurement("bpd", bpd), Measurement("bpd_nfe", bpd_nfe),
        Measurement("nfe", nfe), Measurement("n_samples", len(samples)),
        Measurement("sampling_s", sample_s), Measurement("score_evals_per_s", nfe * len(samples) / sample_s),
        Measurement("fid_features_per_s", len(fake) / sorted(timings)[1]), Measurement("metric_s", metric_s),
        Measurement("ref_stats_cached", float(ref_cached)), Measurement("out_of_range_frac", out_of_range),
        Measurement("loss_dsm", train_info["loss_dsm"]), Measurement("train_s", train_info["train_s"]),
    ]
    rows += [Measurement(k, v) for k, v in info.items()]
    return rows


def _net_id(ctx: UnitContext) -> str:
    cfg = ctx.config
    return _key({k: cfg[k] for k in NET_KEYS}, ctx.dataset, cfg["max_steps"], cfg["batch_size"], cfg["n_bpd"],
                cfg["ode_tol"], ctx.seed)


# ------------------------------------------------------------ exact-score mixture extra
def exact_score_mixture(ctx: UnitContext) -> list[Measurement]:
    """Every variant's sampler on a 2-D mixture of eight Gaussians with its exact score: no
    network error, so what is left is the sampler's. Rows per variant: the gap between the mean
    true log-density of the samples and of real data (0 for a perfect sampler), and the error of
    the ODE log-likelihood (exact divergence) against the true log-density; plus a scatter plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.registry import get_benchmark
    from datamodules.mixtures import make_mixture

    cfg, bench = ctx.config, get_benchmark(ctx.benchmark)
    mixture = make_mixture("eight_gaussians")
    real = mixture.sample(cfg["mixture_samples"])
    target = float(mixture.log_prob(real).mean())
    test = mixture.sample(cfg["mixture_nll_points"]).double()
    rows, panels = [], []
    for variant in bench.variants:
        vcfg = bench.config(ctx.preset, variant.name, {k: cfg[k] for k in ("sample_steps", "snr", "ode_tol")})
        steps = vcfg["sample_steps"] * (2 if vcfg["sampler"] == "ddpm" else 1)
        sde = make_sde(vcfg["sde"], vcfg["sigma_min"], vcfg["sigma_max"], vcfg["beta_min"], vcfg["beta_max"], steps)
        score = mixture.score_fn(sde)
        shape = (cfg["mixture_samples"], 2)
        if vcfg["sampler"] == "pc":
            x, nfe = pc_sampler(sde, score, shape, vcfg["predictor"], vcfg["corrector"], vcfg["snr"],
                                vcfg["n_corrector_steps"], vcfg["sample_eps"])
        elif vcfg["sampler"] == "ode":
            x, nfe = ode_sampler(sde, score, shape, vcfg["sample_eps"], vcfg["ode_tol"], vcfg["ode_tol"])
        else:
            x, nfe = ddpm_ancestral(sde, score, shape, vcfg["sample_eps"])
        gap = abs(float(mixture.log_prob(x).mean()) - target)
        logp, _, _ = ode_likelihood(sde, score, test, divergence="exact")
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
