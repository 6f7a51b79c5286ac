"""Image data: sklearn's digits (embedded, offline) and CIFAR-10 (its python-pickle format).

``digits`` is the default everywhere: 1,797 real 8x8 handwritten digits that ship inside
scikit-learn. ``cifar10`` reads the standard ``cifar-10-batches-py`` folder under
``--data-dir``; when it is missing it downloads it if the network answers, and otherwise
fails within seconds saying where to put the files. The pickles are read with a restricted
unpickler that can only rebuild numpy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
import socket
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from datamodules import DatasetNotFoundError  # noqa: F401  (raised here; re-exported)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # torchvision's source
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_TEST = "test_batch"




# ------------------------------------------------------------------------------- digits
def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's digits as (x float32 [1797, 1, 8, 8] in [0, 1], y int64 [1797])."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel range 0..16
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    return x, y


def split_indices(n: int, seed: int, val_frac: float = 0.1, test_frac: float = 0.2) -> tuple[np.ndarray, ...]:
    """A seeded random split of ``range(n)`` into (train, val, test) index arrays.

    Sizes are rounded down to even numbers so that two DDP processes see equal halves
    (no sampler padding, no double-counted example)."""
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"val_frac + test_frac must be in [0, 1); got {val_frac} + {test_frac}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(n * test_frac) // 2 * 2
    n_val = int(n * val_frac) // 2 * 2
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def subsample(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A class-stratified ``fraction`` of ``indices`` (at least one example per class)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"data fraction must be in (0, 1]; got {fraction}")
    if fraction == 1:
        return indices
    rng = np.random.default_rng(seed + 7919)  # a distinct stream from the split's
    keep = []
    for c in np.unique(labels[indices]):
        members = indices[labels[indices] == c]
        k = max(1, round(len(members) * fraction))
        keep.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(keep))


# ------------------------------------------------------------------------------ CIFAR-10
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, bytes and numpy arrays; refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset pickle")
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        raw = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    batch = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}  # py2 str or py3 bytes keys
    data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64)
    return data, labels


def _online(host: str = "www.cs.toronto.edu", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def ensure_archive(
    label: str, data_dir: str | Path | None, folder_name: str, needed: list[str], url: str, md5: str, download: bool = True
) -> Path:
    """``data_dir/folder_name`` holding ``needed`` files, downloaded and extracted from ``url``
    when missing and online; else a :class:`DatasetNotFoundError`, within seconds, that says
    where to put which files."""
    if data_dir is None:
        raise DatasetNotFoundError(f"{label} needs --data-dir PATH (the folder that holds or will hold {folder_name}/)")
    root = Path(data_dir).expanduser()
    folder = root / folder_name
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing and download and _online():
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(url, str(root), md5=md5)
        missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{label} not found: expected {', '.join(missing)} in {folder} (from {url}); "
            f"no network to download it. Extract the archive under {root}."
        )
    return folder


def ensure_cifar10(data_dir: str | Path | None, download: bool = True) -> Path:
    """The ``cifar-10-batches-py`` folder (the python version of CIFAR-10)."""
    return ensure_archive("CIFAR-10", data_dir, CIFAR10_FOLDER, [*CIFAR10_TRAIN, CIFAR10_TEST], CIFAR10_URL, CIFAR10_MD5, download)


def load_cifar10(data_dir: str | Path | None, download: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 from ``data_dir/cifar-10-batches-py`` as {"train": (x uint8 NCHW, y), "test": ...}."""
    folder = ensure_cifar10(data_dir, download)
    train = [_load_cifar_batch(folder / name) for name in CIFAR10_TRAIN]
    return {
        "train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
        "test": _load_cifar_batch(folder / CIFAR10_TEST),
    }


# ---------------------------------------------------------------------------- DataModule
class RandomShift:
    """Pad by ``pad`` (replicate) and crop back at a random offset, per image."""

    def __init__(self, pad: int) -> None:
        self.pad = pad

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # x: (C, H, W)
        if self.pad == 0:
            return x
        _, h, w = x.shape
        padded = F.pad(x.unsqueeze(0), (self.pad,) * 4, mode="replicate").squeeze(0)
        i, j = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        return padded[:, i : i + h, j : j + w]


class _Augmented(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: RandomShift | None) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        x = self.x[i]
        return (self.transform(x) if self.transform else x), self.y[i]


class ImageDataModule(L.LightningDataModule):
    """Classification images held in memory, normalised, resized to ``img_size``.

    ``digits`` (embedded) is split train/val/test with ``seed``; ``cifar10`` uses its own
    test set and holds out ``val_frac`` of its training set. ``data_fraction`` keeps a
    class-stratified part of the training split (the ViT paper's data-scale axis).
    """

    def __init__(
        self,
        name: Literal["digits", "cifar10"] = "digits",
        data_dir: str | None = None,
        img_size: int = 16,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        data_fraction: float = 1.0,
        augment_pad: int = 2,
        val_frac: float = 0.1,
        test_frac: float = 0.2,
        seed: int = 0,
        grayscale: bool = False,
    ) -> None:
        super().__init__()
        if name not in ("digits", "cifar10"):
            raise ValueError(f"unknown image dataset {name!r}; known: digits, cifar10")
        self.save_hyperparameters()
        self.x: dict[str, torch.Tensor] = {}
        self.y: dict[str, torch.Tensor] = {}

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def in_chans(self) -> int:
        return 1 if self.hparams.name == "digits" or self.hparams.grayscale else 3

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        size = self.hparams.img_size
        if x.shape[-1] == size:
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    def prepare_data(self) -> None:
        if self.hparams.name == "cifar10":
            ensure_cifar10(self.hparams.data_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.x:
            return
        hp = self.hparams
        if hp.name == "digits":
            x, y = load_digits_tensors()
            tr, va, te = split_indices(len(y), hp.seed, hp.val_frac, hp.test_frac)
        else:
            data = load_cifar10(hp.data_dir)
            xtr, ytr = data["train"]
            xte, yte = data["test"]
            x = torch.from_numpy(np.concatenate([xtr, xte])).float() / 255.0
            y = torch.from_numpy(np.concatenate([ytr, yte]))
            if hp.grayscale:
                x = x.mean(1, keepdim=True)
            n_train = len(ytr)
            perm = np.random.default_rng(hp.seed).permutation(n_train)
            n_val = int(n_train * hp.val_frac) // 2 * 2
            tr, va, te = perm[n_val:], perm[:n_val], np.arange(n_train, len(y))
        tr = subsample(tr, y.numpy(), hp.data_fraction, hp.seed)
        x = self._resize(x)
        mean, std = x[tr].mean(), x[tr].std()  # statistics of the training split only
        x = (x - mean) / std
        for split, idx in (("train", tr), ("val", va), ("test", te)):
            idx = torch.as_tensor(idx)
            self.x[split], self.y[split] = x[idx].contiguous(), y[idx].contiguous()

    def _loader(self, split: str, train: bool) -> DataLoader:
        hp = self.hparams
        if train:
            ds = _Augmented(self.x[split], self.y[split], RandomShift(hp.augment_pad))
            return DataLoader(ds, batch_size=hp.batch_size, shuffle=True, drop_last=len(ds) > hp.batch_size)
        ds = TensorDataset(self.x[split], self.y[split])
        return DataLoader(ds, batch_size=hp.eval_batch_size, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
