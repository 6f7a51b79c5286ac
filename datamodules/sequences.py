"""Long-sequence classification data: ListOps (Long Range Arena style) and pixel sequences.

``listops`` (embedded, offline) generates the Long Range Arena ListOps task with the
procedure of google-research/long-range-arena ``lra_benchmarks/data/listops.py``: random
trees of MIN / MAX / MED / SM (sum mod 10) over digits, an operator node with
probability 0.25 below ``max_depth``, 2..``max_args`` arguments, kept when
``min_length < length < max_length``, duplicates dropped. Departures, flagged: a seeded
``random.Random`` and an insertion-ordered de-duplication (LRA iterates a Python ``set``,
whose order changes with the hash seed), and tokens are split on whitespace with the
parentheses dropped but "]" kept (LRA's tfds tokenizer also drops "]" and the "[" of the
operators, a known quirk). ``listops_lra`` reads LRA's released ``basic_{train,val,test}.tsv``.

``digits_pixels`` (embedded, offline) turns sklearn's 8x8 digits into pixel sequences:
bilinear upsampling to ``side`` x ``side`` (32 x 32 = 1,024 tokens, as LRA's image task),
quantised to 256 grey levels, read row by row. ``cifar10_pixels`` does the same with
CIFAR-10 in grey levels (LRA's "Image" task), read by ``datamodules.images.load_cifar10``.

Every batch is (tokens int64 [B, L], mask bool [B, L] with True = real token, label [B]).
"""

from __future__ import annotations

import csv
import random
import statistics
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from datamodules.images import DatasetNotFoundError, ensure_cifar10, load_cifar10, load_digits_tensors, split_indices

# ------------------------------------------------------------------------------- ListOps
MIN, MAX, MED, SUM_MOD, END = "[MIN", "[MAX", "[MED", "[SM", "]"
OPERATORS = (MIN, MAX, MED, SUM_MOD)  # LRA's basic task (FIRST and LAST are commented out there)
VALUES = tuple(range(10))
VALUE_P = 0.25  # LRA: a node is an operator with probability 0.25 (r <= VALUE_P), else a digit
PAD = "<pad>"
LISTOPS_VOCAB = (PAD, *map(str, VALUES), *OPERATORS, END)  # pad id 0, 16 tokens
LISTOPS_INDEX = {tok: i for i, tok in enumerate(LISTOPS_VOCAB)}
LISTOPS_CLASSES = 10
LRA_LISTOPS_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}

Tree = Any  # an int leaf or nested tuples ((op, arg0), arg1) ... END, as in LRA


class _TooLong(Exception):
    """A tree under construction reached the length limit: it would be rejected anyway."""


def generate_tree(
    rng: random.Random, depth: int, max_depth: int, max_args: int, limit: int | None = None
) -> tuple[Tree, int]:
    """One random ListOps tree and its token length (LRA's ``generate_tree``).

    With ``limit``, construction stops (``_TooLong``) as soon as the length reaches it:
    the rejection sampler would discard that tree, so the accepted trees keep LRA's
    distribution and the huge rejected ones are not built to the end.
    """
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        return rng.choice(VALUES), 1
    length = 2  # the operator and its closing "]"
    args = []
    for _ in range(rng.randint(2, max_args)):
        sub, sub_len = generate_tree(rng, depth + 1, max_depth, max_args, None if limit is None else limit - length)
        args.append(sub)
        length += sub_len
        if limit is not None and length >= limit:
            raise _TooLong
    tree: Tree = (rng.choice(OPERATORS), args[0])
    for arg in args[1:]:
        tree = (tree, arg)
    return (tree, END), length


def tree_tokens(tree: Tree) -> list[str]:
    """The tree's tokens in reading order, without LRA's parentheses."""
    if isinstance(tree, tuple):
        return tree_tokens(tree[0]) + tree_tokens(tree[1])
    return [str(tree)]


def evaluate_tokens(tokens: list[str]) -> int:
    """The value of a ListOps expression, e.g. ``[MAX 2 [MIN 4 7 ] 0 ]`` -> 4.

    MED is ``int(np.median)`` and SM the sum modulo 10, as LRA's ``to_value``.
    """
    stack: list[list] = []
    result = None
    for tok in tokens:
        if tok in ("(", ")"):
            continue
        if tok in OPERATORS:
            stack.append([tok])
            continue
        if tok == END:
            if not stack:
                raise ValueError("unbalanced ListOps expression: ']' without an operator")
            op, *args = stack.pop()
            value = {MIN: min, MAX: max, MED: lambda a: int(np.median(a)), SUM_MOD: lambda a: sum(a) % 10}[op](args)
        elif tok.isdigit() and len(tok) == 1:
            value = int(tok)
        else:
            raise ValueError(f"unknown ListOps token {tok!r}; known: {', '.join(LISTOPS_VOCAB[1:])}, (, )")
        if stack:
            stack[-1].append(value)
        else:
            result = value
    if stack or result is None:
        raise ValueError("unbalanced or empty ListOps expression")
    return int(result)


def generate_listops(
    n: int, seed: int, min_length: int = 500, max_length: int = 2000, max_depth: int = 10, max_args: int = 10,
    max_tries: int | None = None,
) -> list[tuple[list[str], int]]:
    """``n`` distinct (tokens, label) pairs with min_length < len(tokens) < max_length."""
    if not 0 <= min_length < max_length - 1:
        raise ValueError(f"need 0 <= min_length < max_length - 1; got {min_length}, {max_length}")
    rng = random.Random(seed)
    kept: dict[tuple[str, ...], int] = {}
    tries, limit = 0, max_tries or 2000 * n + 100_000
    while len(kept) < n:
        tries += 1
        if tries > limit:
            raise RuntimeError(f"ListOps: only {len(kept)} of {n} trees within ({min_length}, {max_length}) after {limit} draws")
        try:
            tree, length = generate_tree(rng, 1, max_depth, max_args, limit=max_length)
        except _TooLong:
            continue
        if min_length < length < max_length:
            tokens = tuple(tree_tokens(tree))
            if tokens not in kept:
                kept[tokens] = evaluate_tokens(list(tokens))
    return [(list(t), y) for t, y in kept.items()]


def read_lra_listops(path: str | Path) -> list[tuple[list[str], int]]:
    """LRA's ``Source<TAB>Target`` TSV (with header) as (tokens, label) pairs."""
    rows = []
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["Source", "Target"]:
            raise ValueError(f"{path}: expected a header 'Source<TAB>Target', got {header}")
        for line in reader:
            if line:
                tokens = [t for t in line[0].split() if t not in ("(", ")")]
                rows.append((tokens, int(line[1])))
    return rows


def encode_listops(examples: list[tuple[list[str], int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids [N, max_len] (0-padded, truncated as LRA does), mask [N, max_len], labels [N]."""
    ids = torch.zeros(len(examples), max_len, dtype=torch.long)
    labels = torch.empty(len(examples), dtype=torch.long)
    for i, (tokens, label) in enumerate(examples):
        try:
            row = [LISTOPS_INDEX[t] for t in tokens[:max_len]]
        except KeyError as err:
            raise ValueError(f"unknown ListOps token {err.args[0]!r}; known: {', '.join(LISTOPS_VOCAB[1:])}") from None
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        labels[i] = label
    return ids, ids != 0, labels


# -------------------------------------------------------------------------- pixel sequences
def images_to_pixel_tokens(x: torch.Tensor, side: int) -> torch.Tensor:
    """[N, C, H, W] in [0, 1] -> grey-level tokens [N, side * side] in 0..255, row-major."""
    if side < 1:
        raise ValueError(f"side must be >= 1; got {side}")
    grey = x.mean(dim=1, keepdim=True)  # LRA's Image task uses one grey channel
    if grey.shape[-1] != side or grey.shape[-2] != side:
        grey = F.interpolate(grey, size=(side, side), mode="bilinear", align_corners=False)
    return (grey.clamp(0, 1) * 255).round().long().flatten(1)


# ------------------------------------------------------------------------------ DataModule
SEQUENCE_DATASETS = ("listops", "listops_lra", "digits_pixels", "cifar10_pixels")


class SequenceDataModule(L.LightningDataModule):
    """Token sequences held in memory as (tokens, mask, label) tensors.

    ``listops``: ``num_train``/``num_val``/``num_test`` generated trees (seeded by ``seed``).
    ``listops_lra``: LRA's TSVs from ``data_dir/listops/`` (or ``data_dir`` itself).
    ``digits_pixels``: sklearn's digits, seeded 70/10/20 split. ``cifar10_pixels``:
    CIFAR-10's own test set, ``val_frac`` of its training set held out.
    """

    def __init__(
        self,
        name: Literal["listops", "listops_lra", "digits_pixels", "cifar10_pixels"] = "listops",
        data_dir: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        seed: int = 0,
        num_train: int = 2000,
        num_val: int = 200,
        num_test: int = 500,
        min_length: int = 500,
        max_length: int = 2000,
        max_depth: int = 10,
        max_args: int = 10,
        side: int = 32,
        val_frac: float = 0.1,
    ) -> None:
        super().__init__()
        if name not in SEQUENCE_DATASETS:
            raise ValueError(f"unknown sequence dataset {name!r}; known: {', '.join(SEQUENCE_DATASETS)}")
        self.save_hyperparameters()
        self.data: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def is_listops(self) -> bool:
        return self.hparams.name.startswith("listops")

    @property
    def vocab_size(self) -> int:
        return len(LISTOPS_VOCAB) if self.is_listops else 256

    @property
    def num_classes(self) -> int:
        return LISTOPS_CLASSES if self.is_listops else 10

    @property
    def max_len(self) -> int:
        return self.hparams.max_length if self.is_listops else self.hparams.side**2

    def prepare_data(self) -> None:
        """Fail within seconds when a real dataset is missing (the CLI checks this before any unit starts)."""
        if self.hparams.name == "listops_lra":
            self._lra_folder()
        elif self.hparams.name == "cifar10_pixels":
            ensure_cifar10(self.hparams.data_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.data:
            return
        hp = self.hparams
        if hp.name == "listops":
            total = hp.num_train + hp.num_val + hp.num_test
            examples = generate_listops(total, hp.seed, hp.min_length, hp.max_length, hp.max_depth, hp.max_args)
            splits = {
                "train": examples[: hp.num_train],
                "val": examples[hp.num_train : hp.num_train + hp.num_val],
                "test": examples[hp.num_train + hp.num_val :],
            }
            self.data = {k: encode_listops(v, hp.max_length) for k, v in splits.items()}
        elif hp.name == "listops_lra":
            folder = self._lra_folder()
            self.data = {k: encode_listops(read_lra_listops(folder / f), hp.max_length) for k, f in LRA_LISTOPS_FILES.items()}
        elif hp.name == "digits_pixels":
            x, y = load_digits_tensors()
            tokens = images_to_pixel_tokens(x, hp.side)
            for split, idx in zip(("train", "val", "test"), split_indices(len(y), hp.seed, 0.1, 0.2)):
                idx = torch.as_tensor(idx)
                self.data[split] = (tokens[idx], torch.ones_like(tokens[idx], dtype=torch.bool), y[idx])
        else:
            raw = load_cifar10(hp.data_dir)
            xtr, ytr = raw["train"]
            xte, yte = raw["test"]
            perm = np.random.default_rng(hp.seed).permutation(len(ytr))
            n_val = int(len(ytr) * hp.val_frac)
            parts = {"train": (xtr[perm[n_val:]], ytr[perm[n_val:]]), "val": (xtr[perm[:n_val]], ytr[perm[:n_val]]), "test": (xte, yte)}
            for split, (xs, ys) in parts.items():
                tokens = images_to_pixel_tokens(torch.from_numpy(xs).float() / 255.0, hp.side)
                self.data[split] = (tokens, torch.ones_like(tokens, dtype=torch.bool), torch.from_numpy(ys))

    def _lra_folder(self) -> Path:
        if self.hparams.data_dir is None:
            raise DatasetNotFoundError("listops_lra needs --data-dir PATH holding listops/basic_{train,val,test}.tsv")
        root = Path(self.hparams.data_dir).expanduser()
        for folder in (root / "listops", root / "lra_release" / "listops-1000", root):
            if all((folder / f).is_file() for f in LRA_LISTOPS_FILES.values()):
                return folder
        raise DatasetNotFoundError(
            f"LRA ListOps not found: expected {', '.join(LRA_LISTOPS_FILES.values())} in {root / 'listops'} "
            "(from LRA's lra_release.gz, folder listops-1000)"
        )

    def length_stats(self, split: str = "train") -> dict[str, float]:
        lengths = self.data[split][1].sum(1).tolist()
        return {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)}

    def _loader(self, split: str, train: bool) -> DataLoader:
        hp = self.hparams
        ds = TensorDataset(*self.data[split])
        if train:
            return DataLoader(ds, batch_size=hp.batch_size, shuffle=True, drop_last=len(ds) > hp.batch_size)
        return DataLoader(ds, batch_size=hp.eval_batch_size, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
