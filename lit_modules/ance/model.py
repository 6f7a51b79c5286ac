"""The dual encoder, the LightningModule that trains it, and retrieval evaluation.

Shapes: B batch, L tokens, D embedding size, N negatives per query, P passages, Q queries.
"""

from __future__ import annotations

import time
from typing import Literal, Sequence

import lightning as L
import torch
import torch.nn as nn

from lit_modules.ance.negatives import build_index, contrastive_loss, in_batch_columns, search

NegativeKind = Literal["ann", "random", "inbatch", "bm25"]
NEGATIVE_KINDS = ("ann", "random", "inbatch", "bm25")


class DualEncoder(nn.Module):
    """One BERT-style encoder shared by queries and passages; an embedding is the weighted mean
    of the last hidden states over non-pad tokens, sum_t w[id_t] h_t / n_tokens, with a learned
    per-token weight ``pool_weight`` (1 at construction: the plain mean;
    :func:`~lit_modules.ance.pretrain.init_from_corpus` sets it to the tokens' IDF). Built from a ``transformers.BertConfig`` and
    trained from scratch, or loaded from a named checkpoint (``checkpoint``: a Hugging Face
    name or local path; offline, a name fails at once, a local path works).

    ``span_ids`` (start, end): the ids of the markers around a query's mention (wikilinks'
    ``[START_ENT]`` / ``[END_ENT]``); a row that holds the start marker is pooled over the
    marked span only, markers included (the span pooling of entity-linking bi-encoders, whose
    states have read the context through self-attention), a row without one (a passage) over
    all its tokens."""

    def __init__(self, vocab_size: int = 4000, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2,
                 intermediate_size: int = 256, max_len: int = 160, pad_id: int = 0, checkpoint: str | None = None,
                 normalize: bool = False, span_ids: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.pad_id, self.normalize = pad_id, normalize
        self.span_ids = tuple(span_ids) if span_ids is not None else None
        if checkpoint:
            from transformers import AutoModel

            try:
                self.bert = AutoModel.from_pretrained(checkpoint)
            except OSError as exc:
                raise FileNotFoundError(f"cannot load encoder checkpoint {checkpoint!r} (offline? pass a local path): "
                                        f"{str(exc).splitlines()[0]}") from None
            # from_pretrained returns the model in eval mode, and Lightning keeps a module's mode at fit start:
            # without this the checkpoint would be fine-tuned with its dropout off
            self.bert.train()
        else:
            from transformers import BertConfig, BertModel

            config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                                num_attention_heads=num_heads, intermediate_size=intermediate_size,
                                max_position_embeddings=max_len, pad_token_id=pad_id)
            self.bert = BertModel(config, add_pooling_layer=False)
        self.pool_weight = nn.Embedding(self.bert.config.vocab_size, 1)
        nn.init.ones_(self.pool_weight.weight)
        if self.span_ids is not None and max(self.span_ids) >= self.bert.config.vocab_size:
            raise ValueError(f"span marker ids {self.span_ids} outside the vocabulary of {self.bert.config.vocab_size}")

    @property
    def dim(self) -> int:
        return self.bert.config.hidden_size

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, L] token ids (right-padded with ``pad_id``) → [B, D] embeddings."""
        mask = ids != self.pad_id  # [B, L]
        length = int(mask.sum(1).max()) if len(ids) else 1
        ids, mask = ids[:, :length], mask[:, :length]  # drop all-pad columns
        hidden = self.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # [B, L, D]
        if self.span_ids is not None:
            mask = span_mask(ids, mask, *self.span_ids)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        w = self.pool_weight(ids).to(hidden.dtype) * m  # [B, L, 1]
        emb = (hidden * w).sum(1) / m.sum(1).clamp_min(1.0)
        return torch.nn.functional.normalize(emb, dim=-1) if self.normalize else emb


def span_mask(ids: torch.Tensor, mask: torch.Tensor, start_id: int, end_id: int) -> torch.Tensor:
    """[B, L] bool: the positions from the start marker to the end marker inclusive, for rows
    that hold a start marker (to the last token where the end marker was cut off); ``mask``
    itself for rows without one."""
    start, end = (ids == start_id).long(), (ids == end_id).long()
    inside = (start.cumsum(1) - end.cumsum(1) + end) > 0
    return torch.where(start.any(1, keepdim=True), inside, torch.ones_like(inside)) & mask


@torch.inference_mode()
def encode(encoder: nn.Module, tokens: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """[N, L] token ids → [N, D] embeddings (eval mode, no gradient), on the encoder's device."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    out = torch.cat([encoder(chunk.to(device)).float().cpu() for chunk in tokens.split(batch_size)])
    encoder.train(was_training)
    return out


def retrieval_metrics(top_ids: torch.Tensor, top_scores: torch.Tensor, relevant: Sequence[Sequence[int]],
                      ks: Sequence[int] = (1, 10, 100)) -> dict[str, float]:
    """MRR@10, Recall@k and nDCG@10 (torchmetrics' retrieval metrics, binary relevance) of ranked
    lists ``top_ids`` [Q, K] with ``top_scores`` [Q, K]. Relevant passages outside a query's top
    K are appended below every retrieved one, so the metrics are exact for every cut-off ≤ K."""
    from torchmetrics.retrieval import RetrievalMRR, RetrievalNormalizedDCG, RetrievalRecall

    K = top_ids.shape[1]
    if max(ks) > K or K < 10:
        raise ValueError(f"need at least max(10, max(ks)) = {max(10, *ks)} candidates per query; got {K}")
    if len(relevant) != len(top_ids):
        raise ValueError(f"relevant lists ({len(relevant)}) and ranked lists ({len(top_ids)}) differ in number")
    preds, target, indexes = [], [], []
    for q, rel in enumerate(relevant):
        rel_set = set(int(r) for r in rel)
        ids = top_ids[q].tolist()
        missing = sorted(rel_set - set(ids))
        # rank = position in the list: scores K, K-1, ... (ties in raw scores keep the search order)
        preds.append(torch.arange(K + len(missing), 0, -1, dtype=torch.float))
        target.append(torch.tensor([i in rel_set for i in ids] + [True] * len(missing)))
        indexes.append(torch.full((K + len(missing),), q, dtype=torch.long))
    preds, target, indexes = torch.cat(preds), torch.cat(target), torch.cat(indexes)
    out = {"mrr_at_10": RetrievalMRR(top_k=10), "ndcg_at_10": RetrievalNormalizedDCG(top_k=10)}
    out.update({f"recall_at_k@k={k}": RetrievalRecall(top_k=k) for k in ks})
    return {name: float(metric(preds, target, indexes=indexes)) for name, metric in out.items()}


def grouped_retrieval_metrics(top_ids: torch.Tensor, top_scores: torch.Tensor, relevant: Sequence[Sequence[int]],
                              groups: dict[str, Sequence[bool]] | None = None) -> dict[str, float]:
    """:func:`retrieval_metrics` over every query, plus ``<metric>@subset=<name>`` over each
    named subset of them (``groups``: a flag per query; an empty subset adds nothing)."""
    out = retrieval_metrics(top_ids, top_scores, relevant)
    for name, flags in (groups or {}).items():
        rows = [i for i, f in enumerate(flags) if f]
        if rows:
            sub = retrieval_metrics(top_ids[rows], top_scores[rows], [relevant[i] for i in rows])
            out.update({f"{metric}@subset={name}": v for metric, v in sub.items()})
    return out


def evaluate(encoder: nn.Module, passage_tokens: torch.Tensor, query_tokens: torch.Tensor,
             relevant: Sequence[Sequence[int]], k: int = 100, batch_size: int = 256,
             groups: dict[str, Sequence[bool]] | None = None, passage_emb: torch.Tensor | None = None) -> dict[str, float]:
    """Encode the corpus, index it with faiss, search the queries' top ``k``; the retrieval
    metrics plus ``encode_throughput`` (passages/s) and ``search_throughput`` (queries/s).
    ``groups``: named subsets of the queries (a flag per query), whose metrics are added as
    ``<metric>@subset=<name>``. ``passage_emb``: the corpus already encoded (no throughput then)."""
    start = time.perf_counter()
    p_emb = encode(encoder, passage_tokens, batch_size) if passage_emb is None else passage_emb
    encode_s = time.perf_counter() - start
    q_emb = encode(encoder, query_tokens, batch_size)
    start = time.perf_counter()
    ids, scores = search(build_index(p_emb), q_emb, k)
    search_s = time.perf_counter() - start
    out = grouped_retrieval_metrics(ids, scores, relevant, groups)
    if passage_emb is None:
        out.update(encode_throughput=len(p_emb) / encode_s)
    out.update(search_throughput=len(q_emb) / max(search_s, 1e-9))
    return out


class DenseRetriever(L.LightningModule):
    """Trains a :class:`DualEncoder` with ``contrastive_loss`` on one kind of negatives.

    ``negatives``: ``"inbatch"`` uses the other queries' positives; the others draw
    ``num_negatives`` passages per query from ``self.negative_source`` (an object with
    ``sample(query_idx [B], n) -> [B, n]``: :class:`~lit_modules.ance.negatives.RandomNegatives`,
    :class:`~lit_modules.ance.negatives.TableNegatives` of BM25's top passages, or the
    :class:`~lit_modules.ance.refresh.AnnRefresh` callback). A batch is a tensor of training
    query indices; :meth:`attach` gives the module the token tables they index.
    """

    def __init__(self, negatives: NegativeKind = "ann", num_negatives: int = 4, vocab_size: int = 4000,
                 hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2, intermediate_size: int = 256,
                 max_len: int = 160, pad_id: int = 0, checkpoint: str | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.01, warmup_steps: int = 10, max_steps: int = 200,
                 pool_lr: float | None = None, emb_lr: float | None = None, temperature: float | None = None,
                 span_ids: tuple[int, int] | None = None) -> None:
        super().__init__()
        if negatives not in NEGATIVE_KINDS:
            raise ValueError(f"unknown negatives {negatives!r}; known: {', '.join(NEGATIVE_KINDS)}")
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1; got {num_negatives}")
        self.save_hyperparameters()
        if temperature is not None and temperature <= 0:
            raise ValueError(f"temperature must be > 0 or None; got {temperature}")
        self.encoder = DualEncoder(vocab_size, hidden_size, num_layers, num_heads, intermediate_size, max_len, pad_id, checkpoint,
                                   normalize=temperature is not None, span_ids=span_ids)
        self.negative_source = None
        # (step, loss, global gradient norm before clipping) of every training step: the paper's Sec. 3 quantities
        self.trace: list[tuple[int, float, float]] = []
        self._loss: float | None = None
        self.passage_tokens = self.query_tokens = self.positive_ids = self.positive_tokens = None

    def attach(self, passage_tokens: torch.Tensor, query_tokens: torch.Tensor, positive_ids: torch.Tensor,
               negative_source=None, positive_tokens: torch.Tensor | None = None) -> "DenseRetriever":
        """The corpus [P, Lp], the training queries [Q, Lq], their positives [Q] (corpus ids,
        never drawn as their negatives), where negatives come from (not needed for in-batch
        negatives), and optionally each query's positive text [Q, Lp] when it is not its
        corpus passage (ICT with every sentence a query: the passage minus that sentence)."""
        if self.hparams.negatives != "inbatch" and negative_source is None:
            raise ValueError(f"negatives={self.hparams.negatives!r} needs a negative source; got None")
        if positive_tokens is not None and len(positive_tokens) != len(query_tokens):
            raise ValueError(f"positive_tokens has {len(positive_tokens)} rows for {len(query_tokens)} queries")
        self.passage_tokens, self.query_tokens, self.positive_ids = passage_tokens, query_tokens, positive_ids
        self.positive_tokens = positive_tokens
        self.negative_source = negative_source
        return self

    def positive_text(self, query_idx: torch.Tensor) -> torch.Tensor:
        """[B, Lp] token ids of the queries' positives."""
        if self.positive_tokens is not None:
            return self.positive_tokens[query_idx]
        return self.passage_tokens[self.positive_ids[query_idx]]

    def embed_batch(self, query_idx: torch.Tensor, negative_ids: torch.Tensor | None, generator: torch.Generator | None = None):
        """(q [B, D], pos [B, D], neg [B, N, D], mask [B, N] or None): ``contrastive_loss``'s
        arguments. ``negative_ids`` [B, N] corpus ids, or None: in-batch negatives, ``num_negatives``
        of the other queries' positives per row (:func:`in_batch_columns`: a column whose positive
        is the row's own passage never counts), so every source trains on as many negatives."""
        q = self.encoder(self.query_tokens[query_idx].to(self.device))
        if self.hparams.get("temperature") is not None:  # unit-norm embeddings: the score is cosine / temperature
            q = q / self.hparams.temperature
        pos_tokens = self.positive_text(query_idx)  # [B, Lp]
        if negative_ids is None:
            pos = self.encoder(pos_tokens.to(self.device))
            cols, valid = in_batch_columns(self.positive_ids[query_idx.cpu()], self.hparams.num_negatives, generator)
            return q, pos, pos[cols.to(pos.device)], valid
        B, N = negative_ids.shape
        passages = self.encoder(torch.cat([pos_tokens, self.passage_tokens[negative_ids.reshape(-1)]]).to(self.device))
        return q, passages[:B], passages[B:].view(B, N, -1), None

    def negatives_for(self, query_idx: torch.Tensor) -> torch.Tensor | None:
        if self.hparams.negatives == "inbatch":
            return None
        return self.negative_source.sample(query_idx.cpu(), self.hparams.num_negatives)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self.passage_tokens is None:
            raise RuntimeError("DenseRetriever.attach(...) must be called before training")
        loss = contrastive_loss(*self.embed_batch(batch, self.negatives_for(batch)))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self._loss = float(loss.detach())
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Record the step's loss and global gradient norm (before Lightning clips it)."""
        norms = [p.grad.detach().norm() for p in self.parameters() if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
        self.trace.append((self.global_step, self._loss if self._loss is not None else float("nan"), norm))

    def configure_optimizers(self):
        # AdamW with linear warm-up and decay, as the official code (its tiny lr is for a pretrained RoBERTa; from scratch needs more)
        from transformers import get_linear_schedule_with_warmup

        # ``pool_lr``: the pooling (term) weights in their own group, without weight decay; ``emb_lr``: the word
        # embeddings in theirs (0: frozen). None: like the rest.
        pool, words = self.encoder.pool_weight.weight, self.encoder.bert.get_input_embeddings().weight
        rest = [p for p in self.parameters() if p is not pool and p is not words]
        groups = [{"params": rest}]
        for params, lr, extra in ((pool, self.hparams.get("pool_lr"), {"weight_decay": 0.0}),
                                  (words, self.hparams.get("emb_lr"), {})):
            groups.append({"params": [params]} if lr is None else {"params": [params], "lr": lr, **extra})
        opt = torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = get_linear_schedule_with_warmup(opt, self.hparams.warmup_steps, max(self.hparams.max_steps, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
