"""Can a Fruit Fly Learn Word Embeddings? (Liang, Ryali, Hoover, Grinberg, Navlakha, Zaki,
Krotov; ICLR 2021, arXiv 2101.06887).

Reference implementation: github.com/bhoov/flyvec (its CUDA training loop,
``flyvec/src/cuda_funcs.cu`` ``run_epoch``, and launcher ``flyvec/train.py``), whose update
this follows: mini-batches of sparse windows, the winning Kenyon cell picked on the raw input,
the update accumulated over the batch and scaled so that its largest entry is the learning rate.
Reproduced: the learning rule, its energy, static and contextual FlyHash codes, and the gensim
skip-gram baseline on the same token stream. Not reproduced: training on OpenWebText with
K=400 at the paper's scale (a ``full`` preset configures it; not run on a GPU here), word-sense
disambiguation and document classification.

Symbols (one alphabet throughout): V vocabulary size, K Kenyon cells, w window length (odd;
the target is its middle word), N windows, B batch, C context slots, k hash length.
W [K, 2V] are the synapses: columns 0..V-1 see the context bag, V..2V-1 the one-hot target.
p [V] is each word's probability in the corpus.
"""

from __future__ import annotations

import zlib
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

PREC = 1e-30  # floor of the step normaliser: the reference code's --prec default ("avoid dividing by 0")


# --------------------------------------------------------------------------------------
# The paper's math: inputs, the learning rule, its energy, FlyHash
# --------------------------------------------------------------------------------------
def word_probabilities(corpus_ids: Sequence[Sequence[int]], vocab_size: int) -> Tensor:
    """p [V]: each word's share of the corpus tokens (words never seen get one count)."""
    counts = np.zeros(vocab_size, dtype=np.float64)
    for s in corpus_ids:
        counts += np.bincount(np.asarray(s, dtype=np.int64), minlength=vocab_size)[:vocab_size]
    counts = np.maximum(counts, 1.0)
    return torch.from_numpy(counts / counts.sum()).float()


def context_windows(corpus_ids: Sequence[Sequence[int]], window: int) -> Tensor:
    """[N, w] every full window of ``w`` consecutive ids inside a sentence (as the reference
    code's ``getnum_samples``: no window crosses a sentence boundary, none is padded)."""
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd number >= 3 (context on both sides of the target); got {window}")
    rows = []
    for s in corpus_ids:
        s = np.asarray(s, dtype=np.int64)
        if len(s) >= window:
            rows.append(np.lib.stride_tricks.sliding_window_view(s, window))
    if not rows:
        return torch.zeros(0, window, dtype=torch.long)
    return torch.from_numpy(np.concatenate(rows)).long()


def input_indices(windows: Tensor, vocab_size: int) -> Tensor:
    """[N, w] the nonzero entries of v in [0, 2V): context words keep their id, the middle
    (target) word moves to the second half. A repeated context word appears twice: the bag counts it twice."""
    idx = windows.clone()
    idx[:, windows.shape[1] // 2] += vocab_size
    return idx


def kenyon_drive(W_t: Tensor, idx: Tensor, weights: Tensor | None = None) -> Tensor:
    """[B, K] = ⟨W_μ, v⟩ for sparse inputs: ``W_t`` [2V, K] (W transposed), ``idx`` [B, n]
    nonzero positions (-1 = padding), ``weights`` [B, n] their values (1 where None)."""
    valid = idx >= 0
    w = valid.to(W_t.dtype) if weights is None else weights.to(W_t.dtype) * valid
    return nn.functional.embedding_bag(idx.clamp_min(0), W_t, per_sample_weights=w, mode="sum")


def flyvec_step(W_t: Tensor, idx: Tensor, inv_p: Tensor, lr: float, buffer: Tensor | None = None) -> tuple[Tensor, float]:
    """One batched update of the synapses, in place; returns (winners [B], energy summed over B).

    ``W_t`` [2V, K] (W transposed, so a sample's rows gather contiguously), ``idx`` [B, w]
    from :func:`input_indices`, ``inv_p`` [2V] = 1/p of each input position's word.
    μ̂ = argmax_μ ⟨W_μ, v⟩ (raw input); ΔW_μ̂ += v/p − ⟨W_μ̂, v/p⟩ W_μ̂ summed over the batch;
    W += lr · ΔW / max|ΔW|. Energy: −Σ ⟨W_μ̂, v/p⟩ / ‖W_μ̂‖ before the update.
    ``buffer`` (shaped like ``W_t``) holds ΔW, so that a training loop allocates it once.
    """
    B, w = idx.shape
    mu = kenyon_drive(W_t, idx).argmax(dim=1)  # [B] winners on the raw input
    vals = inv_p[idx]  # [B, w] entries of v/p
    drive = (W_t[idx, mu[:, None]] * vals).sum(dim=1)  # [B] ⟨W_μ̂, v/p⟩
    norms = W_t.pow(2).sum(dim=0).sqrt()  # [K] (faster than Tensor.norm over dim 0)
    energy = -float((drive / norms[mu].clamp_min(PREC)).sum())
    xx = torch.zeros(W_t.shape[1], dtype=W_t.dtype).index_add_(0, mu, drive)  # [K] Σ over each cell's wins
    ds = torch.mul(W_t, -xx, out=torch.empty_like(W_t) if buffer is None else buffer)  # [2V, K]: −⟨W_μ̂, v/p⟩ W_μ̂
    ds.index_put_((idx.reshape(-1), mu.repeat_interleave(w)), vals.reshape(-1), accumulate=True)  # + v/p
    lo, hi = torch.aminmax(ds)
    scale = lr / max(float(-lo), float(hi), PREC)
    W_t.add_(ds, alpha=scale)
    return mu, energy


def init_synapses(num_kenyon: int, vocab_size: int, seed: int = 0, init_std: float = 1.0) -> Tensor:
    """W [K, 2V] ~ N(0, init_std²), as the reference launcher's ``normal(mu=0, sigma)``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(num_kenyon, 2 * vocab_size, generator=gen) * init_std


def flyvec_train(
    corpus_ids: Sequence[Sequence[int]],
    vocab_size: int,
    num_kenyon: int,
    window: int,
    epochs: int,
    lr: float,
    seed: int = 0,
    batch_size: int = 10000,
    init_std: float = 1.0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> Tensor:
    """Train the synapses W [K, 2V] on every window of ``corpus_ids`` (a list of id sequences).

    Windows are shuffled each epoch with ``seed``; the learning rate decays linearly from
    ``lr`` to ``lr/epochs`` over the epochs. ``on_epoch(epoch, energy)`` receives the mean
    energy per window of each epoch. Deterministic for a seed on CPU.
    """
    if vocab_size < 2 or num_kenyon < 1 or epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"need vocab_size >= 2, num_kenyon >= 1, epochs >= 1, batch_size >= 1, lr > 0; "
            f"got {vocab_size}, {num_kenyon}, {epochs}, {batch_size}, {lr}"
        )
    windows = context_windows(corpus_ids, window)
    if len(windows) == 0:
        raise ValueError(f"no sentence has {window} words; nothing to train on")
    if int(windows.max()) >= vocab_size or int(windows.min()) < 0:
        raise ValueError(f"word ids must lie in [0, {vocab_size}); got [{int(windows.min())}, {int(windows.max())}]")
    idx_all = input_indices(windows, vocab_size)
    p = word_probabilities(corpus_ids, vocab_size)
    inv_p = torch.cat([1 / p, 1 / p])  # [2V]: context and target halves share the word's p
    W_t = init_synapses(num_kenyon, vocab_size, seed, init_std).t().contiguous()  # [2V, K]
    gen = torch.Generator().manual_seed(seed + 1)
    N = len(idx_all)
    buffer = torch.empty_like(W_t)
    for epoch in range(epochs):
        lr_epoch = lr * (1 - epoch / epochs)
        order = torch.randperm(N, generator=gen)
        total = 0.0
        for start in range(0, N, batch_size):
            _, energy = flyvec_step(W_t, idx_all[order[start : start + batch_size]], inv_p, lr_epoch, buffer)
            total += energy
        if on_epoch is not None:
            on_epoch(epoch, total / N)
    return W_t.t().contiguous()


def normalize_synapses(W: Tensor, eps: float = 1e-32) -> Tensor:
    """Each Kenyon cell's synapses divided by their 2-norm, as the official ``FlyVec`` class does before hashing
    (``flyvec.core.normalize_synapses``): a cell's response then does not depend on its row's norm."""
    return W / (W.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def flyhash(W: Tensor, word_ids: Tensor, k: int, context_ids: Tensor | None = None,
            word_prob: Tensor | None = None, normalize: bool = True) -> Tensor:
    """bool [N, K] with exactly ``k`` True per row: the top-k Kenyon cells of the synapses
    (row-normalised first, :func:`normalize_synapses`, unless ``normalize`` is False).

    Static code (``context_ids`` None): the input is the target's one-hot alone. Contextual
    code: ``context_ids`` [N, C] (-1 = padding) fill the context bag. With ``word_prob`` [V]
    every entry is divided by its word's probability (v/p), as in training's update.
    """
    K, two_v = W.shape
    V = two_v // 2
    word_ids = torch.as_tensor(word_ids, dtype=torch.long).reshape(-1)
    if not 1 <= k <= K:
        raise ValueError(f"hash length k must be in [1, {K}] (the number of Kenyon cells); got {k}")
    if normalize:
        W = normalize_synapses(W)
    if len(word_ids) and (int(word_ids.min()) < 0 or int(word_ids.max()) >= V):
        raise ValueError(f"word ids must lie in [0, {V}); got [{int(word_ids.min())}, {int(word_ids.max())}]")
    idx = (word_ids + V)[:, None]  # [N, 1]
    if context_ids is not None:
        context_ids = torch.as_tensor(context_ids, dtype=torch.long)
        if context_ids.ndim != 2 or context_ids.shape[0] != len(word_ids):
            raise ValueError(f"context_ids must be [N={len(word_ids)}, C]; got {tuple(context_ids.shape)}")
        if context_ids.numel() and int(context_ids.max()) >= V:
            raise ValueError(f"context ids must lie in [0, {V}) or be -1 (padding)")
        idx = torch.cat([context_ids, idx], dim=1)  # [N, C+1]
    weights = None
    if word_prob is not None:
        weights = 1 / word_prob.float()[idx.clamp_min(0) % V]
    drive = kenyon_drive(W.t(), idx, weights)  # [N, K]
    top = drive.topk(k, dim=1).indices
    return torch.zeros(len(word_ids), K, dtype=torch.bool).scatter_(1, top, True)


def energy(W: Tensor, corpus_ids: Sequence[Sequence[int]], window: int, batch_size: int = 10000) -> float:
    """Mean energy per window, −⟨W_μ̂, v/p⟩ / ‖W_μ̂‖ with μ̂ the winner on the raw input."""
    V = W.shape[1] // 2
    idx_all = input_indices(context_windows(corpus_ids, window), V)
    p = word_probabilities(corpus_ids, V)
    inv_p = torch.cat([1 / p, 1 / p])
    W_t = W.t().contiguous()
    norms = W_t.pow(2).sum(dim=0).sqrt()
    total = 0.0
    for start in range(0, len(idx_all), batch_size):
        idx = idx_all[start : start + batch_size]
        mu = kenyon_drive(W_t, idx).argmax(dim=1)
        drive = (W_t[idx, mu[:, None]] * inv_p[idx]).sum(dim=1)
        total -= float((drive / norms[mu]).sum())
    return total / max(1, len(idx_all))


def jaccard(a: Tensor, b: Tensor) -> Tensor:
    """[N] Jaccard similarity |a ∧ b| / |a ∨ b| of binary codes a, b [N, K]."""
    inter = (a & b).sum(dim=1).double()
    union = (a | b).sum(dim=1).double()
    return inter / union.clamp_min(1)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """[N] cosine similarity of dense vectors a, b [N, D]."""
    return nn.functional.cosine_similarity(a.double(), b.double(), dim=1, eps=1e-12)


# --------------------------------------------------------------------------------------
# A module that holds trained synapses and hashes words with them
# --------------------------------------------------------------------------------------
class FlyVec(nn.Module):
    """Trained synapses W [K, 2V] (a buffer: the rule is not gradient descent) and FlyHash."""

    def __init__(self, synapses: Tensor, word_prob: Tensor | None = None, hash_length: int = 32) -> None:
        super().__init__()
        self.register_buffer("synapses", synapses)
        self.register_buffer("word_prob", word_prob if word_prob is not None else torch.empty(0))
        self.hash_length = hash_length

    def forward(self, word_ids: Tensor, context_ids: Tensor | None = None) -> Tensor:
        prob = self.word_prob if self.word_prob.numel() else None
        return flyhash(self.synapses, word_ids, self.hash_length, context_ids, prob)


# --------------------------------------------------------------------------------------
# The baseline: gensim's skip-gram word2vec on the same token stream
# --------------------------------------------------------------------------------------
def stable_hash(text: str) -> int:
    """gensim seeds each word's initial vector with ``hashfxn(word + str(seed))``; Python's
    ``hash`` of a str changes per process, so runs would differ. CRC-32 does not."""
    return zlib.crc32(text.encode("utf-8"))


def train_word2vec(sentences: list[list[str]], vector_size: int, window: int, epochs: int, seed: int = 0,
                   workers: int = 1, negative: int = 5, lr: float = 0.025, sample: float = 1e-3):
    """gensim ``Word2Vec`` skip-gram with negative sampling; ``window`` is the half-width
    (words each side), i.e. FlyVec's ``(w - 1) // 2``. Returns the ``KeyedVectors``.
    Deterministic for a seed when ``workers == 1``."""
    from gensim.models import Word2Vec

    model = Word2Vec(sentences=sentences, vector_size=vector_size, window=window, min_count=1, sg=1,
                     negative=negative, alpha=lr, sample=sample, epochs=epochs, seed=seed, workers=workers,
                     hashfxn=stable_hash)
    return model.wv
