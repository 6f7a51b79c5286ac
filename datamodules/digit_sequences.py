"""Sequences for RIMs: pixel-by-pixel digits under a resolution shift, and the copying task.

``digits`` (embedded, offline): sklearn's 1,797 8x8 digits, read pixel by pixel (row-major)
after a nearest-neighbour rescale to ``side`` x ``side`` and binarisation, as the paper's
sequential-MNIST resolution task (arXiv 1909.10893, Appendix D.3: "nearest-neighbor based
... scaling and performed binarization after re-scaling"). Trained at ``train_side``,
tested at each of ``test_sides``: the same digits, longer sequences. ``mnist`` reads the
four standard IDX files (``train-images-idx3-ubyte`` ... , optionally ``.gz``) from
``--data-dir`` (or ``--data-dir/MNIST/raw``, torchvision's layout); the paper trains at
14x14 and tests at 16, 19, 24.

The copying task (``copying_task``; Appendix D.1 and the authors' code): ``copy_length``
random symbols from 1..8, a span of ``gap`` blanks (0), the marker 9, then
``copy_length - 1`` more blanks; the model must output the symbols over the last
``copy_length`` steps. Trained at one gap, tested at longer ones (paper: 50 -> 200).

``levels`` grey levels (default 2, the paper's binarisation) can be raised for the tiny
8x8 digits, where binarising loses much of the stroke.

Batches are (tokens int64 [B, L], target): target int64 [B] for digits, [B, copy_length]
for copying.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from datamodules.images import DatasetNotFoundError, load_digits_tensors, split_indices

BLANK, MARKER = 0, 9  # copying: symbols are 1..8 (the authors' code: randint(1, 9))
COPY_VOCAB = 10
MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ---------------------------------------------------------------------------- pixels
def pixel_sequences(x: torch.Tensor, side: int, levels: int = 2) -> torch.Tensor:
    """Images [N, 1, H, W] in [0, 1] -> pixel tokens [N, side * side] in 0..levels-1, row-major,
    after a nearest-neighbour rescale to ``side`` x ``side``; ``levels=2`` binarises at 0.5."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"images must be [N, 1, H, W]; got {list(x.shape)}")
    if side < 1 or levels < 2:
        raise ValueError(f"need side >= 1 and levels >= 2; got side={side}, levels={levels}")
    if x.shape[-2:] != (side, side):
        x = F.interpolate(x, size=(side, side), mode="nearest")
    return (x.clamp(0, 1) * (levels - 1)).round().long().flatten(1)


def read_idx(path: str | Path) -> np.ndarray:
    """An array from an IDX file (MNIST's format: 2 zero bytes, a dtype byte, the number of
    dimensions, big-endian int32 sizes, the data), gzipped or not."""
    path = Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, ">i4", ndim, 4))
    data = np.frombuffer(raw, IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} ({int(np.prod(shape))} values), file holds {data.size}")
    return data.reshape(shape)


def find_mnist(data_dir: str | Path | None) -> dict[str, Path]:
    """The four MNIST IDX files under ``data_dir`` or ``data_dir/MNIST/raw`` (plain or .gz)."""
    if data_dir is None:
        raise DatasetNotFoundError("mnist needs --data-dir PATH holding train-images-idx3-ubyte and the other IDX files")
    root = Path(data_dir).expanduser()
    for folder in (root, root / "MNIST" / "raw", root / "mnist"):
        found = {}
        for key, name in MNIST_FILES.items():
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(MNIST_FILES):
            return found
    raise DatasetNotFoundError(
        f"MNIST not found: expected {', '.join(MNIST_FILES.values())} (or .gz) in {root} or {root / 'MNIST' / 'raw'}"
    )


def load_mnist(data_dir: str | Path | None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train": (x float [N, 1, 28, 28] in [0, 1], y int64), "test": ...} from the IDX files."""
    files = find_mnist(data_dir)
    out = {}
    for split in ("train", "test"):
        x, y = read_idx(files[f"{split}_x"]), read_idx(files[f"{split}_y"])
        if x.ndim != 3 or len(x) != len(y):
            raise ValueError(f"MNIST {split}: images {x.shape} and labels {y.shape} do not match")
        out[split] = (torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))
    return out


# ------------------------------------------------------------------------------ copying
def copying_task(n: int, copy_length: int, gap: int, seed: int, num_symbols: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [n, 2 * copy_length + gap], targets [n, copy_length]): see the module docstring."""
    if copy_length < 1 or gap < 0 or not 1 <= num_symbols <= 8:
        raise ValueError(f"need copy_length >= 1, gap >= 0, 1 <= num_symbols <= 8; got {copy_length}, {gap}, {num_symbols}")
    g = torch.Generator().manual_seed(seed)
    symbols = torch.randint(1, num_symbols + 1, (n, copy_length), generator=g)
    tokens = torch.full((n, 2 * copy_length + gap), BLANK, dtype=torch.long)
    tokens[:, :copy_length] = symbols
    tokens[:, copy_length + gap] = MARKER
    return tokens, symbols.clone()


# ---------------------------------------------------------------------------- DataModules
class DigitSequenceDataModule(L.LightningDataModule):
    """Binary pixel sequences of digits: train at ``train_side``, test at each ``test_sides``.

    ``digits``: sklearn's digits, seeded 70/10/20 split (``datamodules.images.split_indices``).
    ``mnist``: the IDX files from ``data_dir``; MNIST's own test set, ``num_train`` training
    images (0 = all).
    """

    def __init__(
        self,
        name: Literal["digits", "mnist"] = "digits",
        data_dir: str | None = None,
        train_side: int = 8,
        test_sides: Sequence[int] = (8, 12, 16),
        levels: int = 2,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        num_train: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if name not in ("digits", "mnist"):
            raise ValueError(f"unknown digit-sequence dataset {name!r}; known: digits, mnist")
        self.save_hyperparameters()
        self.images: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    num_classes = 10

    @property
    def vocab_size(self) -> int:
        return self.hparams.levels

    def prepare_data(self) -> None:
        """Fail within seconds when MNIST is missing (the CLI checks this before any unit starts)."""
        if self.hparams.name == "mnist":
            find_mnist(self.hparams.data_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.images:
            return
        hp = self.hparams
        if hp.name == "digits":
            x, y = load_digits_tensors()
            tr, va, te = split_indices(len(y), hp.seed, 0.1, 0.2)
            self.images = {s: (x[torch.as_tensor(i)], y[torch.as_tensor(i)]) for s, i in zip(("train", "val", "test"), (tr, va, te))}
        else:
            data = load_mnist(hp.data_dir)
            xtr, ytr = data["train"]
            if hp.num_train:
                keep = torch.as_tensor(np.random.default_rng(hp.seed).permutation(len(ytr))[: hp.num_train])
                xtr, ytr = xtr[keep], ytr[keep]
            self.images = {"train": (xtr, ytr), "test": data["test"]}

    def sequences(self, split: str, side: int) -> TensorDataset:
        x, y = self.images[split]
        return TensorDataset(pixel_sequences(x, side, self.hparams.levels), y)

    def train_dataloader(self) -> DataLoader:
        ds = self.sequences("train", self.hparams.train_side)
        return DataLoader(ds, batch_size=self.hparams.batch_size, shuffle=True, drop_last=len(ds) > self.hparams.batch_size)

    def test_dataloader(self, side: int | None = None) -> DataLoader:
        """The test split at ``side`` (default: the training resolution)."""
        ds = self.sequences("test", side or self.hparams.train_side)
        return DataLoader(ds, batch_size=self.hparams.eval_batch_size, shuffle=False)


class CopyingDataModule(L.LightningDataModule):
    """The copying task: ``num_train`` sequences at ``train_gap``, ``num_test`` at each ``test_gaps``."""

    def __init__(
        self,
        copy_length: int = 5,
        train_gap: int = 10,
        test_gaps: Sequence[int] = (10, 40),
        num_symbols: int = 8,
        num_train: int = 4096,
        num_test: int = 512,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    vocab_size = COPY_VOCAB
    num_classes = COPY_VOCAB  # the head predicts over every token; targets are 1..num_symbols

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        ds = TensorDataset(*copying_task(hp.num_train, hp.copy_length, hp.train_gap, hp.seed, hp.num_symbols))
        return DataLoader(ds, batch_size=hp.batch_size, shuffle=True, drop_last=True)

    def test_dataloader(self, gap: int | None = None) -> DataLoader:
        hp = self.hparams
        gap = hp.train_gap if gap is None else gap
        ds = TensorDataset(*copying_task(hp.num_test, hp.copy_length, gap, hp.seed + 1_000_003 + gap, hp.num_symbols))
        return DataLoader(ds, batch_size=hp.eval_batch_size, shuffle=False)
