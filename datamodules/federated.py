"""Federated image data: a labelled pool split into non-IID clients by a Dirichlet draw.

``digits`` is the embedded offline default (sklearn's 1,797 real handwritten digits,
split train/val/test with a fixed seed, the training part divided among clients).
For the ``full`` preset, two of the paper's datasets are read from ``--data-dir``:

- ``emnist``: EMNIST in its NIST IDX format, read by ``torchvision.datasets.EMNIST``
  from ``DATA_DIR/EMNIST/raw/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte``
  (split ``byclass``: the 62 classes of the paper's EMNIST CR).
- ``cifar100``: the ``cifar-100-python`` pickles (``train``, ``test``; fine labels).

Departures from Reddi et al. (2021), flagged: the paper uses TFF's federated EMNIST
(natural partition by writer, 3,400 clients) and a Pachinko-allocation split of CIFAR-100
(500 clients); those files need TensorFlow Federated's HDF5 tooling, so here both are
divided with the same Dirichlet procedure as ``digits`` (``num_clients`` and ``alpha`` are
config keys). No data augmentation is applied on the clients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from datamodules.images import DatasetNotFoundError, _load_cifar_batch, ensure_archive, load_digits_tensors, split_indices

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"  # torchvision's CIFAR100.url
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"  # torchvision's CIFAR100.tgz_md5
CIFAR100_FOLDER = "cifar-100-python"
EMNIST_CLASSES = {"byclass": 62, "bymerge": 47, "balanced": 47, "letters": 27, "digits": 10, "mnist": 10}
DATASETS = ("digits", "emnist", "cifar100")


# ------------------------------------------------------------------------- partitioning
def dirichlet_partition(
    labels: np.ndarray | torch.Tensor,
    num_clients: int,
    alpha: float,
    seed: int,
    min_size: int = 1,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` among ``num_clients`` with label skew set by ``alpha``.

    For every class c, proportions p_c ~ Dir(alpha * 1_N) over the N clients decide how
    many of that class's (shuffled) examples each client gets, counts ~ Multinomial(n_c,
    p_c); the draw is repeated until every client holds at least ``min_size`` examples.
    This is the per-class Dirichlet procedure of Hsu et al. (2019, arXiv 1909.06335) as
    Flower Datasets' ``DirichletPartitioner`` uses it (also retry-until-min-size), except
    that the counts are drawn rather than floored from cumulative proportions, which
    would hand every single-example class to the last client. Small ``alpha``
    gives each client few classes; ``alpha -> inf`` approaches an IID split.

    labels: (n,) integer class labels. Returns N sorted int64 index arrays that together
    hold every index exactly once; the same ``seed`` gives the same split.
    """
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional; got shape {tuple(y.shape)}")
    n = len(y)
    if not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite number; got {alpha}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1; got {num_clients}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0; got {min_size}")
    if num_clients * max(min_size, 1) > n:
        raise ValueError(
            f"cannot give {num_clients} clients at least {max(min_size, 1)} example(s) each "
            f"from {n} examples; use fewer clients"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(max_tries):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(y == c))
            p_c = rng.dirichlet(np.full(num_clients, float(alpha)))
            counts = rng.multinomial(len(members), p_c)  # unbiased for small classes, unlike floor(cumsum)
            for k, part in enumerate(np.split(members, np.cumsum(counts)[:-1])):
                shards[k].append(part)
        parts = [np.sort(np.concatenate(s)).astype(np.int64) for s in shards]
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) split of {n} examples gave all {num_clients} clients "
        f">= {min_size} examples in {max_tries} draws; raise alpha or lower num_clients/min_size"
    )


def label_skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each client's label histogram and the pool's
    (0 = IID, near 1 = every client holds one class), weighted by client size."""
    y = np.asarray(labels)
    k = int(y.max()) + 1
    pool = np.bincount(y, minlength=k) / len(y)
    tv = [0.5 * np.abs(np.bincount(y[p], minlength=k) / len(p) - pool).sum() for p in parts if len(p)]
    sizes = [len(p) for p in parts if len(p)]
    return float(np.average(tv, weights=sizes))


# -------------------------------------------------------------------------------- loaders
def ensure_emnist(data_dir: str | Path | None, split: str = "byclass") -> Path:
    """The folder holding EMNIST's uncompressed IDX files, or a one-line error saying where to put them."""
    from torchvision.datasets import EMNIST

    if split not in EMNIST_CLASSES:
        raise ValueError(f"unknown EMNIST split {split!r}; known: {', '.join(EMNIST_CLASSES)}")
    if data_dir is None:
        raise DatasetNotFoundError("emnist needs --data-dir PATH (the folder that holds EMNIST/raw/)")
    raw = Path(data_dir).expanduser() / "EMNIST" / "raw"
    kinds = ("images-idx3-ubyte", "labels-idx1-ubyte")
    names = [f"emnist-{split}-{part}-{kind}" for part in ("train", "test") for kind in kinds]
    missing = [name for name in names if not (raw / name).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"EMNIST not found: expected {', '.join(missing)} in {raw} (unzip gzip.zip from "
            f"{EMNIST.url} and gunzip the {split} files there)"
        )
    return raw


def load_emnist(data_dir: str | Path | None, split: str = "byclass") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """EMNIST as {"train": (x uint8 [n,1,28,28], y int64), "test": ...} via torchvision."""
    from torchvision.datasets import EMNIST

    ensure_emnist(data_dir, split)
    out = {}
    for part in ("train", "test"):
        ds = EMNIST(str(Path(data_dir).expanduser()), split=split, train=part == "train", download=False)
        x = ds.data.transpose(1, 2).unsqueeze(1).contiguous()  # NIST stores images transposed
        out[part] = (x, ds.targets.to(torch.int64))
    return out


def ensure_cifar100(data_dir: str | Path | None, download: bool = True) -> Path:
    """``data_dir/cifar-100-python`` (the python version of CIFAR-100)."""
    return ensure_archive("CIFAR-100", data_dir, CIFAR100_FOLDER, ["train", "test"], CIFAR100_URL, CIFAR100_MD5, download)


def load_cifar100(data_dir: str | Path | None, download: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """CIFAR-100 from ``data_dir/cifar-100-python`` as {"train": (x uint8 NCHW, fine y), "test": ...}."""
    folder = ensure_cifar100(data_dir, download)
    out = {}
    for part in ("train", "test"):
        x, y = _load_cifar_batch(folder / part)  # reads "fine_labels" when "labels" is absent
        out[part] = (torch.from_numpy(x), torch.from_numpy(y))
    return out


# ----------------------------------------------------------------------------- DataModule
class FederatedDataModule(L.LightningDataModule):
    """A pool of labelled images held in memory, its training part split among clients.

    After ``setup()``: ``clients`` (one index tensor per client into the training split),
    ``client_data(k)`` -> (x, y) of client k (normalised float32), ``val_dataloader`` and
    ``test_dataloader`` for the server's centralised evaluation of the global model,
    ``num_classes`` and ``in_shape`` (C, H, W). The partition depends on
    ``partition_seed`` only, so every training seed sees the same clients.
    """

    def __init__(
        self,
        name: Literal["digits", "emnist", "cifar100"] = "digits",
        data_dir: str | None = None,
        num_clients: int = 20,
        alpha: float = 0.3,
        min_client_size: int = 2,
        partition_seed: int = 0,
        val_frac: float = 0.1,
        test_frac: float = 0.2,
        emnist_split: str = "byclass",
        eval_batch_size: int = 1024,
    ) -> None:
        super().__init__()
        if name not in DATASETS:
            raise ValueError(f"unknown federated dataset {name!r}; known: {', '.join(DATASETS)}")
        self.save_hyperparameters()
        self.x: dict[str, torch.Tensor] = {}
        self.y: dict[str, torch.Tensor] = {}
        self.clients: list[torch.Tensor] = []
        self.num_classes = 0

    @property
    def in_shape(self) -> tuple[int, int, int]:
        self._require_setup()
        return tuple(self.x["train"].shape[1:])  # type: ignore[return-value]

    def _require_setup(self) -> None:
        if not self.x:
            raise RuntimeError("call setup() before reading the federated data")

    def prepare_data(self) -> None:
        """Fail within seconds when a real dataset is missing (digits needs nothing)."""
        if self.hparams.name == "emnist":
            ensure_emnist(self.hparams.data_dir, self.hparams.emnist_split)
        elif self.hparams.name == "cifar100":
            ensure_cifar100(self.hparams.data_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.x:
            return
        hp = self.hparams
        if hp.name == "digits":
            x, y = load_digits_tensors()
            tr, va, te = (torch.as_tensor(i) for i in split_indices(len(y), hp.partition_seed, hp.val_frac, hp.test_frac))
            splits = {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}
            self.num_classes = 10
        else:
            data = load_emnist(hp.data_dir, hp.emnist_split) if hp.name == "emnist" else load_cifar100(hp.data_dir)
            x, y = data["train"]
            perm = torch.as_tensor(np.random.default_rng(hp.partition_seed).permutation(len(y)))
            n_val = int(len(y) * hp.val_frac)
            tr, va = perm[n_val:], perm[:n_val]
            splits = {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": data["test"]}
            self.num_classes = EMNIST_CLASSES[hp.emnist_split] if hp.name == "emnist" else 100
        scale = 255.0 if splits["train"][0].dtype == torch.uint8 else 1.0
        xtr = splits["train"][0].float() / scale
        mean = xtr.mean(dim=(0, 2, 3), keepdim=True)  # per-channel statistics of the training split
        std = xtr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        for split, (xs, ys) in splits.items():
            self.x[split] = ((xs.float() / scale - mean) / std).contiguous()
            self.y[split] = ys.to(torch.int64).contiguous()
        parts = dirichlet_partition(self.y["train"], hp.num_clients, hp.alpha, hp.partition_seed, hp.min_client_size)
        self.clients = [torch.as_tensor(p) for p in parts]

    def client_data(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x [n_k, C, H, W] float32, y [n_k] int64) of client ``k``."""
        self._require_setup()
        if not 0 <= k < len(self.clients):
            raise ValueError(f"client {k} does not exist; clients are 0..{len(self.clients) - 1}")
        idx = self.clients[k]
        return self.x["train"][idx], self.y["train"][idx]

    def client_sizes(self) -> list[int]:
        self._require_setup()
        return [len(c) for c in self.clients]

    def _loader(self, split: str) -> DataLoader:
        self._require_setup()
        return DataLoader(TensorDataset(self.x[split], self.y[split]), batch_size=self.hparams.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
