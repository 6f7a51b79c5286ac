"""GENRE's seq2seq model and trie-constrained beam search; the dual-encoder and BM25 baselines.

Symbols: B mentions in a batch, S source tokens, T title tokens, k beams (or top-k),
D model width, E KB titles.
"""

from __future__ import annotations

import copy
import math
import time
from functools import lru_cache
from typing import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_modules.genre.trie import Trie
from lit_modules.optim import warmup_cosine_adamw

PAD_ID, BOS_ID, EOS_ID = 1, 0, 2  # BART's ids (datamodules.entities.SPECIAL_TOKENS)
START_ENT_ID, END_ENT_ID = 4, 5  # the mention markers' ids (datamodules.entities.SPECIAL_TOKENS)


def bart_config(vocab_size: int, d_model: int, layers: int, heads: int, ffn_dim: int, max_positions: int,
                dropout: float = 0.1, init_std: float | None = None, pre_norm: bool = False):
    """A small BART config trained from scratch; generation defaults made neutral (no forced
    BOS/EOS, no n-gram blocking) so that decoding is plain beam search over the model.
    ``pre_norm``: mBART's layout (LayerNorm before each sub-layer and after each stack, the
    model mGENRE fine-tunes), an ``MBartConfig``; else BART's post-LayerNorm ``BartConfig``."""
    from transformers import BartConfig, MBartConfig

    return (MBartConfig if pre_norm else BartConfig)(
        vocab_size=vocab_size, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn_dim, decoder_ffn_dim=ffn_dim,
        max_position_embeddings=max_positions, dropout=dropout, attention_dropout=0.0, activation_dropout=0.0,
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID, decoder_start_token_id=EOS_ID,
        forced_bos_token_id=None, forced_eos_token_id=None, scale_embedding=True,
        # BART's init_std 0.02 suits d=1024 (about 0.64/sqrt(d)); at a small width it leaves the attention paths
        # nearly silent (a from-scratch seq2seq then takes thousands of steps to learn to copy): None scales it as 1/sqrt(d)
        init_std=d_model**-0.5 if init_std is None else init_std,
    )


def load_seq2seq(checkpoint: str, vocab_size: int | None = None):
    """A pre-trained BART-family seq2seq (a Hugging Face name such as ``facebook/bart-large``, the model GENRE
    fine-tunes, or a local folder), in train mode (``from_pretrained`` returns eval mode, which Lightning would keep:
    fine-tuning with dropout off), its token embedding grown to ``vocab_size`` (the mention markers the checkpoint's
    tokenizer gains, :func:`datamodules.entities.checkpoint_tokenizer`) and its generation defaults made neutral as
    :func:`bart_config`'s (BART's forced ``<s>`` and trigram blocking would change the decoded titles)."""
    from transformers import AutoModelForSeq2SeqLM

    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint)
    except OSError as exc:
        raise FileNotFoundError(f"cannot load seq2seq checkpoint {checkpoint!r} (offline? pass a local path): "
                                f"{str(exc).splitlines()[0]}") from None
    cfg = model.config
    if (cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id) != (PAD_ID, EOS_ID, EOS_ID):
        raise ValueError(f"checkpoint {checkpoint!r} is not BART-style (<pad> {PAD_ID}, </s> {EOS_ID}, decoding from "
                         f"</s>); got pad {cfg.pad_token_id}, eos {cfg.eos_token_id}, decoder start "
                         f"{cfg.decoder_start_token_id}")
    if vocab_size is not None and vocab_size != model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(vocab_size)
    gen = model.generation_config
    gen.forced_bos_token_id = gen.forced_eos_token_id = None
    gen.no_repeat_ngram_size, gen.min_length = 0, 0
    return model.train()


def seq2seq_model(config):
    """BART (post-LN) or mBART (pre-LN) for conditional generation, from ``config``. Both shift the
    labels right behind ``</s>`` (BART via ``decoder_start_token_id``, mBART by moving the last
    token, here ``</s>``, to the front): the same decoder inputs."""
    from transformers import BartForConditionalGeneration, MBartConfig, MBartForConditionalGeneration

    return (MBartForConditionalGeneration if isinstance(config, MBartConfig) else BartForConditionalGeneration)(config)


# --------------------------------------------------------------------------------------
# Constrained decoding (the paper's Section 3.2)
# --------------------------------------------------------------------------------------
def prefix_allowed_tokens_fn(trie: Trie, num_special_prefix: int = 1):
    """``generate``'s ``prefix_allowed_tokens_fn``: the decoder's sequence minus its start
    token is a prefix of some title; the trie gives the next tokens. A finished title
    (nothing may follow) allows only ``</s>``/padding, which beam search never scores again."""

    @lru_cache(maxsize=1 << 16)
    def allowed(prefix: tuple[int, ...]) -> list[int]:
        return trie.get(prefix) or [PAD_ID]

    def fn(batch_id: int, sent: Tensor) -> list[int]:
        return allowed(tuple(sent[num_special_prefix:].tolist()))

    return fn


@torch.inference_mode()
def generate_titles(model, input_ids: Tensor, attention_mask: Tensor, num_beams: int, max_new_tokens: int,
                    trie: Trie | None = None) -> list[list[tuple[int, ...]]]:
    """k beam-search outputs per mention, best first: [B][k] token tuples (without the
    start token, up to and including ``</s>`` when generated). ``trie=None``: unconstrained."""
    model.eval()
    out = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, num_beams=num_beams, num_return_sequences=num_beams,
        max_new_tokens=max_new_tokens, early_stopping=True, do_sample=False, length_penalty=1.0,
        prefix_allowed_tokens_fn=None if trie is None else prefix_allowed_tokens_fn(trie),
    )
    rows = []
    for seq in out[:, 1:].tolist():  # drop the decoder start token
        end = seq.index(EOS_ID) + 1 if EOS_ID in seq else len(seq)
        rows.append(tuple(t for t in seq[:end] if t != PAD_ID))
    return [rows[i : i + num_beams] for i in range(0, len(rows), num_beams)]


class GenreModule(L.LightningModule):
    """GENRE: BART reads ``left [START_ENT] mention [END_ENT] right`` and is trained with
    teacher forcing to emit the entity's title followed by ``</s>`` (cross-entropy with label
    smoothing, as the paper's fairseq recipe). Decoding is :func:`generate_titles`."""

    def __init__(self, vocab_size: int = 8000, d_model: int = 128, layers: int = 2, heads: int = 4, ffn_dim: int = 512,
                 max_positions: int = 128, dropout: float = 0.1, label_smoothing: float = 0.1, lr: float = 1e-3,
                 weight_decay: float = 0.01, warmup_steps: int = 100, max_steps: int = 1000, pre_norm: bool = False,
                 checkpoint: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        # checkpoint: a pre-trained BART (the paper fine-tunes facebook/bart-large); its architecture replaces the
        # width, depth and dropout arguments
        self.model = load_seq2seq(checkpoint, vocab_size) if checkpoint else seq2seq_model(
            bart_config(vocab_size, d_model, layers, heads, ffn_dim, max_positions, dropout, pre_norm=pre_norm))

    def loss(self, batch: dict) -> Tensor:
        # labels [B, T] give the decoder inputs (BART's shift right behind </s>, -100 read as <pad>); the loss is ours
        # (label smoothing), so the model is not given the labels and computes no second loss
        from transformers.models.bart.modeling_bart import shift_tokens_right

        decoder_input_ids = shift_tokens_right(batch["labels"], PAD_ID, EOS_ID)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=decoder_input_ids)
        logits = out.logits  # [B, T, V]
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100,
                               label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        h = self.hparams
        return warmup_cosine_adamw(self.named_parameters(), h.lr, h.weight_decay, h.warmup_steps, h.max_steps)


# --------------------------------------------------------------------------------------
# Baseline: a dual encoder with in-batch negatives
# --------------------------------------------------------------------------------------
def in_batch_loss(q: Tensor, e: Tensor, entity: Tensor) -> Tensor:
    """−log softmax of the gold title's dot product against the batch's titles. q, e [B, D];
    entity [B] KB ids: a title repeated in the batch is not a negative of its own mentions."""
    scores = q @ e.T  # [B, B]
    same = entity[:, None] == entity[None, :]
    scores = scores.masked_fill(same & ~torch.eye(len(entity), dtype=torch.bool, device=q.device), float("-inf"))
    return F.cross_entropy(scores, torch.arange(len(entity), device=q.device))


class DualEncoderModule(L.LightningModule):
    """Two BART encoders (mention-in-context, title) over one shared token embedding (as
    GENRE's encoder and decoder share theirs), scored by dot product: about GENRE's parameter
    count (a title encoder in place of the decoder). A title is the mean of its hidden states;
    a mention (``pool="mention"``) the mean over its marked span ``[START_ENT] … [END_ENT]``,
    whose states have read the context through self-attention (the span pooling of
    entity-linking bi-encoders), or (``pool="mean"``) over the whole input."""

    def __init__(self, vocab_size: int = 8000, d_model: int = 128, layers: int = 2, heads: int = 4, ffn_dim: int = 512,
                 max_positions: int = 128, dropout: float = 0.1, lr: float = 1e-3, weight_decay: float = 0.01,
                 warmup_steps: int = 100, max_steps: int = 1000, pre_norm: bool = False, pool: str = "mention",
                 checkpoint: str | None = None, span_ids: tuple[int, int] = (START_ENT_ID, END_ENT_ID)):
        super().__init__()
        if pool not in ("mention", "mean"):
            raise ValueError(f"pool must be 'mention' or 'mean'; got {pool!r}")
        self.save_hyperparameters()
        if checkpoint:  # both towers from the pre-trained BART's encoder (GENRE's own starting point: equal pre-training)
            encoder = load_seq2seq(checkpoint, vocab_size).get_encoder()
            self.shared = encoder.embed_tokens
            self.mention_encoder, self.title_encoder = encoder, copy.deepcopy(encoder)
        else:
            # BART's own init_std: mean-pooled dot products trained with it (acc@1 0.25 after 400 steps at d=64) but
            # not with GENRE's width-scaled one (0.04): larger initial scores saturate the in-batch softmax
            cfg = bart_config(vocab_size, d_model, layers, heads, ffn_dim, max_positions, dropout, init_std=0.02,
                              pre_norm=pre_norm)
            self.shared = shared_embedding(vocab_size, d_model, cfg.init_std)
            self.mention_encoder, self.title_encoder = bart_encoder(cfg), bart_encoder(cfg)
        self.mention_encoder.embed_tokens = self.title_encoder.embed_tokens = self.shared

    @staticmethod
    def _pool(encoder, ids: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        h = encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, S, D]
        m = (mask if weight is None else weight).unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1)

    def encode_mentions(self, ids: Tensor, mask: Tensor) -> Tensor:
        span = mention_span(ids, mask, *self.hparams.span_ids) if self.hparams.pool == "mention" else None
        return self._pool(self.mention_encoder, ids, mask, span)

    def encode_titles(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self._pool(self.title_encoder, ids, mask)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        q = self.encode_mentions(batch["input_ids"], batch["attention_mask"])
        e = self.encode_titles(batch["title_ids"], batch["title_mask"])
        loss = in_batch_loss(q, e, batch["entity"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        h = self.hparams
        return warmup_cosine_adamw(self.named_parameters(), h.lr, h.weight_decay, h.warmup_steps, h.max_steps)


def shared_embedding(vocab_size: int, d_model: int, init_std: float):
    """BART's scaled token embedding (x sqrt(D)), initialised as BART does (N(0, init_std), padding row zero)."""
    from transformers.models.bart.modeling_bart import BartScaledWordEmbedding

    emb = BartScaledWordEmbedding(vocab_size, d_model, PAD_ID, embed_scale=math.sqrt(d_model))
    with torch.no_grad():
        emb.weight.normal_(0.0, init_std)
        emb.weight[PAD_ID].zero_()
    return emb


def bart_encoder(config):
    """A BART (post-LN) or mBART (pre-LN) encoder stack for ``config``."""
    from transformers import MBartConfig
    from transformers.models.bart.modeling_bart import BartEncoder
    from transformers.models.mbart.modeling_mbart import MBartEncoder

    return (MBartEncoder if isinstance(config, MBartConfig) else BartEncoder)(config)


def mention_span(ids: Tensor, mask: Tensor, start_id: int = START_ENT_ID, end_id: int = END_ENT_ID) -> Tensor:
    """[B, S] bool: the positions from ``[START_ENT]`` to ``[END_ENT]`` inclusive (the whole
    input where a row has no marker)."""
    start, end = (ids == start_id).long(), (ids == end_id).long()
    inside = (start.cumsum(1) - end.cumsum(1) + end) > 0
    has = start.any(1, keepdim=True)
    return torch.where(has, inside, torch.ones_like(inside)) & mask.bool()


def pad_batch(seqs: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    width = max(map(len, seqs))
    ids = torch.tensor([list(s) + [PAD_ID] * (width - len(s)) for s in seqs], dtype=torch.long)
    return ids, (ids != PAD_ID).long()


@torch.inference_mode()
def title_index(model: DualEncoderModule, title_ids: Sequence[Sequence[int]], batch_size: int = 256):
    """A faiss inner-product index over every KB title's embedding (exact search)."""
    import faiss

    model.eval()
    index = None
    for i in range(0, len(title_ids), batch_size):
        vecs = model.encode_titles(*pad_batch(title_ids[i : i + batch_size])).float().numpy()
        if index is None:
            index = faiss.IndexFlatIP(vecs.shape[1])
        index.add(np.ascontiguousarray(vecs))
    return index


def faiss_index_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).nbytes)


# --------------------------------------------------------------------------------------
# Baseline: BM25 over the titles
# --------------------------------------------------------------------------------------
def bm25_index(titles: Sequence[str]):
    """A bm25s index of the KB titles (English stop words removed)."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(titles), stopwords="en", show_progress=False), show_progress=False)
    return retriever


def bm25_search(retriever, queries: Sequence[str], k: int) -> np.ndarray:
    """[B, k] KB indices, best first. A query with no indexed word (only stop words, like "The Of", or words no title
    has) scores every title 0, and bm25s would return arbitrary titles: it gets no answer instead (-1)."""
    import bm25s

    tokens = bm25s.tokenize(list(queries), stopwords="en", show_progress=False)
    words = {i: w for w, i in tokens.vocab.items()}
    known = np.array([any(words[i] and words[i] in retriever.vocab_dict for i in ids) for ids in tokens.ids], dtype=bool)
    docs, _ = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
    docs = np.asarray(docs).copy()
    docs[~known] = -1
    return docs


def bm25_index_bytes(retriever) -> int:
    """Bytes of the sparse score matrix and the vocabulary."""
    scores = retriever.scores
    arrays = sum(v.nbytes for v in scores.values() if hasattr(v, "nbytes"))
    vocab = sum(len(w.encode()) + 8 for w in retriever.vocab_dict)
    return int(arrays + vocab)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
