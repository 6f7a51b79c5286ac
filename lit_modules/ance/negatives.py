"""ANCE's math: the contrastive loss, where negatives come from, and the searches behind them.

Shapes: B queries in a batch, N negatives per query, D embedding size, Q queries, P passages,
K retrieved candidates per query.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

ANCE_DEPTH = 200  # negatives are drawn from the top-200 ANN passages (official code, run_ann_data_gen.py: topk_training)


# --------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------
def contrastive_loss(q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of −log softmax([q·pos, q·neg_1, …, q·neg_N])[0] (paper Eq. 2 with
    the negative log likelihood loss, as the official code trains it).

    q, pos: [B, D]; neg: [B, N, D]; ``neg_mask`` [B, N] bool, False where a negative does not
    count (an in-batch column holding the row's own positive) → a scalar.
    """
    if q.dim() != 2 or pos.shape != q.shape:
        raise ValueError(f"q and pos must both be [B, D]; got {tuple(q.shape)} and {tuple(pos.shape)}")
    if neg.dim() != 3 or neg.shape[0] != q.shape[0] or neg.shape[2] != q.shape[1]:
        raise ValueError(f"neg must be [B, N, D] = [{q.shape[0]}, N, {q.shape[1]}]; got {tuple(neg.shape)}")
    s_pos = (q * pos).sum(-1, keepdim=True)  # [B, 1]
    s_neg = torch.einsum("bd,bnd->bn", q, neg)  # [B, N]
    if neg_mask is not None:
        if neg_mask.shape != s_neg.shape:
            raise ValueError(f"neg_mask must be [B, N] = {tuple(s_neg.shape)}; got {tuple(neg_mask.shape)}")
        s_neg = s_neg.masked_fill(~neg_mask.to(s_neg.device), float("-inf"))
    logits = torch.cat([s_pos, s_neg], dim=1)  # [B, 1 + N], the positive at position 0
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def in_batch_negatives(pos: torch.Tensor) -> torch.Tensor:
    """The other queries' positives as negatives: [B, D] → [B, B−1, D] (row b drops pos[b])."""
    B = pos.shape[0]
    if B < 2:
        raise ValueError(f"in-batch negatives need a batch of at least 2; got {B}")
    keep = ~torch.eye(B, dtype=torch.bool, device=pos.device)  # [B, B]
    return pos.unsqueeze(0).expand(B, B, -1)[keep].view(B, B - 1, -1)


def in_batch_columns(positive_ids: torch.Tensor, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's "Rand Neg" (Sec. 5: negatives sampled at random within the batch): for each
    row, ``n`` other columns of the batch drawn uniformly without replacement, never a column
    whose positive is the row's own (the diagonal, and any other query of the same passage:
    a false negative). ``positive_ids`` [B] corpus ids → (columns [B, n], valid [B, n]); a
    row with fewer than ``n`` such columns gets its other columns marked invalid (masked out
    of the loss)."""
    B = len(positive_ids)
    if B < 2 or n < 1:
        raise ValueError(f"in-batch negatives need a batch of at least 2 and n >= 1; got B={B}, n={n}")
    n = min(n, B - 1)
    allowed = positive_ids[:, None] != positive_ids[None, :]  # [B, B]: the diagonal and every same-passage column out
    keys = torch.rand((B, B), generator=generator)
    keys[~allowed] = -1.0
    top = keys.topk(n, dim=1)
    return top.indices, top.values >= 0


def depth_from_fraction(fraction: float, num_passages: int, minimum: int) -> int:
    """A negative depth stated as a fraction of the corpus (the paper: its top 200 of 8.8M
    MS MARCO passages, 2.3e-5), at least ``minimum`` (enough for a pool of negatives) and at
    most the corpus."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a depth fraction must be in (0, 1]; got {fraction}")
    return max(1, min(num_passages, max(minimum, round(fraction * num_passages))))


# --------------------------------------------------------------------------------------
# Search: faiss (dense) and bm25s (sparse)
# --------------------------------------------------------------------------------------
def _f32(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())


def build_index(passage_emb: torch.Tensor):
    """An exact inner-product faiss index (``IndexFlatIP``, as the official code) of [P, D]."""
    import faiss

    if passage_emb.dim() != 2 or len(passage_emb) == 0:
        raise ValueError(f"passage_emb must be a non-empty [P, D]; got {tuple(passage_emb.shape)}")
    index = faiss.IndexFlatIP(passage_emb.shape[1])
    index.add(_f32(passage_emb))
    return index


def search(index, query_emb: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` passages by dot product: (ids [Q, k] int64, scores [Q, k]), best first."""
    if query_emb.dim() != 2 or query_emb.shape[1] != index.d:
        raise ValueError(f"query_emb must be [Q, {index.d}]; got {tuple(query_emb.shape)}")
    k = min(k, index.ntotal)
    scores, ids = index.search(_f32(query_emb), k)
    return torch.from_numpy(ids).long(), torch.from_numpy(scores)


def bm25_index(passages: Sequence[str]):
    """A bm25s index (Lucene's BM25, k1=1.5, b=0.75; English stop words removed)."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(passages), stopwords="en", show_progress=False), show_progress=False)
    return retriever


def bm25_search(retriever, queries: Sequence[str], k: int, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` passages by BM25 score: (ids [Q, k], scores [Q, k]); a query with no indexed
    word gets zero scores over arbitrary passages.

    The scores are bm25s's (the sum, over the query's tokens with repeats, of each token's row
    of the index's score matrix), computed for a chunk of queries at once as a sparse product
    with that matrix and ranked with ``torch.topk``: bm25s's own ``retrieve`` ranks one query at
    a time (~3 ms per query over 21k passages, a minute for the 21k training queries whose
    BM25 negatives a run draws)."""
    import bm25s
    import scipy.sparse as sp

    vocab = retriever.vocab_dict
    tokens = [[vocab[t] for t in q if t in vocab] for q in bm25s.tokenize(list(queries), stopwords="en", return_ids=False,
                                                                         show_progress=False)]
    sc = retriever.scores
    num_docs = int(sc["num_docs"])
    k = min(k, num_docs)
    matrix = sp.csr_matrix((sc["data"], sc["indices"], sc["indptr"]), shape=(len(sc["indptr"]) - 1, num_docs))  # [V, P]
    rows = np.repeat(np.arange(len(tokens)), [len(t) for t in tokens])
    cols = np.fromiter((t for q in tokens for t in q), dtype=np.int64, count=len(rows))
    counts = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(tokens), matrix.shape[0]))  # repeats summed
    ids = np.zeros((len(tokens), k), dtype=np.int64)
    scores = np.zeros((len(tokens), k), dtype=np.float32)
    for start in range(0, len(tokens), chunk):
        dense = torch.from_numpy((counts[start:start + chunk] @ matrix).toarray().astype(np.float32))  # [chunk, P]
        top = dense.topk(k, dim=1)
        ids[start:start + chunk], scores[start:start + chunk] = top.indices.numpy(), top.values.numpy()
    for i, t in enumerate(tokens):
        if not t:
            ids[i], scores[i] = np.arange(k), 0.0
    return torch.from_numpy(ids), torch.from_numpy(scores)


# --------------------------------------------------------------------------------------
# Negative samplers
# --------------------------------------------------------------------------------------
def sample_candidates(candidates: torch.Tensor, positive_ids: torch.Tensor, n: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` ids per row drawn uniformly without replacement from ``candidates`` [Q, K],
    never the row's positive (``positive_ids`` [Q]; −1 entries, faiss's "none", are skipped)."""
    if candidates.dim() != 2 or positive_ids.shape != (candidates.shape[0],):
        raise ValueError(f"candidates must be [Q, K] and positive_ids [Q]; got {tuple(candidates.shape)} and {tuple(positive_ids.shape)}")
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    allowed = (candidates != positive_ids[:, None]) & (candidates >= 0)  # [Q, K]
    left = allowed.sum(1)
    if len(left) and int(left.min()) < n:
        q = int(left.argmin())
        raise ValueError(f"n={n} negatives requested, but query {q} has only {int(left[q])} candidates left "
                         f"after removing its positive (depth {candidates.shape[1]})")
    keys = torch.rand(candidates.shape, generator=generator)  # uniform keys; the n largest win
    keys[~allowed] = -1.0
    return candidates.gather(1, keys.topk(n, dim=1).indices)  # [Q, n]


def hard_negatives(query_emb: torch.Tensor, passage_emb: torch.Tensor, positive_ids: torch.Tensor, n: int,
                   depth: int = ANCE_DEPTH, generator: torch.Generator | None = None) -> torch.Tensor:
    """ANCE's negatives: ``n`` passage ids per query drawn uniformly from its top-``depth``
    passages by dot product (searched with faiss), never its positive.

    query_emb [Q, D], passage_emb [P, D], positive_ids [Q] → [Q, n]. ``depth`` above P is
    clamped to P; ``n`` above what is left of a query's top-``depth`` after removing its
    positive is a ``ValueError``.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1; got {depth}")
    positive_ids = torch.as_tensor(positive_ids, dtype=torch.long)
    if positive_ids.shape != (query_emb.shape[0],):
        raise ValueError(f"positive_ids must be [Q] = [{query_emb.shape[0]}]; got {tuple(positive_ids.shape)}")
    depth = min(depth, passage_emb.shape[0])
    if n > depth:
        raise ValueError(f"n={n} negatives requested from the top {depth} passages (depth clamped to P={passage_emb.shape[0]})")
    ids, _ = search(build_index(passage_emb), query_emb, depth)  # [Q, depth]
    return sample_candidates(ids, positive_ids, n, generator)


def random_negatives(num_passages: int, positive_ids: torch.Tensor, n: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` passage ids per query uniform over the corpus without its positive (drawn with
    replacement: a duplicate is as rare as for the paper's random negatives). [Q] → [Q, n]."""
    if num_passages < 2:
        raise ValueError(f"random negatives need at least 2 passages; got {num_passages}")
    r = torch.randint(0, num_passages - 1, (len(positive_ids), n), generator=generator)  # [Q, n] over P−1 slots
    return r + (r >= positive_ids[:, None]).long()  # skip the positive's slot


class RandomNegatives:
    """A negative source: fresh uniform random negatives every step, over the whole corpus or,
    with ``passage_ids``, over those passages only (e.g. the training articles'), never the
    query's positive."""

    def __init__(self, num_passages: int, positive_ids: torch.Tensor, seed: int = 0,
                 passage_ids: torch.Tensor | None = None) -> None:
        self.num_passages, self.positive_ids = num_passages, positive_ids
        self.passage_ids = None if passage_ids is None else torch.as_tensor(passage_ids, dtype=torch.long)
        if self.passage_ids is not None and len(self.passage_ids) < 2:
            raise ValueError(f"random negatives need at least 2 candidate passages; got {len(self.passage_ids)}")
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, query_idx: torch.Tensor, n: int) -> torch.Tensor:
        positive = self.positive_ids[query_idx]
        if self.passage_ids is None:
            return random_negatives(self.num_passages, positive, n, self.generator)
        c = self.passage_ids
        out = c[torch.randint(0, len(c), (len(positive), n), generator=self.generator)]  # [B, n]
        bad = out == positive[:, None]
        while bad.any():  # redraw the positive (uniform over the other candidates)
            out[bad] = c[torch.randint(0, len(c), (int(bad.sum()),), generator=self.generator)]
            bad = out == positive[:, None]
        return out


class TableNegatives:
    """A negative source over a fixed pool per training query (BM25's, or one ANN refresh's):
    ``table`` [Q, pool]; each step draws ``n`` of a query's pool without replacement."""

    def __init__(self, table: torch.Tensor, seed: int = 0) -> None:
        if table.dim() != 2:
            raise ValueError(f"a negative table is [Q, pool]; got {tuple(table.shape)}")
        self.table = table
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, query_idx: torch.Tensor, n: int) -> torch.Tensor:
        rows = self.table[query_idx]  # [B, pool]
        if n > rows.shape[1]:
            raise ValueError(f"n={n} negatives requested from a pool of {rows.shape[1]} per query")
        pick = torch.rand(rows.shape, generator=self.generator).topk(n, dim=1).indices
        return rows.gather(1, pick)  # [B, n]
