"""FlyVec vs word2vec (paper 10): what a unit runs. The declaration is ``benchmarks/specs/flyvec.py``.

Every variant trains (or draws) one word representation on the same token stream and is
scored on the same in-vocabulary pairs: Jaccard similarity for binary codes, cosine for
dense vectors, Spearman ρ against the human scores.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import torch
from scipy.stats import spearmanr

from benchmarks.train import dev_step
from benchmarks.unit import Measurement, UnitContext
from datamodules.word_similarity import (
    SIMILARITY_SETS,
    SPLITS,
    WordCorpus,
    WordCorpusSource,
    in_vocab_pairs,
    load_analogy_questions,
    load_similarity_pairs,
    split_pairs,
)
from lit_modules.flyvec import cosine, flyhash, flyvec_train, init_synapses, jaccard, train_word2vec


# ------------------------------------------------------------------------------ datasets
def _source(config: dict, data_dir: str | None, name: str) -> WordCorpusSource:
    return WordCorpusSource(name, data_dir, config["vocab_size"], config["min_count"], config["corpus_max_words"])


def gensim_wiki(config: dict, data_dir: str | None, seed: int) -> WordCorpusSource:
    return _source(config, data_dir, "gensim_wiki")


def plain(config: dict, data_dir: str | None, seed: int) -> WordCorpusSource:
    return _source(config, data_dir, "plain")


def wikitext(config: dict, data_dir: str | None, seed: int) -> WordCorpusSource:
    return _source(config, data_dir, "wikitext")


# ------------------------------------------------------------------------------ evaluation
def rank_correlation(scores: np.ndarray, human: np.ndarray) -> float:
    """Spearman ρ; 0 when the similarities are all equal (codes that share no cell on any pair rank nothing), NaN
    with fewer than 3 pairs."""
    if len(human) < 3:
        return float("nan")
    return 0.0 if np.ptp(scores) == 0 else float(spearmanr(scores, human).statistic)


def similarity_rows(corpus: WordCorpus, similarity, suffix: str = "", step: float | None = None,
                    pairs: bool = False) -> list[Measurement]:
    """ρ per similarity set on its judged half (+ coverage), their mean as ``mean_rho``, and the same on the tuning half
    (``…@split=tune``: what settings are chosen on); ``similarity(ids_a, ids_b)`` -> [n]. With ``pairs``, every judged
    pair's similarity too (``pair_similarity@set=…``, step = the pair's index), for the paired bootstrap over pairs."""
    index = corpus.index()
    out, rhos = [], {split: [] for split in SPLITS}
    for name in SIMILARITY_SETS:
        every = load_similarity_pairs(name)
        for split in SPLITS:
            half = split_pairs(every, split)
            a, b, human = in_vocab_pairs(half, index)
            scores = similarity(a, b).numpy() if len(human) else np.zeros(0)
            rho = rank_correlation(scores, human)
            rhos[split].append(rho)
            if step is not None:
                continue
            if split == "tune":
                out.append(Measurement(f"{name}_rho{suffix}@split=tune", rho))
                continue
            out += [Measurement(f"{name}_rho{suffix}", rho), Measurement(f"{name}_coverage", len(human) / len(half))]
            if pairs:
                out += [Measurement(f"pair_similarity@set={name}", float(x), step=i) for i, x in enumerate(scores)]
    out.append(Measurement(f"mean_rho{suffix}", float(np.mean(rhos["eval"])), step=step))
    if step is None:
        out.append(Measurement(f"mean_rho{suffix}@split=tune", float(np.mean(rhos["tune"]))))
    return out


def human_rows(corpus: WordCorpus) -> list[Measurement]:
    """The human scores of the judged in-vocabulary pairs, in the order of ``pair_similarity``."""
    index, out = corpus.index(), []
    for name in SIMILARITY_SETS:
        _, _, human = in_vocab_pairs(split_pairs(load_similarity_pairs(name), "eval"), index)
        out += [Measurement(f"pair_human@set={name}", float(x), step=i) for i, x in enumerate(human)]
    return out


def hash_similarity(W: torch.Tensor, k: int):
    def sim(a, b):
        return jaccard(flyhash(W, torch.as_tensor(a), k), flyhash(W, torch.as_tensor(b), k))

    return sim


def dense_similarity(vectors: torch.Tensor):
    def sim(a, b):
        return cosine(vectors[torch.as_tensor(a)], vectors[torch.as_tensor(b)])

    return sim


def analogy_rows(corpus: WordCorpus, vectors: torch.Tensor, max_questions: int) -> list[Measurement]:
    """3CosAdd accuracy (b − a + c, the three question words excluded) on the in-vocabulary
    Google analogy questions (the first ``max_questions`` of them), and their coverage."""
    index = corpus.index()
    questions = load_analogy_questions()
    ids = np.asarray([[index[w] for w in q[1:]] for q in questions if all(w in index for w in q[1:])], dtype=np.int64)
    if len(ids) == 0:
        return [Measurement("analogy_acc", float("nan")), Measurement("analogy_coverage", 0.0)]
    ids = torch.from_numpy(ids[:max_questions])
    unit = torch.nn.functional.normalize(vectors.double(), dim=1)
    correct = 0
    for chunk in ids.split(1024):
        query = unit[chunk[:, 1]] - unit[chunk[:, 0]] + unit[chunk[:, 2]]  # [n, D]
        scores = query @ unit.t()  # [n, V]
        scores.scatter_(1, chunk[:, :3], -np.inf)
        correct += int((scores.argmax(dim=1) == chunk[:, 3]).sum())
    return [Measurement("analogy_acc", correct / len(ids)), Measurement("analogy_coverage", len(ids) / len(questions))]


# ------------------------------------------------------------------------------ training
def train_flyvec(cfg: dict, corpus: WordCorpus, seed: int, energies: list | None = None) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    W = flyvec_train(
        corpus.sentences, corpus.vocab_size, cfg["num_kenyon"], cfg["window"], cfg["epochs"], cfg["lr"], seed=seed,
        batch_size=cfg["batch_size"], init_std=cfg["init_std"],
        on_epoch=None if energies is None else (lambda epoch, e: energies.append((epoch, e))),
    )
    return W, time.perf_counter() - start


def train_w2v(cfg: dict, corpus: WordCorpus, seed: int) -> tuple[torch.Tensor, float]:
    sentences = corpus.word_lists()  # built before the clock starts, as FlyVec's ids are
    start = time.perf_counter()
    kv = train_word2vec(sentences, cfg["w2v_dim"], (cfg["window"] - 1) // 2, cfg["w2v_epochs"], seed=seed,
                        workers=torch.get_num_threads(), negative=cfg["w2v_negative"], lr=cfg["w2v_lr"])
    elapsed = time.perf_counter() - start
    return torch.from_numpy(np.stack([kv[w] for w in corpus.vocab])), elapsed


# ------------------------------------------------------------------------------ units
def full_params(config: dict, variant: str = "flyvec") -> int:
    """Trained numbers for ``config`` at its full vocabulary: W [K, 2V] for FlyVec, syn0 + syn1neg for word2vec."""
    V = config["vocab_size"]
    return 2 * V * config["w2v_dim"] if variant in ("word2vec",) else config["num_kenyon"] * 2 * V


def run(ctx: UnitContext) -> list[Measurement]:
    """Train (or draw) the variant's representation once; score it."""
    cfg = ctx.config
    corpus = ctx.datamodule().load()
    V, K, k = corpus.vocab_size, cfg["num_kenyon"], cfg["hash_k"]
    out = [Measurement("vocab_size", V), Measurement("corpus_tokens", corpus.num_tokens)]
    if ctx.variant in ("flyvec", "random_hash"):
        energies: list = []
        if ctx.variant == "flyvec":
            with dev_step(K * 2 * V, "flyvec_train, one epoch", batch=cfg["batch_size"]) if ctx.fast_dev_run else nullcontext():
                W, elapsed = train_flyvec(cfg, corpus, ctx.seed, energies)
            out += [Measurement("train_time_s", elapsed)]
            out += [Measurement("energy", e, step=epoch + 1) for epoch, e in energies]
            norms = W.norm(dim=1)
            out.append(Measurement("row_norm_dev", float((norms - 1).abs().mean())))
        else:
            W = init_synapses(K, V, ctx.seed, cfg["init_std"])  # the untrained synapses FlyVec starts from
        out += similarity_rows(corpus, hash_similarity(W, k), pairs=ctx.variant == "flyvec")
        for kk in cfg["k_sweep"]:
            if kk <= K:
                out += similarity_rows(corpus, hash_similarity(W, kk), "_vs_k", step=kk)
        out += [Measurement("bytes_per_word", K / 8), Measurement("params", W.numel())]
        return out
    if ctx.variant == "word2vec":
        with dev_step(2 * V * cfg["w2v_dim"], "word2vec, one epoch") if ctx.fast_dev_run else nullcontext():
            vectors, elapsed = train_w2v(cfg, corpus, ctx.seed)
        out += [Measurement("train_time_s", elapsed), Measurement("params", 2 * vectors.numel())]  # syn0 + syn1neg
    elif ctx.variant == "random_dense":
        vectors = torch.randn(V, cfg["w2v_dim"], generator=torch.Generator().manual_seed(ctx.seed))
        out.append(Measurement("params", vectors.numel()))
    else:
        raise ValueError(f"unknown flyvec variant {ctx.variant!r}; known: flyvec, random_hash, word2vec, random_dense")
    out += similarity_rows(corpus, dense_similarity(vectors), pairs=ctx.variant == "word2vec")
    if ctx.variant == "word2vec":
        out += human_rows(corpus)
    out += analogy_rows(corpus, vectors, cfg["analogy_max_questions"])
    out.append(Measurement("bytes_per_word", 4 * vectors.shape[1]))  # float32
    return out


def paired_timing(ctx: UnitContext) -> list[Measurement]:
    """FlyVec and word2vec trained one after the other in one process, same corpus and
    threads, ``speed_repeats`` times alternating; medians and their ratio."""
    cfg = ctx.config
    corpus = ctx.datamodule().load()
    fly, w2v = [], []
    for _ in range(cfg["speed_repeats"]):
        w2v.append(train_w2v(cfg, corpus, ctx.seed)[1])
        fly.append(train_flyvec(cfg, corpus, ctx.seed)[1])
    t_fly, t_w2v = float(np.median(fly)), float(np.median(w2v))
    V, K, D = corpus.vocab_size, cfg["num_kenyon"], cfg["w2v_dim"]
    ratios = [Measurement("time_ratio_repeats", f / w, step=i, variant="flyvec") for i, (f, w) in enumerate(zip(fly, w2v))]
    return ratios + [
        Measurement("paired_train_time_s", t_fly, variant="flyvec"),
        Measurement("paired_train_time_s", t_w2v, variant="word2vec"),
        Measurement("time_ratio", float(np.median([f / w for f, w in zip(fly, w2v)])), variant="flyvec"),
        Measurement("threads", torch.get_num_threads(), variant="flyvec"),
        # training state: FlyVec's W and its batch update ΔW; word2vec's syn0 and syn1neg
        Measurement("train_state_mb", 2 * K * 2 * V * 4 / 2**20, variant="flyvec"),
        Measurement("train_state_mb", 2 * V * D * 4 / 2**20, variant="word2vec"),
    ]
