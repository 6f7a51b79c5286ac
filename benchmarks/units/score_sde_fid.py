"""score_sde units, part 1: the image data, the run's caches, and the FID / IS / KID choke point.

Feature spaces: with Inception weights the metrics are ``*_inception``; offline they are
``*_clf``, the same formulas in the features of a small CNN classifier trained on the same
dataset and registered with torch-fidelity as ``iclrbench-clf-<dataset>``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.unit import UnitContext, is_rank_zero

INCEPTION_MIN_SAMPLES = 2048  # FID is biased below the Inception feature dimension (2048)
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
    # val is not used for training or model selection here: with test it is the held-out set of the FID floor
    return GenImages("digits", {"train": x[tr], "val": x[va], "test": x[te]}, {"train": y[tr], "val": y[va], "test": y[te]},
                     n_bins=17)


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



class FidScorer:
    """FID / IS / KID of image sets against the training split's statistics (cached per run),
    in the run's feature space; ``floor()`` scores the held-out test images the same way."""

    def __init__(self, ctx: UnitContext, data: GenImages, cuda: bool = False) -> None:
        cfg = ctx.config
        self.data, self.cfg, self.cuda = data, cfg, cuda
        self.extractor, self.tag, self.weights, self.info = feature_space(ctx, data)
        self.channels = 3 if self.tag == "inception" else None
        self.real = to_uint8_nchw(data.x["train"], channels=self.channels)
        self.cache_root = Path(ctx.artifacts_dir) / "cache" / "fidelity"
        w = self.weights
        self.ref_name = f"{data.name}-train{len(self.real)}-{_key(w, Path(w).stat().st_mtime if w else 0)}"

    def ref_cached(self) -> bool:
        root = self.cache_root
        return any(root.glob(f"{self.ref_name}-{self.extractor}-*")) if root.is_dir() else False

    def score(self, x: torch.Tensor) -> dict[str, float]:
        """Metrics of float images in [-1, 1] (clipped, as the reference clips its samples)."""
        fake = to_uint8_nchw(x, clip=True, channels=self.channels)
        return fidelity_metrics(fake, self.real, self.extractor, self.tag, self.weights, str(self.cache_root),
                                self.ref_name, self.cfg["isc_splits"], self.cfg["kid_subset_size"], cuda=self.cuda)

    def heldout(self) -> torch.Tensor:
        """Every real image not in the reference (training) split: test, and val where the data has one."""
        return torch.cat([self.data.x[k] for k in ("test", "val") if k in self.data.x])

    def floor_count(self) -> int:
        """Images behind the floor, and behind the models' matched FID (``fid_<tag>@n=<count>``)."""
        return min(len(self.heldout()), int(self.cfg["n_samples"]))

    def floor(self) -> float:
        """FID of ``floor_count()`` real held-out images against the reference: what a perfect sampler
        scores with as many images in the same feature space (FID is biased upwards at small counts, so a
        floor at fewer images than the models' is not a floor: compare it with ``fid_<tag>@n=<count>``)."""
        return self.score(self.heldout()[: self.floor_count()])[f"fid_{self.tag}"]
