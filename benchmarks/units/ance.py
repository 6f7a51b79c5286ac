"""ANCE vs BM25 and random / in-batch / BM25 negatives (paper 7): what a unit runs.
The declaration is ``benchmarks/specs/ance.py``; the math ``lit_modules/ance/``; the data
``datamodules/retrieval.py``.

Every dense variant starts from the same initial encoder (seeded by the run's seed, then, with
``init="corpus"``, given IDF pooling weights from the training articles' passages: the stand-in
for a pre-trained encoder, :mod:`lit_modules.ance.pretrain`), trains
the same number of steps with the same batch size, optimizer and number of negatives per
query, and is evaluated on the held-out queries against the whole corpus; only where the
negatives come from differs. Every source draws from the same candidate passages
(``negatives_from="train"``: the training articles' passages; a held-out article's passage is
never trained on, not even as a negative). ``bm25`` ranks with bm25s and trains nothing.
"""

from __future__ import annotations

import math
import time

import lightning as L
import torch

from benchmarks.train import StepTimer, count_parameters, make_trainer
from benchmarks.unit import Measurement, UnitContext
from datamodules.retrieval import RetrievalDataModule
from lit_modules.ance import (
    AnnRefresh,
    DenseRetriever,
    RandomNegatives,
    TableNegatives,
    bm25_index,
    bm25_search,
    contrastive_loss,
    encode,
    evaluate,
    hard_negatives,
    init_from_corpus,
    random_negatives,
    retrieval_metrics,
    sample_candidates,
)

NEGATIVES = {"ance": "ann", "ance_sync": "ann", "random_neg": "random", "inbatch_neg": "inbatch", "bm25_neg": "bm25"}
QUALITY = ("mrr_at_10", "ndcg_at_10", "recall_at_k@k=1", "recall_at_k@k=10", "recall_at_k@k=100")
MODEL_KEYS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "checkpoint")


# ------------------------------------------------------------------------------ datasets
def retrieval(config: dict, data_dir: str | None, seed: int, name: str = "gensim_wiki") -> RetrievalDataModule:
    wiki = dict(passage_words=config["passage_words"], max_passages_per_article=config["max_passages_per_article"],
                min_query_words=config["min_query_words"], test_frac=config["test_frac"], split_seed=config["split_seed"],
                all_train_sentences=config["all_train_sentences"])
    return RetrievalDataModule(
        name=name, data_dir=data_dir, vocab_size=config["vocab_size"], query_max_len=config["query_max_len"],
        passage_max_len=config["passage_max_len"], batch_size=config["batch_size"], seed=seed,
        max_train_queries=config["max_train_queries"], max_test_queries=config["max_test_queries"],
        tokenizer_name=config["checkpoint"], **(wiki if name == "gensim_wiki" else {}),
    )


# ------------------------------------------------------------------------------ pieces
def full_params(config: dict, variant: str = "") -> int:
    """Parameters of the dense encoder for ``config``, built on the meta device. A named checkpoint is counted by its
    architecture (``transformers``' config for it, offline: bert-base-uncased is BertConfig's defaults)."""
    from transformers import BertConfig, BertModel

    if config["checkpoint"]:
        try:
            from transformers import AutoConfig

            bert_config = AutoConfig.from_pretrained(config["checkpoint"], local_files_only=True)
        except OSError:
            if config["checkpoint"] != "bert-base-uncased":
                raise
            bert_config = BertConfig()  # bert-base-uncased's architecture
    else:
        bert_config = BertConfig(vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
                                 num_hidden_layers=config["num_layers"], num_attention_heads=config["num_heads"],
                                 intermediate_size=config["intermediate_size"],
                                 max_position_embeddings=max(config["passage_max_len"], config["query_max_len"]))
    with torch.device("meta"):
        return count_parameters(BertModel(bert_config, add_pooling_layer=False))


def random_mrr_at_10(num_passages: int) -> float:
    """Expected MRR@10 of a uniformly random ranking with one relevant passage among P."""
    return sum(1 / r for r in range(1, min(10, num_passages) + 1)) / num_passages


def negative_passages(dm: RetrievalDataModule, source: str) -> torch.Tensor | None:
    """The corpus ids negatives may be drawn from: ``"train"``, the training articles'
    passages (:meth:`RetrievalData.train_passage_ids`: a held-out article's passage is
    never trained on, not even as a negative); ``"all"``: None, the whole corpus."""
    if source not in ("train", "all"):
        raise ValueError(f"negatives_from must be 'train' or 'all'; got {source!r}")
    return torch.as_tensor(dm.data.train_passage_ids(), dtype=torch.long) if source == "train" else None


def bm25_pool(dm: RetrievalDataModule, pool: int, depth: int, seed: int, passage_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Each training query's pool of BM25 negatives: ``pool`` of its top ``depth`` BM25
    passages (among ``passage_ids``; None: all), its positive excluded (the paper's BM25 Neg
    and ANCE's warm-up)."""
    data = dm.data
    texts = data.passages if passage_ids is None else [data.passages[i] for i in passage_ids.tolist()]
    depth = min(depth, len(texts))
    ids, _ = bm25_search(bm25_index(texts), data.train_queries, depth)
    ids = torch.as_tensor(ids, dtype=torch.long)
    if passage_ids is not None:
        ids = passage_ids[ids]
    return sample_candidates(ids, dm.train_positive, min(pool, depth - 1), torch.Generator().manual_seed(seed))


class RetrievalCurve(L.Callback):
    """MRR@10 on the held-out queries over the whole corpus every ``every`` steps (step 0:
    the untrained encoder) and after the last step."""

    def __init__(self, dm: RetrievalDataModule, every: int, k: int) -> None:
        self.dm, self.every, self.k = dm, every, k
        self.points: list[tuple[int, dict]] = []

    def measure(self, module: DenseRetriever, step: int) -> None:
        self.points.append((step, evaluate(module.encoder, self.dm.passage_tokens, self.dm.test_query_tokens,
                                           self.dm.data.test_relevant, self.k)))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self.measure(pl_module, trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        self.measure(pl_module, trainer.global_step)


def loss_and_grad(module: DenseRetriever, query_idx: torch.Tensor, negative_ids: torch.Tensor) -> tuple[float, float]:
    """Contrastive loss and the global gradient norm (over every parameter) of one batch."""
    module.zero_grad(set_to_none=True)
    loss = contrastive_loss(*module.embed_batch(query_idx, negative_ids))
    loss.backward()
    norm = torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in module.parameters() if p.grad is not None))
    module.zero_grad(set_to_none=True)
    return float(loss.detach()), float(norm)


def negative_informativeness(module: DenseRetriever, dm: RetrievalDataModule, cfg: dict, seed: int) -> list[Measurement]:
    """The paper's Sec. 3 argument, measured on the trained encoder: mean loss and gradient
    norm of training batches with ANN negatives (from a fresh index) vs random negatives."""
    gen = torch.Generator().manual_seed(seed + 1)
    allowed = negative_passages(dm, cfg["negatives_from"])
    p_emb = encode(module.encoder, dm.passage_tokens if allowed is None else dm.passage_tokens[allowed])
    Q, B, n = len(dm.train_positive), cfg["batch_size"], cfg["num_negatives"]
    batches = [torch.randperm(Q, generator=gen)[:B] for _ in range(cfg["grad_batches"])]
    where = {} if allowed is None else {int(c): i for i, c in enumerate(allowed.tolist())}  # corpus id -> row of p_emb
    module.train()
    stats = {"ann": [], "random": []}
    for q_idx in batches:
        q_emb = encode(module.encoder, dm.train_query_tokens[q_idx])
        pos = dm.train_positive[q_idx]
        if allowed is not None:  # positions in p_emb: the positive's, or -1 (not a candidate)
            pos = torch.tensor([where.get(int(p), -1) for p in pos])
        sources = {"ann": hard_negatives(q_emb, p_emb, pos, n, cfg["depth"], gen),
                   "random": random_negatives(len(p_emb), pos, n, gen)}
        if allowed is not None:
            sources = {k: allowed[v] for k, v in sources.items()}
        for name, neg in sources.items():
            stats[name].append(loss_and_grad(module, q_idx, neg))
    out = []
    for name, values in stats.items():
        out.append(Measurement(f"neg_loss@source={name}", sum(v[0] for v in values) / len(values)))
        out.append(Measurement(f"neg_grad_norm@source={name}", sum(v[1] for v in values) / len(values)))
    return out


# ------------------------------------------------------------------------------ the unit
def run(ctx: UnitContext) -> list[Measurement]:
    cfg = ctx.config
    if ctx.variant not in (*NEGATIVES, "bm25"):
        raise ValueError(f"unknown ance variant {ctx.variant!r}; known: bm25, {', '.join(NEGATIVES)}")
    dm = ctx.datamodule().prepare()
    data = dm.data
    out = [Measurement(f"data_count@{k}", v) for k, v in data.counts().items()]
    out.append(Measurement("trivial_mrr_at_10@ranking=random", random_mrr_at_10(len(data.passages))))
    if ctx.variant == "bm25":
        start = time.perf_counter()
        retriever = bm25_index(data.passages)
        index_s = time.perf_counter() - start
        start = time.perf_counter()
        ids, scores = bm25_search(retriever, data.test_queries, cfg["eval_k"])
        search_s = time.perf_counter() - start
        metrics = retrieval_metrics(ids, scores, data.test_relevant)
        out += [Measurement(m, metrics[m]) for m in QUALITY]
        out += [Measurement("encode_throughput", len(data.passages) / index_s),
                Measurement("search_throughput", len(data.test_queries) / search_s)]
        return out

    kind = NEGATIVES[ctx.variant]
    torch.manual_seed(ctx.seed)  # the same initial encoder for every dense variant of a seed
    module = DenseRetriever(negatives=kind, num_negatives=cfg["num_negatives"], max_len=max(dm.passage_max_len, dm.query_max_len),
                            lr=cfg["lr"], weight_decay=cfg["weight_decay"], warmup_steps=cfg["warmup_steps"],
                            max_steps=cfg["max_steps"], pool_lr=cfg["pool_lr"], emb_lr=cfg["emb_lr"], temperature=cfg["temperature"],
                            **{k: cfg[k] for k in MODEL_KEYS})
    if cfg["init"] == "corpus":  # deterministic given the seeded encoder: the same start for every dense variant
        init_from_corpus(module.encoder, dm.passage_tokens[data.train_passage_ids()])
    elif cfg["init"] != "none":
        raise ValueError(f"init must be 'corpus' or 'none' (the checkpoint's or the seeded random weights); got {cfg['init']!r}")
    curve = RetrievalCurve(dm, cfg["eval_every"], cfg["eval_k"])
    callbacks: list[L.Callback] = [curve]
    refresh = None
    source = None
    allowed = negative_passages(dm, cfg["negatives_from"])  # the same candidate passages for every negative source
    if kind == "random":
        source = RandomNegatives(len(data.passages), dm.train_positive, seed=ctx.seed, passage_ids=allowed)
    elif kind in ("bm25", "ann"):
        source = TableNegatives(bm25_pool(dm, cfg["neg_pool"], cfg["bm25_depth"], ctx.seed, allowed), seed=ctx.seed)
    if kind == "ann":
        refresh = AnnRefresh(dm.passage_tokens, dm.train_query_tokens, dm.train_positive, every=cfg["refresh_every"],
                             start=cfg["refresh_start"], pool=cfg["neg_pool"], depth=cfg["depth"],
                             synchronous=ctx.variant == "ance_sync", fallback=source, seed=ctx.seed, passage_ids=allowed)
        source = refresh
        callbacks.append(refresh)
    module.attach(dm.passage_tokens, dm.train_query_tokens, dm.train_positive, source, dm.train_positive_tokens)
    timer = StepTimer()
    trainer = make_trainer(ctx, callbacks=[*callbacks, timer], log_name=ctx.variant, max_steps=cfg["max_steps"],
                           limit_val_batches=0, gradient_clip_val=cfg["grad_clip"])
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    fit_s = time.perf_counter() - start

    final = curve.points[-1][1]
    out += [Measurement(m, final[m]) for m in QUALITY]
    out += [Measurement("mrr_at_10_vs_step", p["mrr_at_10"], step=s) for s, p in curve.points]
    out.append(Measurement("untrained_mrr_at_10", curve.points[0][1]["mrr_at_10"]))
    out += [Measurement("encode_throughput", final["encode_throughput"]),
            Measurement("search_throughput", final["search_throughput"])]
    steps = sorted(timer.step_times[3:])
    if steps:
        out.append(Measurement("train_step_ms", 1e3 * steps[len(steps) // 2]))
    out += [Measurement("params", count_parameters(module.encoder)), Measurement("fit_s", fit_s)]
    if refresh is not None:
        stats = refresh.stats()
        out += [Measurement(k, v) for k, v in stats.items() if not (k != "refresh_s" and math.isnan(v))]
    out += negative_informativeness(module, dm, cfg, ctx.seed)
    return out
