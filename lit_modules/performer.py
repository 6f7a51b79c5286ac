"""Rethinking Attention with Performers (Choromanski et al., arXiv 2009.14794).

Reference implementation checked against: google-research/google-research,
``performer/fast_attention/jax/fast_attention.py`` (``softmax_kernel_transformation``,
``GaussianOrthogonalRandomMatrix``, the causal prefix-sum numerator/denominator), and its
PyTorch port lucidrains/performer-pytorch 1.1.4 (``FastAttention``), which the benchmark
also times. Reproduced: FAVOR+ (positive orthogonal random features with the
stabilisers of the reference code, non-causal and causal), the trig (sin/cos) and iid
ablations, periodic feature redraw, and one Transformer encoder whose attention is either
exact softmax or FAVOR+. Not reproduced: the protein / ImageNet64 experiments and
the generalised (ReLU) kernels.

Shapes use one alphabet: B batch, H heads, L length, D head dim, M random features.
Deliberate departures, flagged:
- the QR blocks are sign-corrected (columns times sign(diag R)) so that every block is
  exactly Haar-distributed (Mezzadri 2007, "How to generate random matrices from the
  classical compact groups"); the reference code omits this, which leaves the rows'
  directions slightly non-uniform;
- causal FAVOR+ is computed chunk by chunk (exact prefix sums between chunks, a masked
  C x C product inside a chunk) so that neither an L x L matrix nor an L x M x D tensor
  of running sums is ever built; the result is the same prefix-sum estimator.
Same values, fewer passes over [L, M] (not departures): the per-row |x|²/2 enters through
one augmented matmul, the M^-1/2 factor (it cancels) is left out, and in the non-causal
case the reference's eps is added exactly at [M, D] / [L, D] size.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchmetrics

from lit_modules.optim import warmup_cosine_adamw

Kernel = Literal["positive", "trig"]
AttentionKind = Literal["softmax", "favor"]
KERNELS = ("positive", "trig")
ATTENTIONS = ("softmax", "favor")
FAVOR_EPS = 1e-6  # numerical_stabilizer of softmax_kernel_transformation in the reference JAX code


# ---------------------------------------------------------------------------------- checks
def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> None:
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if not (q.ndim == k.ndim == v.ndim == 4):
        raise ValueError(f"q, k, v must be [B, H, L, D]; got {shapes}")
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise ValueError(f"q, k, v must share batch and heads [B, H]; got {shapes}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the head dim D; got {shapes}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must share the length L; got {shapes}")
    if causal and q.shape[2] != k.shape[2]:
        raise ValueError(f"causal attention needs as many queries as keys; got {shapes}")


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; allowed: {', '.join(KERNELS)}")


# ------------------------------------------------------------------------ exact attention
def softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact attention softmax(q kᵀ / sqrt(D)) v, materialising the [B, H, L, L] scores.

    q, k: [B, H, L, D]; v: [B, H, L, Dv]; mask: [B, L] bool, True = a real key.
    Returns [B, H, L, Dv].
    """
    _check_qkv(q, k, v, causal)
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # (B, H, Lq, Lk)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    if causal:
        future = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(dim=-1) @ v


# ---------------------------------------------------------------------- random features
def orthogonal_gaussian_matrix(
    m: int, d: int, orthogonal: bool = True, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """The projection W = [w_1 ... w_M]ᵀ, [M, D].

    ``orthogonal=True``: stacked blocks of D orthonormal rows (QR of a Gaussian D x D
    block, the last block truncated), each row rescaled to the norm of an independent
    Gaussian vector, so each w_i is marginally N(0, I_D) and rows within a block are
    exactly orthogonal (the reference's ``scaling=0``). ``orthogonal=False``: iid N(0, I_D).
    """
    if int(m) != m or m < 1:
        raise ValueError(f"number of random features m must be an integer >= 1; got {m}")
    if int(d) != d or d < 1:
        raise ValueError(f"head dimension d must be an integer >= 1; got {d}")
    draw = lambda *shape: torch.randn(*shape, generator=generator, device=device)  # noqa: E731
    if not orthogonal:
        return draw(m, d)
    n_blocks = -(-m // d)  # ceil(m / d); the last block is truncated
    q, r = torch.linalg.qr(draw(n_blocks, d, d))  # batched QR of Gaussian D x D blocks
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar: fix the signs (Mezzadri 2007)
    directions = q.transpose(-2, -1).reshape(n_blocks * d, d)[:m]  # rows of each Qᵀ are orthonormal; (M, D)
    norms = draw(m, d).norm(dim=1, keepdim=True)  # chi_D lengths of Gaussian vectors
    return directions * norms


def positive_random_features(
    x: torch.Tensor, w: torch.Tensor, stabiliser: Literal["none", "row", "global"] = "none", eps: float = 0.0
) -> torch.Tensor:
    """phi+(x) = M^-1/2 (exp(w_i·x - |x|²/2 - c) + eps), i = 1..M.

    x: [..., L, D]; w: [M, D] -> [..., L, M]. E_w[phi+(x)ᵀphi+(y)] = exp(xᵀy) when c = 0
    and eps = 0 (Lemma 1 of the paper). ``stabiliser`` chooses c (never differentiated,
    as in the reference): "row" = max_i w_i·x per row (queries; a per-row factor cancels
    in the attention normaliser), "global" = one max over all rows and features of the
    leading batch dims (keys; one constant per (B, H) cancels too).
    """
    wx = x @ w.T  # (..., L, M)
    half_sq = x.square().sum(-1, keepdim=True) / 2
    if stabiliser == "row":
        wx_minus = wx - (half_sq + wx.amax(dim=-1, keepdim=True).detach())
    elif stabiliser == "global":
        wx_minus = wx - (half_sq + wx.amax(dim=(-2, -1), keepdim=True).detach())
    elif stabiliser == "none":
        wx_minus = wx - half_sq
    else:
        raise ValueError(f"unknown stabiliser {stabiliser!r}; allowed: none, row, global")
    phi = wx_minus.exp()
    if eps:
        phi = phi + eps
    return phi * w.shape[0] ** -0.5


def trig_random_features(
    x: torch.Tensor, w: torch.Tensor, stabiliser: Literal["none", "row", "global"] = "none"
) -> torch.Tensor:
    """phi_trig(x) = M^-1/2 exp(|x|²/2 - c) [sin(w_i·x), cos(w_i·x)], i = 1..M.

    x: [..., L, D]; w: [M, D] -> [..., L, 2M]. Unbiased for exp(xᵀy) with c = 0, since
    E[cos(w·(x - y))] = exp(-|x - y|²/2). ``stabiliser`` "row" drops the per-row factor
    (c = |x|²/2), "global" divides by its maximum over the rows.
    """
    wx = x @ w.T
    half_sq = x.square().sum(-1, keepdim=True) / 2
    if stabiliser == "row":
        log_h = torch.zeros_like(half_sq)
    elif stabiliser == "global":
        log_h = half_sq - half_sq.amax(dim=(-2, -1), keepdim=True).detach()
    elif stabiliser == "none":
        log_h = half_sq
    else:
        raise ValueError(f"unknown stabiliser {stabiliser!r}; allowed: none, row, global")
    scale = log_h.exp() * w.shape[0] ** -0.5
    return torch.cat([wx.sin(), wx.cos()], dim=-1) * scale


def favor_features(
    q: torch.Tensor, k: torch.Tensor, projection: torch.Tensor, kernel: Kernel = "positive"
) -> tuple[torch.Tensor, torch.Tensor]:
    """phi(q), phi(k) of FAVOR+ with the d^-1/4 data scaling, up to factors that cancel.

    q, k: [B, H, L, D]; projection: [M, D] -> two [B, H, L, M] (trig: 2M), without the
    eps of the reference (``favor_attention`` adds it exactly, see there) and without
    the M^-1/2 factor (common to numerator and normaliser). For ``kernel="positive"``
    these equal exp(w·x - |x|²/2 - c) with the reference's stabilisers: c = max_i w_i·q
    per query row, c = max over all keys and features of w_i·k per (B, H).
    """
    _check_kernel(kernel)
    scale = q.shape[-1] ** -0.25  # q kᵀ / sqrt(D) = (D^-1/4 q)(D^-1/4 k)ᵀ
    if kernel == "trig":
        return trig_random_features(q * scale, projection, "row"), trig_random_features(k * scale, projection, "global")
    # One matmul gives w·x - |x|²/2: x is augmented with |x|²/2 and W with a column of -1,
    # so autograd never expands a per-row term to [L, M] (same values, fewer passes).
    w_aug = torch.cat([projection * scale, -projection.new_ones(projection.shape[0], 1)], dim=1)  # (M, D + 1)

    def exponent(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half_sq = x.square().sum(-1, keepdim=True) * (scale * scale / 2)  # (B, H, L, 1)
        z = torch.cat([x, half_sq], dim=-1) @ w_aug.T  # (B, H, L, M) = w·x' - |x'|²/2, x' = D^-1/4 x
        return z, half_sq.detach()

    zq, hq = exponent(q)
    zk, hk = exponent(k)
    with torch.no_grad():
        c_q = zq.amax(dim=-1, keepdim=True) + hq  # = max_i w_i·q' per row, as the reference
        c_k = (zk.amax(dim=-1, keepdim=True) + hk).amax(dim=-2, keepdim=True)  # = max over keys and i of w_i·k'
    return (zq - c_q).exp(), (zk - c_k).exp()


# ------------------------------------------------------------------------------- FAVOR+
def _causal_linear_attention(q_prime: torch.Tensor, k_prime: torch.Tensor, v1: torch.Tensor, chunk: int) -> torch.Tensor:
    """Causal phi(Q)·prefix_sum(phi(K) ⊗ [V, 1]) by chunks; [B, H, L, M] x2, [B, H, L, E] -> [B, H, L, E]."""
    b, h, length, m = q_prime.shape
    e = v1.shape[-1]
    pad = (-length) % chunk
    if pad:  # zero keys/values contribute nothing; padded query rows are dropped
        q_prime, k_prime, v1 = (F.pad(t, (0, 0, 0, pad)) for t in (q_prime, k_prime, v1))
    n = q_prime.shape[2] // chunk
    qc = q_prime.reshape(b, h, n, chunk, m)  # (B, H, N, C, M)
    kc = k_prime.reshape(b, h, n, chunk, m)
    vc = v1.reshape(b, h, n, chunk, e)  # (B, H, N, C, E)
    chunk_kv = kc.transpose(-2, -1) @ vc  # (B, H, N, M, E): sum over the chunk of phi(k) ⊗ [v, 1]
    before = chunk_kv.cumsum(dim=2) - chunk_kv  # exclusive prefix sum over chunks
    inter = qc @ before  # (B, H, N, C, E): all earlier chunks
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q_prime.device).tril()
    intra = ((qc @ kc.transpose(-2, -1)) * causal) @ vc  # (B, H, N, C, E): this chunk, j <= i
    return (inter + intra).reshape(b, h, n * chunk, e)[:, :, :length]


def favor_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    projection: torch.Tensor,
    causal: bool = False,
    kernel: Kernel = "positive",
    mask: torch.Tensor | None = None,
    eps: float = FAVOR_EPS,
    chunk_size: int = 64,
) -> torch.Tensor:
    """FAVOR+ estimate of ``softmax_attention(q, k, v, causal, mask)``.

    q, k: [B, H, L, D]; v: [B, H, L, Dv]; projection: [M, D]; mask: [B, L] bool.
    Non-causal: phi(Q)[phi(K)ᵀV] / phi(Q)[phi(K)ᵀ1], O(L M D) time and memory.
    Causal: the same with prefix sums, chunked (see module docstring).
    The normaliser rides along as an extra column of ones appended to V.
    """
    _check_qkv(q, k, v, causal)
    _check_kernel(kernel)
    if projection.ndim != 2 or projection.shape[1] != q.shape[-1]:
        raise ValueError(f"projection must be [M, D] with D = {q.shape[-1]}; got {tuple(projection.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    q_prime, k_prime = favor_features(q, k, projection.to(q.dtype), kernel)  # (B, H, L, M)
    if kernel == "trig":
        eps = 0.0  # the reference adds its stabiliser to positive features only
    v1 = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)  # (B, H, L, Dv + 1)
    if mask is not None:  # a zero row of [V, 1] removes a padded key from numerator and normaliser
        v1 = v1 * mask[:, None, :, None].to(v1.dtype)
    if causal:
        if eps:
            q_prime, k_prime = q_prime + eps, k_prime + eps
        out = _causal_linear_attention(q_prime, k_prime, v1, chunk_size)
    else:
        # (phi_q + eps)ᵀ (phi_k + eps): the eps terms are sums over L or M, added exactly
        # at [M, E] and [L, E] size instead of touching the [L, M] features.
        kv = k_prime.transpose(-2, -1) @ v1  # (B, H, M, E)
        if eps:
            kv = kv + eps * v1.sum(dim=-2, keepdim=True)
        out = q_prime @ kv  # (B, H, L, E)
        if eps:
            out = out + eps * kv.sum(dim=-2, keepdim=True)
    return out[..., :-1] / out[..., -1:]


# ------------------------------------------------------------------------------ modules
class MultiHeadAttention(nn.Module):
    """Multi-head self-attention whose core is exact softmax or FAVOR+ (the only switch).

    The FAVOR+ projection [M, D] is a buffer shared by the heads of this layer; it is
    redrawn only through :meth:`redraw_projection`.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        attention: AttentionKind = "favor",
        nb_features: int = 64,
        kernel: Kernel = "positive",
        orthogonal: bool = True,
        causal: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; allowed: {', '.join(ATTENTIONS)}")
        _check_kernel(kernel)
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be a multiple of n_heads {n_heads}")
        self.attention, self.kernel, self.orthogonal, self.causal = attention, kernel, orthogonal, causal
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        projection = orthogonal_gaussian_matrix(nb_features, self.head_dim, orthogonal) if attention == "favor" else torch.empty(0)
        self.register_buffer("projection", projection)

    @torch.no_grad()
    def redraw_projection(self, generator: torch.Generator | None = None) -> None:
        if self.attention == "favor":
            m, d = self.projection.shape
            fresh = orthogonal_gaussian_matrix(m, d, self.orthogonal, generator=generator)
            self.projection.copy_(fresh.to(self.projection.device))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, length, _ = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, D)
        if self.attention == "softmax":
            y = softmax_attention(q, k, v, self.causal, mask)
        else:
            y = favor_attention(q, k, v, self.projection, self.causal, self.kernel, mask)
        return self.dropout(self.out(y.transpose(1, 2).reshape(b, length, -1)))


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + Attn(LN x), then x + MLP(LN x)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, **attention) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout=dropout, **attention)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


class SequenceEncoder(nn.Module):
    """Token + learned position embeddings, pre-LN blocks, masked mean pooling, a linear head.

    ``redraw_interval`` = N > 0: in training mode, every N-th forward call (calls N, 2N,
    ...; counting from 0) first redraws every layer's projection; eval never redraws.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        attention: AttentionKind = "favor",
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int = 128,
        dropout: float = 0.1,
        nb_features: int = 64,
        kernel: Kernel = "positive",
        orthogonal: bool = True,
        causal: bool = False,
        redraw_interval: int = 100,
    ) -> None:
        super().__init__()
        if redraw_interval < 0:
            raise ValueError(f"redraw_interval must be >= 0 (0 = never); got {redraw_interval}")
        self.redraw_interval = redraw_interval
        self.redraw_seed = int(torch.randint(0, 2**31 - 1, ()))  # same on every DDP rank (same global seed)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.randn(1, max_len, d_model) * 0.02)
        attention_kw = dict(attention=attention, nb_features=nb_features, kernel=kernel, orthogonal=orthogonal, causal=causal)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff, dropout, **attention_kw) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)
        self.register_buffer("train_calls", torch.zeros((), dtype=torch.long))

    def redraw_projections(self, seed: int | None = None) -> None:
        """New projections for every layer; a ``seed`` makes them identical on every process."""
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        for block in self.blocks:
            block.attn.redraw_projection(generator)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: [B, L] int64; mask: [B, L] bool (True = real token) -> logits [B, classes]."""
        if tokens.shape[1] > self.pos.shape[1]:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_len {self.pos.shape[1]}")
        if self.training and self.redraw_interval:
            if self.train_calls > 0 and int(self.train_calls) % self.redraw_interval == 0:
                self.redraw_projections(seed=self.redraw_seed + int(self.train_calls))
            self.train_calls += 1
        x = self.embed(tokens) + self.pos[:, : tokens.shape[1]]  # (B, L, d_model)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        if mask is None:
            pooled = x.mean(dim=1)
        else:
            weights = mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.head(pooled)


# ---------------------------------------------------------------------- LightningModule
class SequenceClassifier(L.LightningModule):
    """Thin Lightning wrapper: cross-entropy, AdamW, linear warm-up then cosine decay.

    Batches are (tokens [B, L], mask [B, L], label [B]). The variants differ only in
    ``attention`` ("softmax" or "favor").
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        attention: AttentionKind = "favor",
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int = 128,
        dropout: float = 0.1,
        nb_features: int = 64,
        kernel: Kernel = "positive",
        orthogonal: bool = True,
        redraw_interval: int = 100,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 20,
        max_steps: int = 500,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = SequenceEncoder(
            vocab_size, num_classes, max_len, attention, d_model, n_heads, n_layers, d_ff, dropout,
            nb_features, kernel, orthogonal, causal=False, redraw_interval=redraw_interval,
        )
        acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.val_acc, self.test_acc = acc.clone(), acc.clone()
        self.test_count = torchmetrics.SumMetric()

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(tokens, mask)

    def training_step(self, batch, batch_idx):
        tokens, mask, y = batch
        loss = F.cross_entropy(self(tokens, mask), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        tokens, mask, y = batch
        self.val_acc(self(tokens, mask), y)
        self.log("val/accuracy", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        tokens, mask, y = batch
        self.test_acc(self(tokens, mask), y)
        self.test_count.update(torch.tensor(float(len(y)), device=self.device))
        self.log("test/accuracy", self.test_acc)
        self.log("test/count", self.test_count)

    def configure_optimizers(self):
        hp = self.hparams
        return warmup_cosine_adamw(self.named_parameters(), hp.lr, hp.weight_decay, hp.warmup_steps, hp.max_steps,
                                   no_decay=lambda n, p: not (p.ndim > 1 and not n.endswith("pos")))
