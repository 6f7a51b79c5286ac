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
    depth_from_fraction,
    encode,
    evaluate,
    grouped_retrieval_metrics,
    hard_negatives,
    init_from_corpus,
    random_negatives,
    retrieval_metrics,
    sample_candidates,
)

NEGATIVES = {"ance": "ann", "ance_sync": "ann", "random_neg": "random", "inbatch_neg": "inbatch", "bm25_neg": "bm25"}
QUALITY_BASES = ("mrr_at_10", "ndcg_at_10", "recall_at_k")
MODEL_KEYS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "checkpoint")


# ------------------------------------------------------------------------------ datasets
def retrieval(config: dict, data_dir: str | None, seed: int, name: str = "wikilinks") -> RetrievalDataModule:
    if name == "wikilinks":  # mention -> entity over the whole KB (datamodules.retrieval.load_wikilinks)
        options = dict(context_words=config["context_words"], split_seed=config["split_seed"],
                       max_eval_queries=config["max_eval_queries"])
    elif name == "gensim_wiki":  # the inverse cloze task over the extract's passages
        options = dict(passage_words=config["passage_words"], max_passages_per_article=config["max_passages_per_article"],
                       min_query_words=config["min_query_words"], test_frac=config["test_frac"],
                       split_seed=config["split_seed"], all_train_sentences=config["all_train_sentences"])
    else:
        options = {}
    return RetrievalDataModule(
        name=name, data_dir=data_dir, vocab_size=config["vocab_size"], query_max_len=config["query_max_len"],
        passage_max_len=config["passage_max_len"], batch_size=config["batch_size"], seed=seed,
        max_train_queries=config["max_train_queries"], max_test_queries=config["max_test_queries"],
        tokenizer_name=config["checkpoint"], **options,
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


def lexical(queries: list[str], markers: tuple[str, str] | None) -> list[str]:
    """What BM25 is queried with: a marked query's mention alone (wikilinks: the title words;
    its context words only add noise to a title index), else the query as it is."""
    if markers is None:
        return list(queries)
    start, end = markers
    return [q.split(start, 1)[1].split(end, 1)[0].strip() if start in q else q for q in queries]


def bm25_pool(dm: RetrievalDataModule, pool: int, depth: int, seed: int, passage_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Each training query's pool of BM25 negatives: ``pool`` of its top ``depth`` BM25
    passages (among ``passage_ids``; None: all), its positive excluded (the paper's BM25 Neg
    and ANCE's warm-up)."""
    data = dm.data
    texts = data.passages if passage_ids is None else [data.passages[i] for i in passage_ids.tolist()]
    depth = min(depth, len(texts))
    ids, _ = bm25_search(bm25_index(texts), lexical(data.train_queries, data.markers), depth)
    ids = torch.as_tensor(ids, dtype=torch.long)
    if passage_ids is not None:
        ids = passage_ids[ids]
    return sample_candidates(ids, dm.train_positive, min(pool, depth - 1), torch.Generator().manual_seed(seed))


def depths(cfg: dict, num_candidates: int) -> tuple[int, int]:
    """(ANN depth, BM25 depth) from the config's fractions of the candidate passages, each at
    least the pool + 1 (a pool of negatives besides the positive)."""
    return (depth_from_fraction(cfg["depth_frac"], num_candidates, cfg["neg_pool"] + 1),
            depth_from_fraction(cfg["bm25_depth_frac"], num_candidates, cfg["neg_pool"] + 1))


class NegativeProbe:
    """The paper's Sec. 3 argument, measured along training: the mean contrastive loss and
    global gradient norm of the same training batches with ANN negatives (from an index of the
    current encoder) and with uniform random negatives, from the same candidate passages."""

    def __init__(self, dm: RetrievalDataModule, cfg: dict, seed: int, allowed: torch.Tensor | None) -> None:
        gen = torch.Generator().manual_seed(seed + 1)
        Q, B = len(dm.train_positive), cfg["batch_size"]
        self.batches = [torch.randperm(Q, generator=gen)[:B] for _ in range(cfg["grad_batches"])]  # the same every time
        self.dm, self.cfg, self.seed, self.allowed = dm, cfg, seed, allowed
        self.where = None if allowed is None else {int(c): i for i, c in enumerate(allowed.tolist())}

    def measure(self, module: DenseRetriever, p_emb: torch.Tensor) -> dict[str, tuple[float, float]]:
        """source -> (mean loss, mean gradient norm); ``p_emb`` the candidates' embeddings."""
        gen = torch.Generator().manual_seed(self.seed + 2)
        n, (depth, _) = self.cfg["num_negatives"], depths(self.cfg, len(p_emb))
        was_training = module.training
        module.train()
        stats: dict[str, list[tuple[float, float]]] = {"ann": [], "random": []}
        for q_idx in self.batches:
            q_emb = encode(module.encoder, self.dm.train_query_tokens[q_idx])
            pos = self.dm.train_positive[q_idx]
            if self.where is not None:  # positions in p_emb: the positive's, or -1 (not a candidate)
                pos = torch.tensor([self.where.get(int(p), -1) for p in pos])
            sources = {"ann": hard_negatives(q_emb, p_emb, pos, n, depth, gen), "random": random_negatives(len(p_emb), pos, n, gen)}
            for name, neg in sources.items():
                stats[name].append(loss_and_grad(module, q_idx, neg if self.allowed is None else self.allowed[neg]))
        module.train(was_training)
        return {k: (sum(v[0] for v in vs) / len(vs), sum(v[1] for v in vs) / len(vs)) for k, vs in stats.items()}


class RetrievalCurve(L.Callback):
    """Every ``every`` steps (step 0: the untrained encoder) and after the last step: MRR@10
    (and the rest) of the held-out test queries over the whole corpus, and the
    :class:`NegativeProbe` of ANN vs random negatives."""

    def __init__(self, dm: RetrievalDataModule, every: int, k: int, probe: NegativeProbe | None = None) -> None:
        self.dm, self.every, self.k, self.probe = dm, every, k, probe
        self.points: list[tuple[int, dict]] = []
        self.probes: list[tuple[int, dict]] = []
        self.passage_emb: torch.Tensor | None = None

    def measure(self, module: DenseRetriever, step: int) -> None:
        dm = self.dm
        start = time.perf_counter()
        p_emb = encode(module.encoder, dm.passage_tokens)
        encode_s = time.perf_counter() - start
        point = evaluate(module.encoder, dm.passage_tokens, dm.test_query_tokens, dm.data.test_relevant, self.k,
                         groups=dm.data.test_groups, passage_emb=p_emb)
        point["encode_throughput"] = len(p_emb) / max(encode_s, 1e-9)
        self.points.append((step, point))
        self.passage_emb = p_emb  # the latest corpus encoding (after the last step: the trained encoder's)
        if self.probe is not None:
            allowed = self.probe.allowed
            self.probes.append((step, self.probe.measure(module, p_emb if allowed is None else p_emb[allowed])))

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


def window_means(trace: list[tuple[int, float, float]], every: int) -> list[tuple[int, float, float]]:
    """(last step of the window, mean loss, mean gradient norm) per window of ``every`` steps."""
    out = []
    for start in range(0, len(trace), every):
        chunk = trace[start:start + every]
        out.append((chunk[-1][0], sum(c[1] for c in chunk) / len(chunk), sum(c[2] for c in chunk) / len(chunk)))
    return out


# ------------------------------------------------------------------------------ the unit
def quality(metrics: dict, suffix: str = "") -> list[Measurement]:
    """The quality metrics of an evaluation, subsets included, with ``suffix`` appended to each
    name's qualifiers (``@split=validation``)."""
    out = []
    for name, value in metrics.items():
        if name.split("@", 1)[0] in QUALITY_BASES:
            out.append(Measurement(name + (("," if "@" in name else "@") + suffix if suffix else ""), value))
    return out


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
        ids, scores = bm25_search(retriever, lexical(data.test_queries, data.markers), cfg["eval_k"])
        search_s = time.perf_counter() - start
        out += quality(grouped_retrieval_metrics(ids, scores, data.test_relevant, data.test_groups))
        if data.val_queries:
            v_ids, v_scores = bm25_search(retriever, lexical(data.val_queries, data.markers), cfg["eval_k"])
            out += quality(retrieval_metrics(v_ids, v_scores, data.val_relevant), "split=validation")
        out += [Measurement("encode_throughput", len(data.passages) / index_s),
                Measurement("search_throughput", len(data.test_queries) / search_s)]
        return out

    kind = NEGATIVES[ctx.variant]
    torch.manual_seed(ctx.seed)  # the same initial encoder for every dense variant of a seed
    module = DenseRetriever(negatives=kind, num_negatives=cfg["num_negatives"], max_len=max(dm.passage_max_len, dm.query_max_len),
                            lr=cfg["lr"], weight_decay=cfg["weight_decay"], warmup_steps=cfg["warmup_steps"],
                            max_steps=cfg["max_steps"], pool_lr=cfg["pool_lr"], emb_lr=cfg["emb_lr"], temperature=cfg["temperature"],
                            span_ids=dm.marker_ids, **{**{k: cfg[k] for k in MODEL_KEYS}, "vocab_size": dm.vocab_size})
    if cfg["init"] == "corpus":  # deterministic given the seeded encoder: the same start for every dense variant
        init_from_corpus(module.encoder, dm.passage_tokens[data.train_passage_ids()])
    elif cfg["init"] != "none":
        raise ValueError(f"init must be 'corpus' or 'none' (the checkpoint's or the seeded random weights); got {cfg['init']!r}")
    allowed = negative_passages(dm, cfg["negatives_from"])  # the same candidate passages for every negative source
    candidates = len(data.passages) if allowed is None else len(allowed)
    ann_depth, bm25_depth = depths(cfg, candidates)
    probe = NegativeProbe(dm, cfg, ctx.seed, allowed) if cfg["grad_batches"] > 0 else None
    curve = RetrievalCurve(dm, cfg["eval_every"], cfg["eval_k"], probe)
    callbacks: list[L.Callback] = [curve]
    refresh = None
    source = None
    if kind == "random":
        source = RandomNegatives(len(data.passages), dm.train_positive, seed=ctx.seed, passage_ids=allowed)
    elif kind in ("bm25", "ann"):
        source = TableNegatives(bm25_pool(dm, cfg["neg_pool"], bm25_depth, ctx.seed, allowed), seed=ctx.seed)
    if kind == "ann":
        refresh = AnnRefresh(dm.passage_tokens, dm.train_query_tokens, dm.train_positive, every=cfg["refresh_every"],
                             start=cfg["refresh_start"], pool=cfg["neg_pool"], depth=ann_depth,
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

    out += [Measurement("depth@source=ann", ann_depth), Measurement("depth@source=bm25", bm25_depth)]
    final = curve.points[-1][1]
    out += quality(final)
    if data.val_queries:  # model selection and tuning read this split, never the judged test split
        out += quality(evaluate(module.encoder, dm.passage_tokens, dm.val_query_tokens, data.val_relevant, cfg["eval_k"],
                                passage_emb=curve.passage_emb), "split=validation")
    out += [Measurement("mrr_at_10_vs_step", p["mrr_at_10"], step=s) for s, p in curve.points]
    out.append(Measurement("untrained_mrr_at_10", curve.points[0][1]["mrr_at_10"]))
    out += [Measurement(f"untrained_{name}", v) for name, v in curve.points[0][1].items() if name.startswith("mrr_at_10@subset=")]
    out += [Measurement("encode_throughput", final["encode_throughput"]),
            Measurement("search_throughput", final["search_throughput"])]
    for step, loss, norm in window_means(module.trace, cfg["eval_every"]):
        out += [Measurement("train_loss_vs_step", loss, step=step), Measurement("train_grad_norm_vs_step", norm, step=step)]
    for step, stats in curve.probes:
        for name, (loss, norm) in stats.items():
            out += [Measurement(f"neg_loss_vs_step@source={name}", loss, step=step),
                    Measurement(f"neg_grad_norm_vs_step@source={name}", norm, step=step)]
    if curve.probes:  # the trained encoder's (the last point)
        for name, (loss, norm) in curve.probes[-1][1].items():
            out += [Measurement(f"neg_loss@source={name}", loss), Measurement(f"neg_grad_norm@source={name}", norm)]
    steps = sorted(timer.step_times[3:])
    if steps:
        out.append(Measurement("train_step_ms", 1e3 * steps[len(steps) // 2]))
    out += [Measurement("params", count_parameters(module.encoder)), Measurement("fit_s", fit_s)]
    if refresh is not None:
        stats = refresh.stats()
        out += [Measurement(k, v) for k, v in stats.items() if not (k != "refresh_s" and math.isnan(v))]
    return out
