"""An affordable, unsupervised stand-in for ANCE's pre-trained encoder (CPU scale).

The paper starts from RoBERTa-base (pre-trained on a large corpus) warmed up on BM25
negatives; at CPU scale a BERT trained from scratch on ~900 (or ~4,600) inverse-cloze pairs memorises
them and does not transfer to unseen articles (held-out MRR@10 at the level of a random
ranking). So every dense variant starts instead from the same corpus-statistics
initialisation, computed offline from the training passages only (never a held-out
article's passages, never a query or a relevance judgement):

- the pooling weight of each token is its inverse document frequency over those passages,
  ``log((N + 1) / (df + 1))`` (special tokens 0): the embedding is the IDF-weighted mean of
  the last hidden states, what makes a bag of (random) token vectors a random projection
  of a TF-IDF vector;
- the position and token-type embeddings are zeroed (still trained), so that at step 0 a
  token's hidden state is not drowned by its position's random vector.

The word embeddings and the transformer stay at their random (seeded) initialisation. With
this the untrained encoder already ranks well above a random ranking, and the verdict's
floor (the untrained encoder) is this initialisation: training must improve on it.
(At quick, fine-tuning from it has not been seen to: see the spec's comments.)
Word vectors from co-occurrence (PPMI-SVD, 64 dimensions) were tried as the token
embeddings and ranked worse than random vectors (they blur exactly the rare-word identity
that the inverse cloze task rewards).
"""

from __future__ import annotations

import torch

NUM_SPECIAL = 5  # [PAD] [UNK] [CLS] [SEP] [MASK]: ids 0..4 (datamodules.text.SPECIAL_TOKENS)


def token_idf(tokens: torch.Tensor, vocab_size: int, num_special: int = NUM_SPECIAL) -> torch.Tensor:
    """[N, L] token ids of N documents → [V] inverse document frequency
    ``log((N + 1) / (df + 1))``; the first ``num_special`` ids (padding, [CLS], ...) get 0."""
    if tokens.dim() != 2 or len(tokens) == 0:
        raise ValueError(f"tokens must be a non-empty [N, L] tensor; got shape {tuple(tokens.shape)}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size:
        raise ValueError(f"token ids must be in [0, {vocab_size}); got [{int(tokens.min())}, {int(tokens.max())}]")
    present = torch.zeros(len(tokens), vocab_size, dtype=torch.bool)
    present.scatter_(1, tokens.long(), True)
    df = present.sum(0).double()
    idf = torch.log((len(tokens) + 1) / (df + 1)).float()
    idf[:num_special] = 0.0
    return idf


@torch.no_grad()
def init_from_corpus(encoder: torch.nn.Module, tokens: torch.Tensor, num_special: int = NUM_SPECIAL) -> torch.Tensor:
    """Initialise a :class:`~lit_modules.ance.model.DualEncoder` from the passages ``tokens``
    [N, L] (the training articles' only): IDF pooling weights, zero position and token-type
    embeddings. Deterministic given the encoder; returns the IDF [V]."""
    idf = token_idf(tokens, encoder.pool_weight.num_embeddings, num_special)
    encoder.pool_weight.weight.copy_(idf.unsqueeze(1))
    emb = encoder.bert.embeddings
    emb.position_embeddings.weight.zero_()
    emb.token_type_embeddings.weight.zero_()
    return idf
