"""Pre-training both of genre's models on the same texts before their task (issue 27).

GENRE fine-tunes BART-large, whose denoising pre-training (Lewis et al., "BART", ACL 2020,
arXiv 1910.13461, Sec. 2.2 and 5.1) is what lets it copy a title it never saw as a target.
The small seq2seq here gets that stage in BART's manner, **text infilling**: spans with
Poisson(lambda = 3) lengths cover about 30 % of a text's tokens, each span is replaced by one
mask token (a 0-length span inserts one), and the decoder reconstructs the original text.
The dual-encoder baseline gets the same texts, steps, batch size and learning-rate schedule
with its own objective, **masked-LM** (BERT, Devlin et al. 2019, arXiv 1810.04805, Sec. 3.1:
15 % of the tokens, 80 % of them replaced by the mask, 10 % by a random token, 10 % kept),
through one BART encoder with an output layer tied to its token embedding; both of the dual
encoder's towers start from it, as BLINK starts both from BERT.

Departures, flagged: tokens, not whole words, are masked (BART masks whole words); BART-large
also permutes sentences, which is not done here; the mask token is ``<unk>`` (id 3), which a
byte-level BPE never emits, so the cached tokenizer and the models' vocabulary stay unchanged.

Symbols: B texts in a batch, L tokens of a text, S source tokens, T target tokens, D width, V vocabulary.
"""

from __future__ import annotations

import math
from typing import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_modules.genre.models import EOS_ID, PAD_ID, bart_config, bart_encoder, shared_embedding
from lit_modules.optim import warmup_cosine_adamw

MASK_ID = 3  # <unk>: a byte-level BPE with the full byte alphabet never emits it (datamodules.entities.SPECIAL_TOKENS)
NUM_SPECIAL = 6  # ids 0..5 are <s>, <pad>, </s>, <unk>, [START_ENT], [END_ENT]: never masked, never a random replacement


# --------------------------------------------------------------------------------------
# The corruptions (pure functions)
# --------------------------------------------------------------------------------------
def span_lengths(n_mask: int, poisson_lambda: float, rng: np.random.Generator) -> list[int]:
    """Poisson(lambda) span lengths whose sum is exactly ``n_mask``: drawn until the budget is
    reached, the last one cut to fit (fairseq's ``DenoisingDataset.add_whole_word_mask``).
    0-length spans are kept: BART inserts a mask token for them."""
    lengths: list[int] = []
    total = 0
    while total < n_mask:
        k = int(rng.poisson(poisson_lambda))
        k = min(k, n_mask - total)
        lengths.append(k)
        total += k
    return lengths


def text_infilling(tokens: Sequence[int], mask_ratio: float, poisson_lambda: float, rng: np.random.Generator,
                   mask_id: int = MASK_ID) -> list[int]:
    """BART's text infilling of one text [L] -> the corrupted source (the target is ``tokens`` itself).

    ``n = floor(mask_ratio * L + u)``, u ~ U(0, 1) (so E[n] = mask_ratio * L, also for short titles) tokens are
    masked in spans of :func:`span_lengths`; each span, and each 0-length span, becomes one ``mask_id``. Spans are
    placed in distinct gaps between the L - n kept tokens, so two spans never touch (each stays one visible mask)
    and the kept tokens keep their order. Where the spans outnumber the gaps, the extra 0-length spans are dropped
    and the shortest spans merged."""
    L_ = len(tokens)
    n = min(L_, int(math.floor(mask_ratio * L_ + rng.random())))
    lengths = span_lengths(n, poisson_lambda, rng)
    kept = L_ - n
    gaps = kept + 1  # before the first kept token, between any two, after the last
    if len(lengths) > gaps:
        nonzero = sorted((k for k in lengths if k > 0), reverse=True)
        zeros = [0] * max(0, gaps - len(nonzero))
        while len(nonzero) > gaps:  # merge the two shortest spans: total masked unchanged
            a, b = nonzero.pop(), nonzero.pop()
            nonzero.append(a + b)
            nonzero.sort(reverse=True)
        lengths = nonzero + zeros
        rng.shuffle(lengths)
    where = np.sort(rng.choice(gaps, size=len(lengths), replace=False))  # gap index of each span, in order
    out: list[int] = []
    pos = 0  # next token of ``tokens``
    span = 0
    for gap in range(gaps):
        if span < len(lengths) and where[span] == gap:
            out.append(mask_id)
            pos += lengths[span]
            span += 1
        if gap < kept:
            out.append(int(tokens[pos]))
            pos += 1
    return out


def mlm_mask(ids: Tensor, mask_prob: float, vocab_size: int, generator: torch.Generator, mask_id: int = MASK_ID,
             num_special: int = NUM_SPECIAL) -> tuple[Tensor, Tensor]:
    """BERT's masking of a batch ids [B, L] -> (inputs [B, L], labels [B, L], -100 where not predicted).

    Each token with id >= ``num_special`` (never a special or padding) is chosen with probability ``mask_prob``;
    a chosen token becomes ``mask_id`` with probability 0.8, a random regular token with 0.1, and stays with 0.1."""
    eligible = ids >= num_special
    u = torch.rand(ids.shape, generator=generator)
    chosen = eligible & (u < mask_prob)
    labels = ids.masked_fill(~chosen, -100)
    action = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(num_special, vocab_size, ids.shape, generator=generator)
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return inputs, labels


def chunks(ids: Sequence[int], length: int) -> list[list[int]]:
    """Consecutive pieces of at most ``length`` tokens (the last may be shorter)."""
    return [list(ids[i : i + length]) for i in range(0, len(ids), length)]


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------
def _pad(seqs: Sequence[Sequence[int]], value: int) -> Tensor:
    width = max(map(len, seqs))
    return torch.tensor([list(s) + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


class InfillingCollate:
    """Texts -> GENRE's batch: ``input_ids``/``attention_mask`` [B, S] (infilled), ``labels`` [B, T] (the text and
    ``</s>``, -100 padded); a seeded generator, so a run's corruptions are reproducible."""

    def __init__(self, mask_ratio: float, poisson_lambda: float, seed: int):
        self.mask_ratio, self.poisson_lambda = mask_ratio, poisson_lambda
        self.rng = np.random.default_rng(seed)

    def __call__(self, texts: Sequence[Sequence[int]]) -> dict:
        sources = [text_infilling(t, self.mask_ratio, self.poisson_lambda, self.rng) for t in texts]
        input_ids = _pad(sources, PAD_ID)
        labels = _pad([list(t) + [EOS_ID] for t in texts], -100)
        return dict(input_ids=input_ids, attention_mask=(input_ids != PAD_ID).long(), labels=labels)


class MaskedLMCollate:
    """Texts -> the masked-LM batch: ``input_ids``/``attention_mask`` [B, L], ``labels`` [B, L] (-100: not predicted)."""

    def __init__(self, mask_prob: float, vocab_size: int, seed: int):
        self.mask_prob, self.vocab_size = mask_prob, vocab_size
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, texts: Sequence[Sequence[int]]) -> dict:
        ids = _pad(texts, PAD_ID)
        inputs, labels = mlm_mask(ids, self.mask_prob, self.vocab_size, self.generator)
        return dict(input_ids=inputs, attention_mask=(ids != PAD_ID).long(), labels=labels)


class LengthBatches(torch.utils.data.Sampler):
    """Batches of texts of about one length, in random order, new every epoch (fairseq batches by length too): a batch
    of 5-token titles is not padded to a 48-token piece of an article. Within one length the texts are shuffled;
    the last, incomplete batch is dropped."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths, self.batch_size = np.asarray(lengths, dtype=np.float64), batch_size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.lengths) // self.batch_size

    def __iter__(self):
        order = np.argsort(self.lengths + self.rng.random(len(self.lengths)), kind="stable")  # random ties
        batches = order[: len(self) * self.batch_size].reshape(len(self), self.batch_size)
        for i in self.rng.permutation(len(batches)):
            yield batches[i].tolist()


def pretrain_loader(texts: Sequence[Sequence[int]], collate, batch_size: int, seed: int):
    """Batches of the texts by :class:`LengthBatches`, corrupted by ``collate`` (anew every epoch)."""
    from torch.utils.data import DataLoader

    texts = list(texts)
    return DataLoader(texts, batch_sampler=LengthBatches([len(t) for t in texts], batch_size, seed), collate_fn=collate)


# --------------------------------------------------------------------------------------
# The dual encoder's pre-training model
# --------------------------------------------------------------------------------------
class MaskedLMModule(L.LightningModule):
    """One BART encoder of the dual encoder's size and layout, with its token embedding, and an output layer tied to
    that embedding (plus a bias: BERT's decoder bias) predicting the masked tokens."""

    def __init__(self, vocab_size: int = 8000, d_model: int = 128, layers: int = 2, heads: int = 4, ffn_dim: int = 512,
                 max_positions: int = 128, dropout: float = 0.1, lr: float = 1e-3, weight_decay: float = 0.01,
                 warmup_steps: int = 100, max_steps: int = 1000, pre_norm: bool = False):
        super().__init__()
        self.save_hyperparameters()
        # the dual encoder's own init_std (0.02, see DualEncoderModule)
        cfg = bart_config(vocab_size, d_model, layers, heads, ffn_dim, max_positions, dropout, init_std=0.02, pre_norm=pre_norm)
        self.shared = shared_embedding(vocab_size, d_model, cfg.init_std)
        self.encoder = bart_encoder(cfg)
        self.encoder.embed_tokens = self.shared
        self.bias = torch.nn.Parameter(torch.zeros(vocab_size))

    def loss(self, batch: dict) -> Tensor:
        h = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state  # [B, L, D]
        picked = batch["labels"] != -100
        logits = h[picked] @ self.shared.weight.T + self.bias  # [N, V], only the masked positions
        return F.cross_entropy(logits, batch["labels"][picked])

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        self.log("pretrain/loss", loss, prog_bar=True)
        return loss

    def encoder_state(self) -> dict:
        """The encoder's weights (its token embedding included), as a dual-encoder tower loads them."""
        return {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}

    def configure_optimizers(self):
        h = self.hparams
        return warmup_cosine_adamw(self.named_parameters(), h.lr, h.weight_decay, h.warmup_steps, h.max_steps)


def init_dual_encoder(module, encoder_state: dict) -> None:
    """Both towers of a ``DualEncoderModule`` (and their shared embedding) from one pre-trained encoder."""
    for tower in (module.mention_encoder, module.title_encoder):
        tower.load_state_dict(encoder_state, strict=True)


class LossTrace(L.Callback):
    """Each training step's loss (floats), for the final pre-training loss."""

    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach()))

    def final(self, share: float = 0.1) -> float:
        """Mean loss over the last ``share`` of the steps (nan without steps)."""
        if not self.losses:
            return float("nan")
        tail = self.losses[-max(1, int(len(self.losses) * share)):]
        return float(np.mean(tail))
