"""ANCE: Approximate Nearest Neighbor Negative Contrastive Learning for Dense Text Retrieval
(Xiong et al., ICLR 2021, arXiv 2007.00808).

Reference checked against: the paper's Eq. 2-6 and Sec. 4 (negatives drawn from the top of
an ANN index built with a recent checkpoint; index refreshed asynchronously by an
"Inferencer" while the "Trainer" goes on; the model is warmed up on BM25 negatives), and
the official code github.com/microsoft/ANCE (``drivers/run_ann_data_gen.py``: negatives
drawn uniformly from the top-200 ANN passages, the positive excluded; faiss
``IndexFlatIP`` over dot-product embeddings; ``-log softmax`` over the positive and the
negatives' scores).

Reproduced: the dual encoder with a shared, BERT-style encoder and dot-product score,
the contrastive loss, ANN hard negatives with faiss, the asynchronous index refresh (a
background thread encodes the corpus with a snapshot and rebuilds the index while training
goes on with the newest finished one; the lag is measured) and its synchronous ablation,
and the baselines (BM25 with bm25s; random, in-batch and BM25 negatives).
Not reproduced: RoBERTa-base pretraining (the encoder is a small BERT trained from scratch,
mean-pooled rather than the first token, which trains far faster from scratch; at quick it
starts from an IDF-weighted pooling computed offline on the training articles, see
:mod:`.pretrain`), the
paper's multi-GPU Trainer/Inferencer split (here two threads of one process), and MS MARCO
scale (run ``--dataset msmarco`` with the ``full`` preset for that; not checked on a GPU).

Layout: :mod:`.negatives` (the math: loss, negative samplers, faiss search, BM25),
:mod:`.model` (encoder, LightningModule, evaluation), :mod:`.refresh` (the asynchronous
index refresh, a Lightning callback), :mod:`.pretrain` (the corpus-statistics initialisation
that stands in for a pre-trained encoder).
"""

from lit_modules.ance.model import DenseRetriever, DualEncoder, encode, evaluate, grouped_retrieval_metrics, retrieval_metrics
from lit_modules.ance.negatives import (
    RandomNegatives,
    TableNegatives,
    bm25_index,
    bm25_search,
    build_index,
    contrastive_loss,
    depth_from_fraction,
    hard_negatives,
    in_batch_columns,
    in_batch_negatives,
    random_negatives,
    sample_candidates,
    search,
)
from lit_modules.ance.pretrain import init_from_corpus, token_idf
from lit_modules.ance.refresh import AnnRefresh

__all__ = [
    "AnnRefresh", "DenseRetriever", "DualEncoder", "RandomNegatives", "TableNegatives", "bm25_index", "bm25_search",
    "build_index", "contrastive_loss", "depth_from_fraction", "encode", "evaluate", "grouped_retrieval_metrics",
    "hard_negatives", "in_batch_columns",
    "in_batch_negatives",
    "init_from_corpus", "random_negatives", "retrieval_metrics", "sample_candidates", "search", "token_idf",
]
