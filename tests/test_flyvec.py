"""FlyVec (paper 10): tests that fail if the learning rule, FlyHash or the data were wrong."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.word_similarity import (
    WordCorpusSource,
    build_word_corpus,
    corpus_sentences,
    in_vocab_pairs,
    load_analogy_questions,
    load_similarity_pairs,
    load_word_corpus,
)
from lit_modules.flyvec import (
    context_windows,
    flyhash,
    normalize_synapses,
    flyvec_step,
    flyvec_train,
    init_synapses,
    input_indices,
    jaccard,
    kenyon_drive,
    train_word2vec,
    word_probabilities,
)


def toy_corpus(n_sentences: int = 300, seed: int = 0, targets: int = 6, contexts: int = 6) -> tuple[list[np.ndarray], int]:
    """Two topics. Target words 0..5 only ever appear amid context words 12..17, targets 6..11
    amid 18..23 (one target in the middle of each 11-word sentence). Within a topic the targets
    are interchangeable; across topics they share no context."""
    rng = np.random.default_rng(seed)
    sentences = []
    for _ in range(n_sentences):
        topic = rng.integers(2)
        target = rng.integers(targets) + targets * topic
        context = rng.integers(2 * targets, 2 * targets + contexts, size=10) + contexts * topic
        sentences.append(np.insert(context, 5, target))
    return sentences, 2 * targets + 2 * contexts


def dense_reference_step(W: np.ndarray, samples: list[np.ndarray], p: np.ndarray, lr: float) -> np.ndarray:
    """The paper's rule on dense 2V vectors, one accumulated batch (the reference code's run_epoch)."""
    K, two_v = W.shape
    V = two_v // 2
    ds = np.zeros_like(W)
    for window in samples:
        v = np.zeros(two_v)
        for j, word in enumerate(window):
            v[word + (V if j == len(window) // 2 else 0)] += 1
        mu = int(np.argmax(W @ v))  # winner on the raw input
        v_p = v / np.concatenate([p, p])
        ds[mu] += v_p - (W[mu] @ v_p) * W[mu]
    return W + lr * ds / np.abs(ds).max()


# ------------------------------------------------------------------------------ the learning rule
def test_batched_sparse_step_matches_dense_reference_rule():
    sentences, V = toy_corpus(20)
    windows = context_windows(sentences, 11)[:7]
    p = word_probabilities(sentences, V)
    W0 = init_synapses(5, V, seed=3, init_std=0.5)
    expected = dense_reference_step(W0.double().numpy(), [w.numpy() for w in windows], p.double().numpy(), lr=0.1)
    W_t = W0.t().contiguous()
    flyvec_step(W_t, input_indices(windows, V), torch.cat([1 / p, 1 / p]), lr=0.1)
    np.testing.assert_allclose(W_t.t().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_learning_rule_moves_only_the_winner_towards_the_input():
    sentences, V = toy_corpus(5)
    window = context_windows(sentences, 11)[:1]
    p = word_probabilities(sentences, V)
    inv_p = torch.cat([1 / p, 1 / p])
    W_t = init_synapses(6, V, seed=0, init_std=0.3).t().contiguous()
    before = W_t.clone()
    idx = input_indices(window, V)
    mu, _ = flyvec_step(W_t, idx, inv_p, lr=0.05)
    changed = (W_t != before).any(dim=0)
    assert changed.sum() == 1 and changed[mu[0]]
    v_p = torch.zeros(2 * V).index_add_(0, idx[0], inv_p[idx[0]])
    cos = lambda w: float(w @ v_p / w.norm() / v_p.norm())  # noqa: E731
    assert cos(W_t[:, mu[0]]) > cos(before[:, mu[0]])


def test_row_norms_approach_one_and_energy_does_not_increase():
    sentences, V = toy_corpus(400)
    energies = []
    W = flyvec_train(sentences, V, num_kenyon=4, window=11, epochs=10, lr=0.2, batch_size=200, init_std=0.05,
                     on_epoch=lambda epoch, e: energies.append(e))
    winners = kenyon_drive(W.t(), input_indices(context_windows(sentences, 11), V)).argmax(dim=1).unique()
    norms = W.norm(dim=1)[winners]  # a cell that never wins never moves (winner-take-all)
    assert len(winners) >= 2 and torch.allclose(norms, torch.ones_like(norms), atol=0.05), norms
    # non-increasing up to the noise of a shuffled, mini-batched epoch on its plateau (0.5%)
    assert all(b <= a + 5e-3 * abs(a) for a, b in zip(energies, energies[1:])), energies
    assert energies[-1] < 1.5 * energies[0]  # and it falls a lot overall (energies are negative)


def test_interchangeable_words_share_far_more_cells_than_unrelated_words():
    sentences, V = toy_corpus(800)
    W = flyvec_train(sentences, V, num_kenyon=6, window=11, epochs=8, lr=0.2, batch_size=100, init_std=0.05)
    codes = flyhash(W, torch.arange(12), k=2)
    pairs = [(i, j) for i in range(12) for j in range(i + 1, 12)]
    sim = {(i, j): float(jaccard(codes[[i]], codes[[j]])) for i, j in pairs}
    same = np.mean([v for (i, j), v in sim.items() if (i < 6) == (j < 6)])
    different = np.mean([v for (i, j), v in sim.items() if (i < 6) != (j < 6)])
    assert same > different + 0.25, (same, different)


def test_training_is_deterministic_for_a_seed():
    sentences, V = toy_corpus(100)
    a = flyvec_train(sentences, V, 8, 11, epochs=2, lr=0.2, seed=5, batch_size=32)
    b = flyvec_train(sentences, V, 8, 11, epochs=2, lr=0.2, seed=5, batch_size=32)
    c = flyvec_train(sentences, V, 8, 11, epochs=2, lr=0.2, seed=6, batch_size=32)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ------------------------------------------------------------------------------ FlyHash
def test_flyhash_codes_have_exactly_k_ones_static_and_contextual():
    W = init_synapses(40, 30, seed=1)
    static = flyhash(W, torch.arange(30), k=7)
    context = torch.tensor([[1, 2, -1], [-1, -1, -1], [4, 4, 5]])
    contextual = flyhash(W, torch.tensor([0, 1, 2]), k=7, context_ids=context, word_prob=torch.full((30,), 1 / 30))
    assert static.dtype == torch.bool and static.shape == (30, 40)
    assert (static.sum(dim=1) == 7).all() and (contextual.sum(dim=1) == 7).all()
    assert torch.equal(contextual[1], static[1])  # an all-padding context is the static code


def test_flyhash_static_code_is_the_top_k_of_the_row_normalised_target_synapses():
    W = init_synapses(10, 6, seed=2).abs()
    unit = W / W.norm(dim=1, keepdim=True)
    code = flyhash(W, torch.tensor([3]), k=3)[0]
    assert set(code.nonzero().flatten().tolist()) == set(unit[:, 6 + 3].topk(3).indices.tolist())
    # a cell whose synapses are all scaled up wins on raw synapses, not after the official normalisation
    loud = W.clone()
    loud[0] *= 1000
    assert flyhash(loud, torch.tensor([3]), k=3, normalize=False)[0, 0]
    assert torch.equal(flyhash(loud, torch.arange(6), k=3), flyhash(W, torch.arange(6), k=3))
    assert torch.allclose(normalize_synapses(loud).norm(dim=1), torch.ones(10))


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=0), "hash length k"),
    (dict(k=11), "hash length k"),
    (dict(k=2, word_ids=torch.tensor([6])), "word ids"),
    (dict(k=2, context_ids=torch.tensor([1, 2])), "context_ids"),
])
def test_flyhash_rejects_bad_input(kwargs, message):
    W = init_synapses(10, 6)
    args = {"word_ids": torch.tensor([0]), **kwargs}
    with pytest.raises(ValueError, match=message):
        flyhash(W, **args)


def test_training_rejects_bad_input():
    sentences, V = toy_corpus(5)
    with pytest.raises(ValueError, match="odd"):
        flyvec_train(sentences, V, 4, window=10, epochs=1, lr=0.1)
    with pytest.raises(ValueError, match="word ids"):
        flyvec_train(sentences, 8, 4, window=11, epochs=1, lr=0.1)
    with pytest.raises(ValueError, match="no sentence"):
        flyvec_train([np.arange(5)], V, 4, window=11, epochs=1, lr=0.1)


def test_windows_stay_inside_sentences():
    windows = context_windows([np.arange(5), np.arange(10, 12), np.arange(20, 23)], window=3)
    assert windows.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [20, 21, 22]]
    assert input_indices(windows, 100)[:, 1].tolist() == [101, 102, 103, 121]


# ------------------------------------------------------------------------------ the baseline
def test_word2vec_is_deterministic_with_one_worker():
    sentences = [["cat", "sat", "on", "the", "mat"] * 4, ["dog", "ran", "to", "the", "park"] * 4] * 20
    a = train_word2vec(sentences, vector_size=8, window=2, epochs=2, seed=0, workers=1)
    b = train_word2vec(sentences, vector_size=8, window=2, epochs=2, seed=0, workers=1)
    assert np.array_equal(a["cat"], b["cat"])


# ------------------------------------------------------------------------------ data
def test_evaluation_sets_from_gensim_test_data():
    assert len(load_similarity_pairs("ws353")) == 353 and len(load_similarity_pairs("simlex")) == 999
    assert ("tiger", "cat", 7.35) in load_similarity_pairs("ws353")
    assert load_analogy_questions()[0] == ("capital-common-countries", "athens", "greece", "baghdad", "iraq")
    with pytest.raises(ValueError, match="unknown similarity set"):
        load_similarity_pairs("men")
    a, b, s = in_vocab_pairs([("x", "y", 1.0), ("x", "z", 2.0)], {"x": 0, "y": 1})
    assert a.tolist() == [0] and b.tolist() == [1] and s.tolist() == [1.0]


def test_vocabulary_is_cut_by_frequency_and_oov_words_are_dropped():
    corpus = build_word_corpus([["a", "b", "a", "c"], ["c", "a", "d"], ["d"]], vocab_size=2)
    assert corpus.vocab == ["a", "c"] and corpus.counts.tolist() == [3, 2]
    assert [s.tolist() for s in corpus.sentences] == [[0, 0, 1], [1, 0]]


def test_plain_corpus_is_read_streaming_with_a_word_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLRBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "train.txt").write_text("The cat sat, on the mat.\nA dog ran!\n\nÉcole is a word.\n", encoding="utf-8")
    sentences = list(corpus_sentences("plain", tmp_path))
    assert sentences == [["the", "cat", "sat", "on", "the", "mat"], ["a", "dog", "ran"], ["ecole", "is", "a", "word"]]
    assert sum(len(s) for s in corpus_sentences("plain", tmp_path, max_words=7)) == 7
    corpus = load_word_corpus("plain", tmp_path, vocab_size=3, min_count=1)
    assert corpus.vocab == ["a", "the", "cat"]


def test_wikitext_corpus_and_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLRBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "wiki.train.raw").write_text(" = Cats = \n Cats purr softly . \n = = Diet = = \n Cats eat fish . \n")
    assert list(corpus_sentences("wikitext", tmp_path)) == [["cats", "purr", "softly"], ["cats", "eat", "fish"]]
    with pytest.raises(FileNotFoundError, match="train.txt"):
        WordCorpusSource("plain", str(tmp_path / "empty")).prepare_data()
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        WordCorpusSource("wikitext", None).prepare_data()
    with pytest.raises(ValueError, match="unknown corpus"):
        list(corpus_sentences("owt", tmp_path))


# ------------------------------------------------------------------------------ the spec
def test_listing_the_spec_imports_no_heavy_library():
    code = ("import sys; from benchmarks.registry import get_benchmark; get_benchmark('flyvec'); "
            "print(sorted(m for m in ('torch', 'gensim', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------ the verdict
@pytest.fixture(autouse=True)
def _fewer_bootstrap_replicates(monkeypatch):
    monkeypatch.setattr("benchmarks.specs.flyvec.BOOTSTRAP_REPS", 800)  # the decisions below are far from the edges


def _scores(signal: float, human: np.ndarray, seed: int) -> np.ndarray:
    return signal * human + np.random.default_rng(seed).normal(size=len(human))


def _rows(fly: float = 1.0, w2v: float = 1.0, seeds: int = 8, pairs=(150, 300), floors=(0.0, 0.0), tune=(0.30, 0.0),
          ratios=(0.9, 0.95, 0.92), w2v_per_set=None) -> pd.DataFrame:
    """Rows of a flyvec run made from per-pair scores signal x human + noise: ρ per set, their mean, the pairs and the
    human scores; ``tune`` = word2vec's and random dense's mean ρ on the tuning half (the margin is 0.25 x their gap)."""
    from scipy.stats import spearmanr

    rows = []
    signals = {"flyvec": fly, "word2vec": w2v, "random_hash": floors[0], "random_dense": floors[1]}
    for k, (name, n) in enumerate(zip(("ws353", "simlex"), pairs)):
        human = np.random.default_rng(100 + k).normal(size=n)
        for v, sig in signals.items():
            sig = (w2v_per_set or {}).get(name, sig) if v == "word2vec" else sig
            for s in range(seeds):
                x = _scores(sig, human, 1000 * k + 10 * s + hash(v) % 7)
                rows.append(dict(variant=v, seed=s, metric=f"{name}_rho", value=spearmanr(x, human).statistic, step=np.nan))
                if v in ("flyvec", "word2vec"):
                    rows += [dict(variant=v, seed=s, metric=f"pair_similarity@set={name}", value=y, step=float(i))
                             for i, y in enumerate(x)]
                if v == "word2vec":
                    rows += [dict(variant=v, seed=s, metric=f"pair_human@set={name}", value=y, step=float(i))
                             for i, y in enumerate(human)]
    df = pd.DataFrame(rows)
    means = df[df["metric"].isin(["ws353_rho", "simlex_rho"])].groupby(["variant", "seed"])["value"].mean().reset_index()
    extra = [dict(variant=r.variant, seed=r.seed, metric="mean_rho", value=r.value, step=np.nan) for r in means.itertuples()]
    extra += [dict(variant=v, seed=s, metric="mean_rho@split=tune", value=t + 0.001 * (-1) ** s, step=np.nan)
              for v, t in zip(("word2vec", "random_dense"), tune) for s in range(seeds)]
    extra += [dict(variant="flyvec", seed=0, metric="time_ratio_repeats", value=r, step=float(i)) for i, r in enumerate(ratios)]
    return pd.concat([df, pd.DataFrame(extra)], ignore_index=True)


def test_rank_correlation_difference_is_the_mean_rho_gap_and_its_interval_holds_its_level():
    from scipy.stats import spearmanr

    from benchmarks.verdict import rank_correlation_difference

    human = np.random.default_rng(0).normal(size=80)
    m = np.stack([_scores(1.0, human, s) for s in range(4)])
    b = np.stack([_scores(0.5, human, 50 + s) for s in range(4)])
    est = rank_correlation_difference([(m, b, human)], reps=400)
    gaps = [spearmanr(m[s], human).statistic - spearmanr(b[s], human).statistic for s in range(4)]
    assert est.effect == pytest.approx(np.mean(gaps)) and est.n == 4 and est.low < est.effect < est.high
    assert rank_correlation_difference([(m, b, human)], reps=400, resample_seeds=False).method == "paired bootstrap over items"
    # no difference (both methods the same signal): the 90 % interval covers 0 in about 90 % of draws
    covered = 0
    for t in range(40):
        h = np.random.default_rng(t).normal(size=60)
        a = np.stack([_scores(0.8, h, 7 * t + s) for s in range(3)])
        c = np.stack([_scores(0.8, h, 7 * t + 3 + s) for s in range(3)])
        e = rank_correlation_difference([(a, c, h)], reps=300, seed=t)
        covered += e.low <= 0 <= e.high
    assert 30 <= covered <= 40
    with pytest.raises(ValueError, match="same shape"):
        rank_correlation_difference([(m, b[:, :10], human)])


def test_resampled_midranks_match_rankdata_on_the_resampled_array_ties_included():
    from scipy.stats import rankdata

    from benchmarks.verdict import _resampled_midranks

    x = np.array([0.5, 0.1, 0.5, 0.9, 0.1, 0.3])  # ties, as Jaccard similarities of codes have
    draws = np.random.default_rng(1).integers(0, 6, size=(20, 6))
    counts = np.stack([np.bincount(d, minlength=6) for d in draws]).astype(float)
    ranks = _resampled_midranks(x, counts)
    for r, d in enumerate(draws):
        expected = rankdata(x[d])
        assert np.allclose(ranks[r, d], expected)


def test_verdict_holds_when_both_methods_score_the_pairs_alike_and_the_margin_comes_from_the_tuning_half():
    from benchmarks.specs.flyvec import MARGIN_FRACTION, claim_verdict

    v = claim_verdict(_rows())
    q, t = v.judgements
    assert q.comparison.kind == "equivalent" and q.estimate.n == 8 and q.estimate.confidence == 0.90
    assert q.comparison.margin == pytest.approx(MARGIN_FRACTION * 0.30)
    assert q.estimate.method == "paired bootstrap over items and seeds" and abs(q.estimate.effect) < 0.03
    assert q.status == "holds" and t.status == "holds" and v.status == "holds"
    assert "the pairs alone give" in v.evidence and "ws353 (counted)" in v.evidence and "simlex (counted)" in v.evidence
    four = claim_verdict(_rows(seeds=4))  # a bootstrap over pairs and seeds has an interval at 4 seeds (IQM's needs 6)
    assert "no interval" not in four.evidence and four.judgements[0].estimate.n == 4


def test_verdict_does_not_hold_when_flyvec_scores_the_pairs_much_worse_or_is_slower():
    from benchmarks.specs.flyvec import claim_verdict

    worse = claim_verdict(_rows(fly=0.2))  # ρ about 0.2 against 0.7: far outside ±0.075
    assert worse.judgements[0].status == "does not hold" and worse.status == "does not hold"
    slower = claim_verdict(_rows(ratios=(1.5, 1.6, 1.55)))
    assert slower.judgements[0].status == "holds" and slower.judgements[1].status == "does not hold"
    assert slower.status == "does not hold" and "time ratio median 1.55" in slower.evidence
    untimed = claim_verdict(_rows(ratios=()))
    assert untimed.status == "inconclusive" and "no paired timing" in untimed.evidence


def test_a_set_where_word2vec_does_not_beat_its_floor_is_not_evidence():
    from benchmarks.specs.flyvec import claim_verdict

    v = claim_verdict(_rows(w2v_per_set={"simlex": 0.0}, fly=0.0))  # simlex: nobody learned; ws353: flyvec far worse
    assert "simlex (not counted)" in v.evidence and "ws353 (counted)" in v.evidence
    assert v.judgements[0].comparison.metric == "ρ over ws353"
    nothing = claim_verdict(_rows(w2v=0.0, fly=0.0))
    assert nothing.status == "inconclusive" and "no evaluation set on which word2vec beats" in nothing.evidence
    no_margin = claim_verdict(_rows(tune=(0.0, 0.0)))
    assert no_margin.status == "inconclusive" and "no margin can be formed" in no_margin.evidence
    missing = _rows()
    assert claim_verdict(missing[missing["variant"] != "random_hash"]).status == "inconclusive"
