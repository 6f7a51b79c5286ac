"""Recurrent Independent Mechanisms (arXiv 1909.10893, ICLR 2021).

Reference implementation: anirudh9119/RIMs (the authors' PyTorch code) and its port
dido1998/Recurrent-Independent-Mechanisms; the math follows the paper's Section 2 and
Appendix C. Reproduced: k-of-n input attention over [null, x], block-diagonal per-unit
LSTM/GRU dynamics, multi-head communication attention with a residual for the active
units, inactive units frozen bit-for-bit; the sequential-digits resolution shift and the
copying task against an LSTM of matched parameter count. Not reproduced: the paper's
scale (600 hidden units, 100+ epochs of MNIST), spatially structured input attention,
the RL and bouncing-ball experiments.

Departures, flagged:
- One input-attention head (the paper's Appendix D.1/D.3 use 1 head for copying and
  sequential MNIST); the key and value maps have no bias, so the null input's key and
  value are exactly zero and its attention score is 0.
- Communication keys/values come from h~ (the active units' updated state, the inactive
  units' unchanged state), as the paper's equations say; the authors' code reads the
  inactive units' LSTM output computed on a zero input instead.
"""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchmetrics

from lit_modules.optim import warmup_cosine_adamw

Cell = Literal["lstm", "gru"]
Core = Literal["rims", "lstm"]
Task = Literal["classify", "copy"]


# ----------------------------------------------------------------------------- the math
def group_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A separate linear map per unit: x [B, U, I], weight [U, I, O], bias [U, O] -> [B, U, O]."""
    y = torch.einsum("bui,uio->buo", x, weight)
    return y if bias is None else y + bias


def input_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, dropout: float = 0.0, training: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each unit reads from the rows [null, x] (eq. 2 of the paper).

    q [B, U, D] (one query per unit), keys [B, N, D], values [B, N, V] with row 0 the null
    input -> (read [B, U, V], attention on the null row [B, U]).
    """
    scores = torch.einsum("bud,bnd->bun", q, keys) / math.sqrt(q.shape[-1])  # (B, U, N)
    probs = scores.softmax(-1)
    null = probs[..., 0]
    probs = F.dropout(probs, dropout, training)
    return torch.einsum("bun,bnv->buv", probs, values), null


def select_active(null_attention: torch.Tensor, k: int) -> torch.Tensor:
    """The k units with the *least* attention on the null input: bool [B, U]."""
    idx = torch.topk(null_attention, k, dim=1, largest=False).indices
    return torch.zeros_like(null_attention, dtype=torch.bool).scatter_(1, idx, True)


def lstm_blocks(
    x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_x: torch.Tensor, w_h: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step per unit with its own weights (block-diagonal, no cross-unit weights).

    x [B, U, I], h, c [B, U, H], w_x [U, I, 4H], w_h [U, H, 4H], b [U, 4H]; gates in
    torch's order (input, forget, cell, output).
    """
    i, f, g, o = (group_linear(x, w_x) + group_linear(h, w_h, b)).chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_new), c_new


def gru_blocks(
    x: torch.Tensor, h: torch.Tensor, w_x: torch.Tensor, w_h: torch.Tensor, b_x: torch.Tensor, b_h: torch.Tensor
) -> torch.Tensor:
    """One GRU step per unit (torch's gate order reset, update, new): shapes as lstm_blocks, 3H."""
    xr, xz, xn = group_linear(x, w_x, b_x).chunk(3, dim=-1)
    hr, hz, hn = group_linear(h, w_h, b_h).chunk(3, dim=-1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def communication_attention(
    h: torch.Tensor, w_qkv: torch.Tensor, w_o: torch.Tensor, num_heads: int, dropout: float = 0.0, training: bool = False
) -> torch.Tensor:
    """Multi-head attention among the units, per-unit projections (Section 2.4).

    h [B, U, H]; w_qkv [U, H, 3*heads*D] (query, key, value maps side by side, one per
    unit); w_o [U, heads*D, H] -> the update [B, U, H] (the caller adds it to the active
    units only: the residual).
    """
    B, U, _ = h.shape
    q, k, v = (t.view(B, U, num_heads, -1).transpose(1, 2) for t in group_linear(h, w_qkv).chunk(3, -1))  # (B, heads, U, D)
    probs = F.dropout((q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1), dropout, training)
    read = (probs @ v).transpose(1, 2).reshape(B, U, -1)  # (B, U, heads*D)
    return group_linear(read, w_o)


def softmax_last(scores: torch.Tensor) -> torch.Tensor:
    """``scores.softmax(-1)`` written out: over a last axis of a few units torch's CPU kernel is
    about 4x slower than these three ops (192 vs 51 us on [64, 4, 6, 6])."""
    e = (scores - scores.detach().amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


# ------------------------------------------------------------------------------ modules
def _group_weight(units: int, fan_in: int, fan_out: int) -> nn.Parameter:
    bound = 1 / math.sqrt(fan_in)  # nn.Linear's default scale, per unit
    return nn.Parameter(torch.empty(units, fan_in, fan_out).uniform_(-bound, bound))


class RIMCell(nn.Module):
    """One step of RIMs: ``forward(x [B, I], h [B, U, H], c [B, U, H] | None) -> (h', c', active)``.

    ``hidden_size`` is the size of one unit; ``c`` is None for ``cell="gru"``. Input values
    are 4x a unit's size (the paper's Table 3); communication keys and values have
    ``comm_key_size`` per head (Table 3: 32 and 32).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_units: int,
        k: int,
        cell: Cell = "lstm",
        input_key_size: int = 64,
        num_comm_heads: int = 4,
        comm_key_size: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 1 <= k <= num_units:
            raise ValueError(f"k must be in [1, num_units={num_units}]; got k={k}")
        if cell not in ("lstm", "gru"):
            raise ValueError(f"unknown cell {cell!r}; known: lstm, gru")
        self.input_size, self.hidden_size, self.num_units, self.k, self.cell = input_size, hidden_size, num_units, k, cell
        self.num_comm_heads, self.dropout = num_comm_heads, dropout
        value_size = 4 * hidden_size  # Table 3: "Input Values: size of individual RIM * 4"
        self.key = nn.Linear(input_size, input_key_size, bias=False)  # W^e, shared by the units
        self.value = nn.Linear(input_size, value_size, bias=False)  # W^v, shared
        self.w_query = _group_weight(num_units, hidden_size, input_key_size)  # W^q_k, one per unit
        gates = 4 if cell == "lstm" else 3
        self.w_x = _group_weight(num_units, value_size, gates * hidden_size)
        self.w_h = _group_weight(num_units, hidden_size, gates * hidden_size)
        self.b = nn.Parameter(torch.zeros(num_units, gates * hidden_size))
        self.b_h = nn.Parameter(torch.zeros(num_units, gates * hidden_size)) if cell == "gru" else None
        comm = num_comm_heads * comm_key_size
        self.w_comm_qkv = _group_weight(num_units, hidden_size, 3 * comm)
        self.w_co = _group_weight(num_units, comm, hidden_size)

    def initial_state(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = torch.zeros(batch, self.num_units, self.hidden_size, device=device)
        return h, (torch.zeros_like(h) if self.cell == "lstm" else None)

    def _check(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None) -> None:
        want = (x.shape[0], self.num_units, self.hidden_size)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"x must be [B, input_size={self.input_size}]; got {list(x.shape)}")
        if tuple(h.shape) != want:
            raise ValueError(f"h must be [B, num_units, hidden_size] = {list(want)}; got {list(h.shape)}")
        if self.cell == "lstm" and (c is None or tuple(c.shape) != want):
            raise ValueError(f"c must be {list(want)} for cell='lstm'; got {None if c is None else list(c.shape)}")
        if self.cell == "gru" and c is not None:
            raise ValueError("c must be None for cell='gru'")

    def dynamics(
        self, read: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every unit's own LSTM/GRU step on its read input, before communication."""
        if self.cell == "lstm":
            return lstm_blocks(read, h, c, self.w_x, self.w_h, self.b)
        return gru_blocks(read, h, self.w_x, self.w_h, self.b, self.b_h), None

    def encode_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What a step needs from x [..., I] alone: its key [..., D] and, per unit, its value
        already mapped by the unit's input weights [..., U, G*H]. A sequence model computes
        these for all steps at once (they do not depend on the state)."""
        vx = self.value(x)
        return self.key(x), torch.einsum("...v,uvg->...ug", vx, self.w_x)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        self._check(x, h, c)
        return self.step(*self.encode_inputs(x), h, c)

    def step(
        self, kx: torch.Tensor, x_gates: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One step from ``encode_inputs``: kx [B, D], x_gates [B, U, G*H], h and c [B, U, H].
        ``step_units`` in the batch-major layout (a copy each way; sequences use ``step_units``)."""
        t = (lambda z: None if z is None else z.transpose(0, 1).contiguous())
        h_new, c_new, active = self.step_units(kx, t(x_gates), t(h), t(c), self.fused_weights())
        return t(h_new), t(c_new), active.t()

    def fused_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-unit maps of the previous state side by side, one batched product per step:
        [W^q | W_h] [U, H, D + G*H] and their biases [U, 1, D + G*H] (the query has none)."""
        w = torch.cat([self.w_query, self.w_h], -1)
        b = torch.cat([self.b.new_zeros(self.num_units, self.w_query.shape[-1]), self.b_h if self.cell == "gru" else self.b], -1)
        return w, b.unsqueeze(1)

    def step_units(
        self, kx: torch.Tensor, x_gates: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None,
        fused: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One step, unit-major: kx [B, D], x_gates [U, B, G*H], h and c [U, B, H], ``fused`` from
        ``fused_weights`` -> (h', c', active [U, B]). Every per-unit map is one ``bmm`` over the
        units (no permutes), which makes a step about 1.3x faster than the batch-major einsums.

        Input attention over the two rows [null, x] with a zero null key and value
        (``input_attention`` in closed form): the score of the null row is 0, so a unit's
        attention on x is sigmoid(s) with s = q.k_x / sqrt(D), its attention on the null row
        is 1 - sigmoid(s), and its read is sigmoid(s) v_x, whose image under the unit's input
        weights is sigmoid(s) (v_x W_x).
        """
        U, B, H = h.shape
        q, h_gates = torch.baddbmm(fused[1], h, fused[0]).split([fused[0].shape[-1] - x_gates.shape[-1], x_gates.shape[-1]], -1)
        s = (q * kx).sum(-1) / math.sqrt(q.shape[-1])  # (U, B)
        p_x = F.dropout(torch.sigmoid(s), self.dropout, self.training)
        null = torch.sigmoid(-s)  # attention on the null row
        active = torch.zeros_like(null, dtype=torch.bool).scatter_(0, torch.topk(null, self.k, dim=0, largest=False).indices, True)
        a = active.unsqueeze(-1)
        gates_x = p_x.unsqueeze(-1) * x_gates
        if self.cell == "lstm":
            i, f, g, o = (gates_x + h_gates).chunk(4, dim=-1)
            c_upd = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_upd = torch.sigmoid(o) * torch.tanh(c_upd)
        else:
            xr, xz, xn = (gates_x + self.b.unsqueeze(1)).chunk(3, dim=-1)
            hr, hz, hn = h_gates.chunk(3, dim=-1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h_upd, c_upd = (1 - z) * torch.tanh(xn + r * hn) + z * h, None
        h_tilde = torch.where(a, h_upd, h)  # inactive units: unchanged (and no gradient from this step)
        # communication (communication_attention, unit-major): heads over the units, per-unit maps
        heads = self.num_comm_heads
        qc, kc, vc = (t.view(U, B, heads, -1).permute(1, 2, 0, 3) for t in torch.bmm(h_tilde, self.w_comm_qkv).chunk(3, -1))
        scores = qc @ kc.transpose(-1, -2) / math.sqrt(qc.shape[-1])  # (B, heads, U, U)
        probs = F.dropout(softmax_last(scores), self.dropout, self.training)
        read = (probs @ vc).permute(2, 0, 1, 3).reshape(U, B, -1)  # (U, B, heads*D)
        h_new = torch.where(a, h_tilde + torch.bmm(read, self.w_co), h)  # residual, active units only
        c_new = torch.where(a, c_upd, c) if c is not None else None
        return h_new, c_new, active

    def reference_step(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The same step written term by term with the paper's functions (``input_attention``
        over explicit [null, x] rows, ``lstm_blocks``/``gru_blocks``): slower; the tests check
        that ``forward`` equals it."""
        self._check(x, h, c)
        kx, vx = self.key(x).unsqueeze(1), self.value(x).unsqueeze(1)
        keys, values = torch.cat([torch.zeros_like(kx), kx], 1), torch.cat([torch.zeros_like(vx), vx], 1)
        read, null = input_attention(group_linear(h, self.w_query), keys, values)
        active = select_active(null, self.k)
        a = active.unsqueeze(-1)
        h_upd, c_upd = self.dynamics(read, h, c)
        h_tilde = torch.where(a, h_upd, h)
        h_new = torch.where(a, h_tilde + communication_attention(h_tilde, self.w_comm_qkv, self.w_co, self.num_comm_heads), h)
        return h_new, (torch.where(a, c_upd, c) if c is not None else None), active


class RecurrentNet(nn.Module):
    """Embedding -> recurrent core (``RIMCell`` or ``nn.LSTM``, the only difference) -> linear head.

    The embedding gives every token (a 0 pixel included) a learned vector, so no input is
    the null input. ``forward(tokens [B, L])`` -> (logits [B, L, C], active [B, L, U] or None).
    """

    def __init__(
        self, vocab_size: int, num_outputs: int, core: Core = "rims", embed_dim: int = 16, hidden_size: int = 32,
        num_units: int = 6, k: int = 4, cell: Cell = "lstm", input_key_size: int = 64, num_comm_heads: int = 4,
        comm_key_size: int = 32, dropout: float = 0.0, lstm_hidden: int = 128,
    ) -> None:
        super().__init__()
        if core not in ("rims", "lstm"):
            raise ValueError(f"unknown core {core!r}; known: rims, lstm")
        self.core = core
        self.embed = nn.Embedding(vocab_size, embed_dim)
        if core == "rims":
            self.cell = RIMCell(embed_dim, hidden_size, num_units, k, cell, input_key_size, num_comm_heads,
                                comm_key_size, dropout)
            out_dim = num_units * hidden_size
        else:
            self.lstm = nn.LSTM(embed_dim, lstm_hidden, batch_first=True)
            out_dim = lstm_hidden
        self.head = nn.Linear(out_dim, num_outputs)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [B, L]; got {list(tokens.shape)}")
        e = self.embed(tokens)  # (B, L, E)
        if self.core == "lstm":
            return self.head(self.lstm(e)[0]), None
        B, L, _ = e.shape
        h, c = (None if z is None else z.transpose(0, 1) for z in self.cell.initial_state(B, tokens.device))  # (U, B, H)
        fused = self.cell.fused_weights()
        # encode_inputs for all steps at once, the gates laid out (L, U, B, G*H)
        kx, x_gates = self.cell.key(e), torch.einsum("blv,uvg->lubg", self.cell.value(e), self.cell.w_x)
        outs, actives = [], []
        # unbind, not [:, t]: one backward for all steps rather than a zero-filled one per step
        for k_t, g_t in zip(kx.unbind(1), x_gates.unbind(0)):
            h, c, active = self.cell.step_units(k_t, g_t, h, c, fused)
            outs.append(h)
            actives.append(active)
        out = torch.stack(outs, 0).permute(2, 0, 1, 3).reshape(B, L, -1)  # (B, L, U*H), unit-major per step
        return self.head(out), torch.stack(actives, 0).permute(2, 0, 1)


def lstm_param_count(hidden: int, vocab_size: int, embed_dim: int, num_outputs: int) -> int:
    """Parameters of ``RecurrentNet(core="lstm")``: embedding, nn.LSTM (two biases), head."""
    return vocab_size * embed_dim + 4 * hidden * (embed_dim + hidden + 2) + hidden * num_outputs + num_outputs


def matched_lstm_hidden(target_params: int, vocab_size: int, embed_dim: int, num_outputs: int) -> int:
    """The LSTM width whose whole model has the parameter count closest to ``target_params``."""
    if target_params <= lstm_param_count(1, vocab_size, embed_dim, num_outputs):
        raise ValueError(f"target_params must exceed a width-1 LSTM's count; got {target_params}")
    hidden = 1
    while lstm_param_count(hidden + 1, vocab_size, embed_dim, num_outputs) <= target_params:
        hidden += 1
    below, above = (lstm_param_count(h, vocab_size, embed_dim, num_outputs) for h in (hidden, hidden + 1))
    return hidden if target_params - below <= above - target_params else hidden + 1


# ------------------------------------------------------------------------ LightningModule
class RecurrentModel(L.LightningModule):
    """Sequence classification (``task="classify"``: the label from the last step) or copying
    (``task="copy"``: the last ``num_targets`` steps predict the copied symbols).

    The variants differ in ``core`` (and ``k``) only: same embedding, head, optimizer and
    step budget. ``lstm_hidden=0`` sizes the LSTM to the parameter count of the RIM model
    built from the same arguments.
    """

    def __init__(
        self,
        vocab_size: int = 2,
        num_outputs: int = 10,
        task: Task = "classify",
        core: Core = "rims",
        embed_dim: int = 16,
        hidden_size: int = 32,
        num_units: int = 6,
        k: int = 4,
        cell: Cell = "lstm",
        input_key_size: int = 64,
        num_comm_heads: int = 4,
        comm_key_size: int = 32,
        dropout: float = 0.0,
        lstm_hidden: int = 0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 20,
        max_steps: int = 500,
    ) -> None:
        super().__init__()
        if task not in ("classify", "copy"):
            raise ValueError(f"unknown task {task!r}; known: classify, copy")
        if core == "lstm" and lstm_hidden == 0:
            rims = RecurrentNet(vocab_size, num_outputs, "rims", embed_dim, hidden_size, num_units, k, cell,
                                input_key_size, num_comm_heads, comm_key_size)
            lstm_hidden = matched_lstm_hidden(sum(p.numel() for p in rims.parameters()), vocab_size, embed_dim, num_outputs)
        self.save_hyperparameters()
        self.hparams.lstm_hidden = lstm_hidden
        self.net = RecurrentNet(vocab_size, num_outputs, core, embed_dim, hidden_size, num_units, k, cell,
                                input_key_size, num_comm_heads, comm_key_size, dropout, lstm_hidden or 1)
        self.test_acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_outputs)
        self.test_loss = torchmetrics.MeanMetric()
        self.test_count = torchmetrics.SumMetric()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the scored steps: [B, C] (classify) or [B, T, C] (copy, T targets)."""
        return self.scored_logits(tokens, None)[0]

    def scored_logits(self, tokens: torch.Tensor, num_targets: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, active = self.net(tokens)
        if self.hparams.task == "classify":
            return logits[:, -1], active
        return logits[:, -(num_targets or 1):], active

    def _loss(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens, target = batch
        logits, _ = self.scored_logits(tokens, target.shape[1] if target.ndim == 2 else None)
        logits, target = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
        return F.cross_entropy(logits, target), logits, target

    def training_step(self, batch, batch_idx):
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def test_step(self, batch, batch_idx):
        loss, logits, target = self._loss(batch)
        self.test_acc(logits, target)
        self.test_loss.update(loss, weight=target.numel())
        self.test_count.update(torch.tensor(float(len(batch[1])), device=self.device))
        self.log("test/acc", self.test_acc)
        self.log("test/loss", self.test_loss)
        self.log("test/count", self.test_count)

    def configure_optimizers(self):
        hp = self.hparams
        return warmup_cosine_adamw(self.named_parameters(), hp.lr, hp.weight_decay, hp.warmup_steps, hp.max_steps)
