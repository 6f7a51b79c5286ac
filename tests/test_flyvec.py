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


def test_flyhash_static_code_is_the_top_k_of_the_target_synapses():
    W = init_synapses(10, 6, seed=2)
    code = flyhash(W, torch.tensor([3]), k=3)[0]
    assert set(code.nonzero().flatten().tolist()) == set(W[:, 6 + 3].topk(3).indices.tolist())


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
def _rows(fly, w2v, rh=None, rd=None, ratio: float | None = 0.9) -> pd.DataFrame:
    """mean_rho per seed (lists of equal length); the random floors default to ±0.01 around 0."""
    n = len(fly)
    noise = [0.01 * (-1) ** s for s in range(n)]
    values = {"flyvec": fly, "word2vec": w2v, "random_hash": rh or noise, "random_dense": rd or [-x for x in noise]}
    rows = [dict(variant=v, seed=s, metric="mean_rho", value=x, step=np.nan) for v, xs in values.items() for s, x in enumerate(xs)]
    if ratio is not None:
        rows.append(dict(variant="flyvec", seed=0, metric="time_ratio", value=ratio, step=np.nan))
    return pd.DataFrame(rows)


W2V = [0.30 + 0.004 * ((-1) ** s) for s in range(8)]  # word2vec over 8 seeds: the margin is 0.25 x 0.30 = 0.075


def _shifted(diffs) -> list[float]:
    return [w + d for w, d in zip(W2V, diffs)]


def test_verdict_margin_is_a_quarter_of_word2vec_above_the_dense_floor():
    from benchmarks.specs.flyvec import MARGIN_FRACTION, claim_verdict

    v = claim_verdict(_rows(_shifted([-0.01] * 8), W2V, rd=[0.04, 0.0] * 4))
    (j,) = v.judgements
    assert j.comparison.kind == "equivalent" and j.estimate.n == 8
    assert j.comparison.margin == pytest.approx(MARGIN_FRACTION * (0.30 - 0.02))
    assert j.estimate.confidence == 0.90 and j.estimate.effect == pytest.approx(-0.01)


@pytest.mark.parametrize("diff, status", [
    (-0.05, "holds"),  # 8 seeds, spread 0.006: the 90 % interval [-0.054, -0.046] lies inside ±0.075
    (0.05, "holds"),
    (-0.10, "does not hold"),  # wholly below -0.075
    (0.10, "does not hold"),  # "close", not "better": wholly above +0.075 is not equivalent either
    (-0.075, "inconclusive"),  # straddles the margin
])
def test_verdict_equivalence_on_each_side_of_the_margin(diff, status):
    from benchmarks.specs.flyvec import claim_verdict

    diffs = [diff + 0.003 * (-1) ** (s // 2) for s in range(8)]
    assert claim_verdict(_rows(_shifted(diffs), W2V)).status == status


def test_verdict_the_interval_widens_with_the_spread_and_narrows_with_seeds():
    from benchmarks.specs.flyvec import claim_verdict

    # per-seed differences -0.06, 0, +0.06: mean 0, but 3 seeds give a 90 % interval of about ±0.10 > 0.075
    few = claim_verdict(_rows(_shifted([-0.06, 0.0, 0.06]), W2V[:3]))
    assert few.status == "inconclusive"
    (j,) = few.judgements
    assert j.estimate.low < -0.075 < 0.075 < j.estimate.high and 3 < j.seeds_needed < 20
    assert "seeds would decide it" in few.evidence
    # the same spread over 9 seeds: about ±0.037, inside the margin
    assert claim_verdict(_rows(_shifted([-0.06, 0.0, 0.06] * 3), (W2V * 2)[:9])).status == "holds"
    # two noisy seeds stay inconclusive whatever their mean
    assert claim_verdict(_rows(_shifted([-0.04, 0.04]), W2V[:2])).status == "inconclusive"


def test_verdict_needs_both_methods_above_their_floors_by_the_margin():
    from benchmarks.specs.flyvec import claim_verdict

    # FlyVec no better than its random hash: equivalence is not judged, whatever the interval says
    v = claim_verdict(_rows(_shifted([-0.01] * 8), W2V, rh=_shifted([-0.02] * 8)))
    assert v.status == "inconclusive" and "flyvec not shown above its random floor" in v.evidence
    assert v.judgements[0].estimate.high < 0.075  # the interval itself would have held
    # a floor that moves as much as the method: word2vec not shown above random dense vectors
    noisy = [0.4, -0.4] * 4
    v = claim_verdict(_rows(_shifted([-0.01] * 8), W2V, rd=noisy))
    assert v.status == "inconclusive" and "word2vec not shown above" in v.evidence


def test_verdict_training_time_is_a_separate_measured_condition():
    from benchmarks.specs.flyvec import claim_verdict

    close = _shifted([-0.01] * 8)
    assert claim_verdict(_rows(close, W2V, ratio=1.05)).status == "holds"  # within TIME_SLACK
    slower = claim_verdict(_rows(close, W2V, ratio=2.0))
    assert slower.status == "does not hold" and "2.00x" in slower.evidence
    assert claim_verdict(_rows(close, W2V, ratio=None)).status == "inconclusive"  # no paired timing
    missing = _rows(close, W2V)
    assert claim_verdict(missing[missing["variant"] != "random_hash"]).status == "inconclusive"
