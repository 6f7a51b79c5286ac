"""PMI-Masking: PMI_n against hand counts, planted collocations, the maskers' budget and
units, and the text data loaders (tiny fixtures written here)."""

from __future__ import annotations

import math
from collections import Counter
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.corpora import (
    Article,
    clean_wiki_markup,
    extract_wikilinks,
    load_corpus,
    mention_entity_pairs,
    read_plain_text,
    read_wikitext,
    split_documents,
)
from datamodules.text import Chunk, encode_chunks, sentence_classification_data, train_wordpiece, words_of
from lit_modules.pmi_masking import (
    SPAN_MAX,
    SPAN_P,
    Masker,
    MaskedLMPretrainer,
    alibi_bias,
    alibi_slopes,
    count_ngrams,
    eval_batches,
    eval_mask,
    find_matches,
    heldout_scores,
    is_word,
    mask_budget,
    masking_vocabulary,
    ngram_pmi,
    pmi_from_counts,
    pmi_n,
    pmi_word_units,
    ranking_scores,
    replace_units,
    shortcut_gap,
    span_length_probs,
    span_units,
    unigram_floor,
    unigram_log_probs,
)

MASK_ID, V = 4, 1000


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLRBENCH_CACHE", str(tmp_path / "cache"))


# --------------------------------------------------------------------------------------
# PMI_n
# --------------------------------------------------------------------------------------
def test_ngram_pmi_equals_hand_computed_values():
    docs = [["a", "b", "c"], ["a", "b"], ["b", "c"]]
    # positions: 7 unigrams, 4 bigrams, 1 trigram; counts a=2 b=3 c=2, ab=2 bc=2, abc=1
    pmi = ngram_pmi(docs, max_n=3, min_count=1)
    assert pmi[("a", "b")] == pytest.approx(math.log(2 / 4) - math.log(2 / 7) - math.log(3 / 7))
    assert pmi[("b", "c")] == pytest.approx(math.log(2 / 4) - math.log(3 / 7) - math.log(2 / 7))
    # segmentations of abc: a|b|c = log(12/343), ab|c = a|bc = log(1/7): the max is log(1/7)
    assert pmi[("a", "b", "c")] == pytest.approx(math.log(1 / 1) - math.log(1 / 7))
    assert set(pmi) == {("a", "b"), ("b", "c"), ("a", "b", "c")}  # nothing across documents (c a)


def segmentations(n: int):
    """Every split of positions 0..n into >= 2 contiguous parts, as lists of (i, j)."""
    for k in range(1, n):
        for cuts in combinations(range(1, n), k):
            bounds = (0, *cuts, n)
            yield list(zip(bounds[:-1], bounds[1:]))


def test_pmi_n_at_lengths_4_and_5_equals_brute_force_over_all_segmentations():
    rng = np.random.default_rng(3)
    # a skewed alphabet with planted phrases, so that segmentations into 3+ parts often win
    docs = [list(rng.choice(list("abcde"), p=[0.4, 0.3, 0.15, 0.1, 0.05], size=rng.integers(20, 60))) for _ in range(40)]
    for d in docs:
        i = int(rng.integers(len(d) - 5))
        d[i : i + 5] = list("abcab")
    stats = count_ngrams(docs, max_n=5, min_count=1)
    checked, won_by_three_or_more = Counter(), 0
    for g in stats.counts:
        if len(g) not in (4, 5):
            continue
        scored = [(sum(stats.log_p(g[i:j]) for i, j in seg), len(seg)) for seg in segmentations(len(g))]
        best, parts = max(scored)
        assert pmi_n(g, stats) == pytest.approx(stats.log_p(g) - best, abs=1e-12), g
        checked[len(g)] += 1
        won_by_three_or_more += parts >= 3 and best > max(v for v, k in scored if k == 2) + 1e-9
    assert checked[4] > 50 and checked[5] > 50
    assert won_by_three_or_more > 20  # a maximum over two-part splits only would fail these
    assert len(list(segmentations(5))) == 2**4 - 1


def test_min_count_prunes_and_pruned_counts_equal_brute_force():
    rng = np.random.default_rng(0)
    docs = [list(rng.choice(list("abcd"), size=rng.integers(3, 40))) for _ in range(60)]
    stats = count_ngrams(docs, max_n=4, min_count=3)
    brute = Counter(tuple(d[i : i + n]) for d in docs for n in range(1, 5) for i in range(len(d) - n + 1))
    expected = {g: c for g, c in brute.items() if len(g) == 1 or c >= 3}
    assert stats.counts == expected
    assert stats.positions[2] == sum(len(d) - 1 for d in docs)


def test_planted_collocation_ranks_top_and_independent_words_score_near_zero():
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(20)]
    docs = []
    for _ in range(100):
        doc = list(rng.choice(words, size=1000))
        for i in rng.choice(990, size=15, replace=False):
            doc[i : i + 2] = ["new", "york"]
        docs.append(doc)
    pmi = ngram_pmi(docs, max_n=3, min_count=5)
    bigrams = sorted(((v, g) for g, v in pmi.items() if len(g) == 2), reverse=True)
    assert bigrams[0][1] == ("new", "york") and bigrams[0][0] > 4.0
    independent = {n: [v for g, v in pmi.items() if len(g) == n and not {"new", "york"} & set(g)] for n in (2, 3)}
    assert max(abs(v) for v in independent[2]) < 0.3  # ~250 counts per bigram: noise ~0.06
    assert abs(np.mean(independent[2])) < 0.03
    assert abs(np.median(independent[3])) < 0.1  # ~12 counts per trigram: noisier, centred near 0


def test_masking_vocabulary_takes_the_paper_mix_ranked_per_length():
    pmi = {("a", "b"): 1.0, ("c", "d"): 3.0, ("e", "f"): 2.0, ("g", "h"): 0.5, ("a", "b", "c"): 9.0,
           ("x", "y", "z"): 8.0, ("a", "b", "c", "d"): 0.1, ("a", "b", "c", "d", "e"): 5.0}
    vocab = masking_vocabulary(pmi, size=8)  # 4 bigrams, 2 trigrams, 1 + 1
    assert [g for g, _ in vocab[2]] == [("c", "d"), ("e", "f"), ("a", "b"), ("g", "h")]
    assert [g for g, _ in vocab[3]] == [("a", "b", "c"), ("x", "y", "z")]
    assert len(vocab[4]) == 1 and len(vocab[5]) == 1
    small = masking_vocabulary(pmi, size=4)  # 2, 1, 0 (0.5 rounds to even), 0
    assert [g for g, _ in small[2]] == [("c", "d"), ("e", "f")] and [g for g, _ in small[3]] == [("a", "b", "c")]


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(min_count=0), "min_count"), (dict(max_n=1), "max_n"), (dict(docs=[]), "empty"), (dict(docs=[[], []]), "empty")],
)
def test_ngram_pmi_rejects_bad_input(kwargs, match):
    args = dict(docs=[["a", "b"]], max_n=5, min_count=1) | kwargs
    with pytest.raises(ValueError, match=match):
        ngram_pmi(**args)


def test_count_ngrams_refuses_a_one_shot_iterator():
    with pytest.raises(ValueError, match="re-iterable"):
        count_ngrams(iter([["a", "b"]]), 2, 1)


# --------------------------------------------------------------------------------------
# Maskers
# --------------------------------------------------------------------------------------
def synthetic_chunk(rng: np.random.Generator, n_words: int = 60, vocab_words: int = 30) -> Chunk:
    """A chunk of words of 1-3 tokens each, [CLS]=2 ... [SEP]=3."""
    words = [f"w{int(i)}" for i in rng.integers(vocab_words, size=n_words)]
    ids, spans = [2], []
    for w in words:
        k = 1 + int(w[1:]) % 3  # a word's length is fixed by its identity
        spans.append((len(ids), len(ids) + k))
        ids.extend([10 + int(w[1:])] * k)
    return Chunk(np.array(ids + [3]), spans, words)


VOCAB = frozenset({("w1", "w2"), ("w3", "w4", "w5"), ("w6", "w7"), ("w2", "w3")})


@pytest.mark.parametrize("scheme", ["random", "whole_word", "span", "pmi"])
def test_each_masker_chooses_15_percent_and_never_splits_a_unit(scheme):
    rng = np.random.default_rng(0)
    masker = Masker(scheme, MASK_ID, V, vocab=VOCAB if scheme == "pmi" else None)
    fractions = []
    for _ in range(200):
        chunk = synthetic_chunk(rng, vocab_words=8)  # 8 word types: vocabulary n-grams are frequent
        n_tokens = len(chunk.input_ids) - 2
        units = masker(chunk, rng)
        labelled = np.zeros(len(chunk.input_ids), dtype=bool)
        for s, e in units:
            assert not labelled[s:e].any(), "units overlap"
            labelled[s:e] = True
        assert not labelled[0] and not labelled[-1]  # never [CLS] / [SEP]
        budget = round(0.15 * n_tokens)
        if scheme != "span":  # spans are never cut, so a chunk's count varies around the budget (mean below)
            assert budget - 3 <= labelled.sum() <= budget  # at most one word (3 tokens) short
        fractions.append(labelled.sum() / n_tokens)
        if scheme != "random":
            for s, e in chunk.word_spans:
                assert labelled[s:e].all() or not labelled[s:e].any(), f"{scheme} split a word"
        if scheme == "pmi":
            starts = {s: k for k, (s, _) in enumerate(chunk.word_spans)}
            ends = {e: k for k, (_, e) in enumerate(chunk.word_spans)}
            for s, e in units:
                words = tuple(chunk.words[starts[s] : ends[e] + 1])
                assert len(words) == 1 or words in VOCAB
    assert np.mean(fractions) == pytest.approx(0.15, abs=0.01 if scheme != "span" else 0.012)


def test_span_lengths_follow_geometric_0_2_truncated_at_10_words():
    """SpanBERT: P(l) = p (1-p)^(l-1) / sum_{k<=10} p (1-p)^(k-1), p = 0.2 (Joshi et al., 2020, Sec. 3.1;
    their code renormalises the truncated distribution). One-token words, 200 of them, and a
    budget of 10 tokens: the first span drawn is never cut short by the budget or a taken word."""
    assert (SPAN_P, SPAN_MAX) == (0.2, 10)
    rng = np.random.default_rng(0)
    word_spans = [(i, i + 1) for i in range(1, 201)]
    n = 10000
    lengths = Counter()
    for _ in range(n):
        first = span_units(word_spans, 10, rng)[0]
        lengths[first[1] - first[0]] += 1
    assert max(lengths) == 10 and min(lengths) == 1
    z = sum(0.2 * 0.8 ** (k - 1) for k in range(1, 11))
    for k in range(1, 11):
        expected = 0.2 * 0.8 ** (k - 1) / z
        assert lengths[k] / n == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / n) + 1e-3), k


def test_pmi_units_mask_whole_ngrams_when_they_occur():
    rng = np.random.default_rng(0)
    masker = Masker("pmi", MASK_ID, V, vocab=VOCAB)
    ngram_units = 0
    for _ in range(100):
        chunk = synthetic_chunk(rng, vocab_words=8)
        word_of_start = {s: k for k, (s, _) in enumerate(chunk.word_spans)}
        for s, e in masker(chunk, rng):
            k = word_of_start[s]
            ngram_units += chunk.word_spans[k][1] != e  # the unit spans more than one word
    assert ngram_units > 15  # ~2 matches in ~55 units per chunk, ~9 units drawn: ~30 expected


def test_pmi_word_units_prefer_the_containing_match_and_resolve_overlaps_at_random():
    # "w1 w2 w3": contained ("w1","w2") inside ("w1","w2","w3") yields to it
    units = pmi_word_units(4, [(0, 2), (0, 3), (1, 2)], np.random.default_rng(0))
    assert sorted(units) == [(0, 3), (3, 4)]
    # overlapping (0,2) and (1,2): each wins sometimes, the leftover word is its own unit
    seen = {tuple(sorted(pmi_word_units(3, [(0, 2), (1, 2)], np.random.default_rng(s)))) for s in range(30)}
    assert seen == {((0, 2), (2, 3)), ((0, 1), (1, 3))}


def test_find_matches_lists_every_occurrence():
    words = ["w1", "w2", "w3", "w4", "w5", "w1", "w2"]
    assert find_matches(words, VOCAB) == [(0, 2), (1, 2), (2, 3), (5, 2)]


def test_replacement_is_per_unit_80_10_10():
    rng = np.random.default_rng(0)
    ids = np.arange(10, 40)
    units = [(i, i + 3) for i in range(0, 30, 3)]
    kinds = Counter()
    for _ in range(2000):
        inputs, labels = replace_units(ids, units, rng, MASK_ID, V, 5)
        assert (labels == ids).all()
        for s, e in units:
            masked, same = (inputs[s:e] == MASK_ID), (inputs[s:e] == ids[s:e])
            assert masked.all() or not masked.any()  # a unit is replaced as a whole
            kinds["mask" if masked.all() else "same" if same.all() else "random"] += 1
    total = sum(kinds.values())
    assert kinds["mask"] / total == pytest.approx(0.8, abs=0.015)
    assert kinds["same"] / total == pytest.approx(0.1, abs=0.015)  # random ids rarely equal the original


def test_masker_rejects_unknown_scheme_and_pmi_without_vocabulary():
    with pytest.raises(ValueError, match="unknown masking scheme 'pmi2'.*random, whole_word, span, pmi"):
        Masker("pmi2", MASK_ID, V)
    with pytest.raises(ValueError, match="vocabulary"):
        Masker("pmi", MASK_ID, V)


# --------------------------------------------------------------------------------------
# Text data
# --------------------------------------------------------------------------------------
def test_wikilinks_and_markup_cleaning():
    markup = ("'''Paris''' is the capital of [[France]] and [[Île-de-France|its region]]; see [[File:x.jpg|thumb|a]] "
              "and [[Category:Cities]].\n==History==\n{| class=t\n| cell\n|}\n* Founded by the [[Parisii#Name|Parisii]] tribe.")
    assert extract_wikilinks(markup) == [("France", "France"), ("its region", "Île-de-France"), ("Parisii", "Parisii")]
    text = clean_wiki_markup(markup)
    assert text.startswith("Paris is the capital of France and its region")
    assert "History" not in text and "cell" not in text and "'''" not in text
    assert "Founded by the Parisii tribe." in text


def test_plain_and_wikitext_loaders_read_their_formats(tmp_path):
    (tmp_path / "train.txt").write_text("first document here\n\nsecond one\nthird doc\nfourth doc\n")
    assert [d.text for d in read_plain_text(tmp_path / "train.txt")] == ["first document here", "second one", "third doc", "fourth doc"]
    corpus = load_corpus("plain", tmp_path, seed=0, val_frac=0.25, test_frac=0.25)
    assert len(corpus.train) == 2 and len(corpus.validation) == 1 and len(corpus.test) == 1
    wt = tmp_path / "wt"
    wt.mkdir()
    raw = " \n = Valkyria Chronicles = \n \n Senjō no Valkyria is a game . \n \n = = Gameplay = = \n \n It plays well . \n = Tower = \n \n A tall tower . \n"
    for split in ("train", "valid", "test"):
        (wt / f"wiki.{split}.raw").write_text(raw)
    docs = read_wikitext(wt / "wiki.train.raw")
    assert [d.title for d in docs] == ["Valkyria Chronicles", "Tower"]
    assert docs[0].text == "Senjō no Valkyria is a game .\nIt plays well ."
    assert len(load_corpus("wikitext", wt).validation) == 2


def test_corpus_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus 'wiki'; known: gensim_wiki, plain, wikitext"):
        load_corpus("wiki")
    with pytest.raises(FileNotFoundError, match="wiki.train.raw"):
        load_corpus("wikitext", tmp_path)
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_corpus("plain", None)


def test_gensim_wikipedia_articles_split_tokenize_and_keep_word_spans():
    corpus = load_corpus("gensim_wiki", seed=0)
    articles = corpus.train + corpus.validation + corpus.test
    assert len(articles) == 106 and len({a.title for a in articles}) == 106
    assert not {a.title for a in corpus.train} & {a.title for a in corpus.test}
    pairs = mention_entity_pairs(articles)
    assert len(pairs) > 10_000 and ("Greek mythology", "Greek mythology", "Achilles") in pairs
    assert corpus == load_corpus("gensim_wiki", seed=0) and corpus != load_corpus("gensim_wiki", seed=1)
    tok = train_wordpiece([a.text for a in corpus.train[:10]], vocab_size=500)
    assert train_wordpiece([a.text for a in corpus.train[:10]], vocab_size=500).to_str() == tok.to_str()  # cached
    chunks = encode_chunks(tok, [a.text for a in corpus.test[:3]], max_len=32)
    for c in chunks:
        assert len(c.input_ids) <= 32 and c.input_ids[0] == tok.token_to_id("[CLS]")
        for w, (s, e) in zip(c.words, c.word_spans):
            pieces = [tok.id_to_token(int(i)) for i in c.input_ids[s:e]]
            assert pieces == ["[UNK]"] or "".join(p.removeprefix("##") for p in pieces) == w
    assert words_of(tok, "New York's U.S.") == ["new", "york", "'", "s", "u", ".", "s", "."]


def test_sentence_classification_task_splits_each_document():
    docs = [Article(f"t{k}", " ".join(f"Sentence {i} of document {k} has words." for i in range(10))) for k in range(3)]
    tr_x, tr_y, te_x, te_y = sentence_classification_data(docs, seed=0, per_doc=10, test_frac=0.3)
    assert Counter(te_y) == {0: 3, 1: 3, 2: 3} and Counter(tr_y) == {0: 7, 1: 7, 2: 7}
    assert not set(tr_x) & set(te_x)
    with pytest.raises(ValueError, match="sum < 1"):
        split_documents(docs, 0, 0.5, 0.5)


# --------------------------------------------------------------------------------------
# PMI units that are words; the released lists' score; the threshold
# --------------------------------------------------------------------------------------
def test_word_filter_counts_exactly_the_ngrams_of_words():
    rng = np.random.default_rng(4)
    alphabet = ["the", "new", "york", ",", ".", "1999", "café"]
    docs = [list(rng.choice(alphabet, size=rng.integers(5, 40))) for _ in range(80)]
    stats = count_ngrams(docs, max_n=4, min_count=3, keep=is_word)
    brute = Counter(tuple(d[i : i + n]) for d in docs for n in range(1, 5) for i in range(len(d) - n + 1))
    expected = {g: c for g, c in brute.items() if len(g) == 1 or (c >= 3 and all(w.isalpha() for w in g))}
    assert stats.counts == expected  # unigrams of every kind stay (probabilities of the whole corpus)
    assert any(len(g) == 4 for g in stats.counts) and ("café", "new") in stats.counts
    assert not any(len(g) > 1 and {",", ".", "1999"} & set(g) for g in stats.counts)
    assert [w for w in ["york", "café", ",", "1999", "'", "u.s", "b2"] if is_word(w)] == ["york", "café"]


def test_frequency_weighted_score_is_pmi_plus_log_p_and_the_threshold_is_on_pmi():
    docs = [["a", "b", "c", "a", "b", "d"], ["a", "b", "c", "e", "c", "d"]]
    stats = count_ngrams(docs, max_n=3, min_count=1)
    pmi, weighted = pmi_from_counts(stats), pmi_from_counts(stats, "freq_weighted")
    for g in pmi:  # AI21 README: min_σ log p(g)² / Π p(s) = PMI_n + log p(g)
        assert weighted[g] == pytest.approx(pmi[g] + stats.log_p(g))
        worst = min(2 * stats.log_p(g) - sum(stats.log_p(g[i:j]) for i, j in seg) for seg in segmentations(len(g)))
        assert weighted[g] == pytest.approx(worst)
    kept = ranking_scores(stats, "freq_weighted", min_pmi=0.5)
    assert set(kept) == {g for g, v in pmi.items() if v > 0.5} and kept[("a", "b")] == weighted[("a", "b")]
    with pytest.raises(ValueError, match="unknown n-gram score 'tfidf'; known: pmi, freq_weighted"):
        pmi_from_counts(stats, "tfidf")


def test_vocabulary_threshold_keeps_weak_ngrams_out_when_a_quota_exceeds_the_candidates():
    pmi = {("a", "b"): 3.0, ("c", "d"): 0.2, (",", "the", "united", "states"): -0.04, ("x", "y", "z", "w"): 2.5}
    vocab = masking_vocabulary(pmi, size=8, min_score=1.0)  # quotas 4, 2, 1, 1
    assert vocab[2] == [(("a", "b"), 3.0)] and vocab[4] == [(("x", "y", "z", "w"), 2.5)] and vocab[3] == []
    assert len(masking_vocabulary(pmi, size=8)[4]) == 1 and len(masking_vocabulary(pmi, size=8)[2]) == 2


# --------------------------------------------------------------------------------------
# Span lengths as SpanBERT's, realised
# --------------------------------------------------------------------------------------
def test_realised_span_lengths_have_spanbert_mean_at_64_tokens():
    """Spans are never cut by the budget, so the realised mean length in words stays at the
    truncated geometric's 3.80 (SpanBERT reports 3.8), not the ~2 words a cut gives at 64 tokens."""
    probs = span_length_probs(0.2, 10)
    assert float(probs @ np.arange(1, 11)) == pytest.approx(3.797, abs=1e-3)
    rng = np.random.default_rng(0)
    lengths, fractions = [], []
    for _ in range(1500):
        chunk = synthetic_chunk(rng, n_words=40)  # ~80 tokens: budget 12
        starts = {s: k for k, (s, _) in enumerate(chunk.word_spans)}
        ends = {e: k for k, (_, e) in enumerate(chunk.word_spans)}
        units = span_units(chunk.word_spans, mask_budget(len(chunk.input_ids) - 2), rng)
        lengths += [ends[e] - starts[s] + 1 for s, e in units]
        fractions.append(sum(e - s for s, e in units) / (len(chunk.input_ids) - 2))
    assert np.mean(lengths) == pytest.approx(3.80, abs=0.15)
    assert np.mean(fractions) == pytest.approx(0.15, abs=0.012)
    with pytest.raises(ValueError, match="0 < p <= 1"):
        span_length_probs(0.0, 10)


# --------------------------------------------------------------------------------------
# The distance bias
# --------------------------------------------------------------------------------------
def test_alibi_bias_is_minus_slope_times_distance_and_masks_padding():
    slopes = alibi_slopes(3, (1.0, 0.25))
    assert slopes.tolist() == [[1.0, 1.0], [0.25, 0.25], [1.0, 1.0]]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    bias = alibi_bias(mask, slopes)
    assert bias.shape == (2, 3, 4, 4)
    i, j = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    assert torch.equal(bias[0, 1], -0.25 * (i - j).abs().float())
    assert torch.equal(bias[1, 0, :, :2], -(i - j).abs().float()[:, :2])
    assert (bias[1, :, :, 2:] == torch.finfo(torch.float32).min).all()
    with pytest.raises(ValueError, match=r"attention_mask must be \(B, T\)"):
        alibi_bias(mask[None], slopes)
    with pytest.raises(ValueError, match="non-negative slopes"):
        alibi_slopes(2, (-1.0,))
    with pytest.raises(ValueError, match="non-negative slopes"):
        alibi_slopes(2, ((1.0, 2.0, 3.0),))


def test_a_directional_bias_uses_the_left_slope_for_earlier_keys_and_the_right_one_for_later_keys():
    slopes = alibi_slopes(2, ([0.5, 4.0], [4.0, 0.5]))
    assert slopes.tolist() == [[0.5, 4.0], [4.0, 0.5]]
    bias = alibi_bias(torch.ones(1, 5, dtype=torch.long), slopes)[0]  # (H, T, T)
    i, j = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij")
    d = (i - j).abs().float()
    assert torch.equal(bias[0], torch.where(j < i, -0.5 * d, -4.0 * d))  # head 0 looks left
    assert torch.equal(bias[1], torch.where(j < i, -4.0 * d, -0.5 * d))  # head 1 looks right
    assert torch.equal(bias[0], bias[1].T)  # mirror images: the model can tell left from right
    assert torch.equal(alibi_bias(torch.ones(1, 5, dtype=torch.long), torch.tensor([0.25]))[0, 0], -0.25 * d)  # (H,)


def test_the_bias_reaches_bert_attention_and_adds_no_parameters():
    torch.manual_seed(0)
    kw = dict(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_len=8, dropout=0.0)
    biased, plain = MaskedLMPretrainer(**kw, alibi=True), MaskedLMPretrainer(**kw, alibi=False)
    assert sum(p.numel() for p in biased.parameters()) == sum(p.numel() for p in plain.parameters())
    ids = torch.randint(5, 50, (1, 8))
    changed = ids.clone()
    changed[0, 6] = 5 if ids[0, 6] != 5 else 6
    attention = torch.ones_like(ids)
    far = torch.full((2,), 1e4)  # attention only to itself: position 0 cannot see position 6
    from lit_modules.pmi_masking import encode

    with torch.no_grad():
        h0, h1 = (encode(biased.mlm.bert, x, attention, far)[0, 0] for x in (ids, changed))
        p0, p1 = (encode(biased.mlm.bert, x, attention, None)[0, 0] for x in (ids, changed))
    assert torch.allclose(h0, h1, atol=1e-6) and not torch.allclose(p0, p1, atol=1e-4)


# --------------------------------------------------------------------------------------
# Held-out maskings, the floor and the shortcut gap
# --------------------------------------------------------------------------------------
NEW, YORK, OTHER = 20, 21, 22


def collocation_chunks(rng: np.random.Generator, n: int = 40) -> list[Chunk]:
    """One-token words; "new york" planted a few times in each chunk among filler words."""
    chunks = []
    for _ in range(n):
        words = [f"w{int(i)}" for i in rng.integers(5, size=50)]
        for i in rng.choice(np.arange(0, 48, 4), size=4, replace=False):
            words[i : i + 2] = ["new", "york"]
        ids = [2] + [NEW if w == "new" else YORK if w == "york" else 30 + int(w[1:]) for w in words] + [3]
        chunks.append(Chunk(np.array(ids), [(k, k + 1) for k in range(1, 51)], words))
    return chunks


def partner_model(batch: dict) -> torch.Tensor:
    """Predicts "york" after a visible "new" and "new" before a visible "york", else a wrong token:
    a model that has only the collocation shortcut."""
    ids, where = batch["input_ids"], batch["labels"] != -100
    left = torch.nn.functional.pad(ids, (1, 0))[:, :-1]
    right = torch.nn.functional.pad(ids, (0, 1))[:, 1:]
    guess = torch.where(left == NEW, YORK, torch.where(right == YORK, NEW, OTHER))
    return torch.nn.functional.one_hot(guess[where], 40).float() * 10


def test_shortcut_gap_is_one_for_a_model_that_only_knows_the_partner():
    chunks = collocation_chunks(np.random.default_rng(0))
    masker = Masker("pmi", MASK_ID, 40, vocab=frozenset({("new", "york")}))
    whole = eval_batches(chunks, "pmi_ngram", masker, seed=5, batch_size=16)
    one = eval_batches(chunks, "pmi_one_word", masker, seed=5, batch_size=16)
    for a, b in zip(whole, one):
        assert torch.equal(a["focus"], b["focus"])  # the same words scored in both conditions
        assert torch.equal(b["labels"] != -100, b["focus"])  # one word masked per n-gram
        assert ((a["labels"] != -100).sum(1) == 2 * a["focus"].sum(1)).all()  # the whole bigram masked
        assert (a["input_ids"][a["labels"] != -100] == MASK_ID).all()
    s_one, s_whole = heldout_scores(partner_model, one), heldout_scores(partner_model, whole)
    assert s_one.n_focus == s_whole.n_focus == 40 * mask_budget(50) // 2  # 7 tokens of budget: 3 bigrams per chunk
    assert (s_one.focus_acc, s_whole.focus_acc) == (1.0, 0.0)
    assert shortcut_gap(s_one, s_whole) == 1.0
    assert shortcut_gap(s_one, s_whole, on="loss") == pytest.approx(10.0, rel=1e-5)  # log(e^10 + 39) - log(1 + 39 e^-10)
    with pytest.raises(ValueError, match="unknown held-out masking 'pmi_words'"):
        eval_mask(chunks[0], "pmi_words", masker, np.random.default_rng(0))


@pytest.mark.parametrize("masking", ["random", "whole_word", "span", "pmi"])
def test_scheme_maskings_held_out_mask_every_chosen_token(masking):
    rng = np.random.default_rng(1)
    masker = Masker("pmi", MASK_ID, V, vocab=VOCAB)
    for _ in range(20):
        chunk = synthetic_chunk(rng, vocab_words=8)
        inputs, labels, focus = eval_mask(chunk, masking, masker, rng)
        chosen = labels != -100
        assert (inputs[chosen] == MASK_ID).all() and (inputs[~chosen] == chunk.input_ids[~chosen]).all()
        assert (focus == chosen).all() and 0 < chosen.sum() <= round(0.15 * (len(chunk.input_ids) - 2)) + 12


def test_the_neighbour_count_reference_mixes_bigrams_of_visible_neighbours_with_the_unigram():
    from lit_modules.pmi_masking import adjacent_reference, bigram_counts

    V = 4
    counts = bigram_counts([np.array([1, 2, 3, 1, 2])], V)  # pairs (1,2) x2, (2,3), (3,1)
    assert counts[1, 2] == 2 and counts[2, 3] == 1 and counts[3, 1] == 1 and counts.sum() == 4
    log_p = np.log(np.array([0.1, 0.3, 0.4, 0.2]))
    uni, lam = np.exp(log_p), 0.5
    # token 2 at position 1 with both neighbours visible (1 on its left, 3 on its right): the normalised geometric mean
    batch = {"input_ids": torch.tensor([[1, 1, 3, 0, 0]]), "labels": torch.tensor([[-100, 2, -100, -100, -100]])}
    fwd, bwd = np.array([0, 0, 1.0, 0]), np.array([0, 0, 1.0, 0])  # P(. | prev 1) and P(. | next 3): both token 2
    q = np.sqrt((lam * fwd + (1 - lam) * uni) * (lam * bwd + (1 - lam) * uni))
    assert adjacent_reference(counts, log_p, [batch], lam) == pytest.approx(-np.log(q[2] / q.sum()))
    # a span of two: its first token sees only its left neighbour, its last only its right one (one mixture each)
    got = adjacent_reference(counts, log_p, [{"input_ids": torch.tensor([[2, 0, 0, 2]]),
                                                "labels": torch.tensor([[-100, 3, 1, -100]])}], lam)
    left = lam * np.array([0, 0, 0, 1.0]) + (1 - lam) * uni  # token 3 after 2
    right = lam * np.array([0, 1.0, 0, 0]) + (1 - lam) * uni  # token 1 before 2 (P(prev 1 | next 2) = 1)
    assert got == pytest.approx(-(np.log(left[3]) + np.log(right[1])) / 2)
    hidden = adjacent_reference(counts, log_p, [{"input_ids": torch.tensor([[0, 0, 0]]),
                                                   "labels": torch.tensor([[3, 1, 2]])}], lam)
    assert hidden == pytest.approx(-(log_p[3] + log_p[1] + log_p[2]) / 3)  # no neighbour visible: the unigram floor
    with pytest.raises(ValueError, match="lam must be in"):
        adjacent_reference(counts, log_p, [batch], 1.5)


def test_unigram_floor_is_the_cross_entropy_of_training_frequencies():
    log_p = unigram_log_probs(np.array([5, 5, 5, 6]), vocab_size=8)  # add-one: counts 1,1,1,1,1,4,2,1 / 12
    assert np.exp(log_p).sum() == pytest.approx(1.0) and log_p[5] == pytest.approx(math.log(4 / 12))
    batch = {"labels": torch.tensor([[-100, 5, 6, -100], [7, -100, -100, 5]])}
    loss, acc = unigram_floor(log_p, [batch])
    assert loss == pytest.approx(-(2 * math.log(4 / 12) + math.log(2 / 12) + math.log(1 / 12)) / 4)
    assert acc == 0.5  # predicting token 5 everywhere


# --------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------
def verdict_rows(gaps: dict, span_loss: dict, below: dict | None = None, span_floor: float = 6.4,
                 slope: float = -1e-4, reference: dict | None = None, span_reference: float | None = None) -> pd.DataFrame:
    """Per-seed values (tuples of one length) for every scheme; a loss curve on random spans at
    steps 250..1000 falling ``slope`` nats per step to the final loss. ``reference``: per scheme, the
    neighbour-count reference's nats below the floor on its own masking; ``span_reference``: its loss
    on random spans (no reference rows without them, as in CSVs written before issue 29)."""
    rows = []
    n = len(gaps["pmi"])
    for v in ("pmi", "random", "whole_word", "span"):
        for seed in range(n):
            rows.append(dict(variant=v, seed=seed, metric="shortcut_gap", value=gaps[v][seed], step=None))
            rows.append(dict(variant=v, seed=seed, metric="heldout_loss@mask=span", value=span_loss[v][seed], step=None))
            rows.append(dict(variant=v, seed=seed, metric="floor_loss@mask=span", value=span_floor, step=None))
            rows.append(dict(variant=v, seed=seed, metric="below_floor", value=(below or {}).get(v, (0.8,) * n)[seed], step=None))
            if reference and v in reference:
                rows.append(dict(variant=v, seed=seed, metric="reference_below_floor", value=reference[v][seed], step=None))
            if span_reference is not None:
                rows.append(dict(variant=v, seed=seed, metric="reference_loss@mask=span", value=span_reference, step=None))
            rows += [dict(variant=v, seed=seed, metric="heldout_loss_curve", step=float(step),
                          value=span_loss[v][seed] + slope * (step - 1000)) for step in (250, 500, 750, 1000)]
    return pd.DataFrame(rows)


def wiggle(x: float, n: int = 5, spread: float = 0.01) -> tuple[float, ...]:
    return tuple(x + spread * (-1) ** s for s in range(n))


# 5 seeds: PMI's shortcut gap 0.17 below the three baselines', its span loss 0.1 nats below random's and whole_word's
GAPS = {"pmi": wiggle(0.02), "random": wiggle(0.19, spread=0.015), "whole_word": wiggle(0.19), "span": wiggle(0.19)}
LOSS = {"pmi": wiggle(5.5), "random": wiggle(5.6, spread=0.015), "whole_word": wiggle(5.6), "span": wiggle(5.35)}


def test_verdict_rests_on_paired_intervals_of_five_declared_comparisons():
    from benchmarks.specs.pmi_masking import COMPARISONS, claim_verdict

    holds = claim_verdict(verdict_rows(GAPS, LOSS))
    assert holds.status == "holds" and len(holds.judgements) == 5
    assert [(j.comparison.baseline, j.comparison.metric) for j in holds.judgements] == \
        [(c.baseline, c.metric) for c in COMPARISONS] == [
            ("random", "shortcut_gap"), ("whole_word", "shortcut_gap"), ("span", "shortcut_gap"),
            ("random", "heldout_loss@mask=span"), ("whole_word", "heldout_loss@mask=span")]
    gap = holds.judgements[0]  # pmi vs random, shortcut gap: baseline − pmi, positive favours PMI
    assert gap.estimate.effect == pytest.approx(0.17, abs=0.002) and gap.estimate.n == 5 and gap.estimate.low > 0.02
    assert "half the steps" in holds.evidence  # says what this scale cannot show
    # PMI worse than random on span loss, reliably, both below that floor: does not hold
    worse = dict(LOSS, random=wiggle(5.4))
    v = claim_verdict(verdict_rows(GAPS, worse))
    assert v.status == "does not hold" and v.judgements[3].estimate.high < 0
    # a gain reliably smaller than the smallest effect counted (0.005 nats, measured tightly) does not hold either
    small = dict(LOSS, whole_word=wiggle(5.505, spread=0.0102))
    assert claim_verdict(verdict_rows(GAPS, small)).status == "does not hold"
    # the span baseline's gap decides too: PMI leaning on collocations more than span does is "does not hold"
    assert claim_verdict(verdict_rows(dict(GAPS, span=wiggle(-0.02)), LOSS)).status == "does not hold"


def test_verdict_two_noisy_seeds_stay_inconclusive_and_say_how_many_would_decide():
    from benchmarks.specs.pmi_masking import claim_verdict

    gaps = {k: v[:2] for k, v in GAPS.items()}
    loss = {k: v[:2] for k, v in LOSS.items()}
    # whole_word's gap: per-seed differences +0.1 and 0.0, where more seeds of the same spread would decide
    gaps["whole_word"] = (0.13, 0.01)
    v = claim_verdict(verdict_rows(gaps, loss))
    assert v.status == "inconclusive" and v.judgements[1].status == "inconclusive"
    assert v.judgements[1].seeds_needed is not None and "seeds would decide it" in v.evidence
    one_seed = verdict_rows(GAPS, LOSS)
    assert claim_verdict(one_seed[one_seed["seed"] == 0]).status == "inconclusive"  # no interval with one seed


def test_verdict_gates_each_pair_on_models_that_learned():
    from benchmarks.specs.pmi_masking import claim_verdict

    # a model on the unigram plateau makes its comparisons inconclusive, whatever the intervals say
    plateau = claim_verdict(verdict_rows(GAPS, LOSS, below={"span": (0.8, 0.1, 0.8, 0.8, 0.8)}))
    assert plateau.status == "inconclusive" and "span seed 1 (0.10 < 0.30)" in plateau.evidence
    assert "(span: its curve would reach it after" in plateau.evidence  # its curve is on its own masking: the scale
    assert [j.status for j in plateau.judgements] == ["holds", "holds", "inconclusive", "holds", "holds"]
    pmi_flat = claim_verdict(verdict_rows(GAPS, dict(LOSS, random=wiggle(5.4)), below={"pmi": (0.29,) * 5}))
    assert pmi_flat.status == "inconclusive" and {j.status for j in pmi_flat.judgements} == {"inconclusive"}


def test_a_masking_that_hides_the_neighbours_needs_only_as_much_as_the_neighbour_count_reference_reaches():
    from benchmarks.specs.pmi_masking import claim_verdict, needed_margin

    assert needed_margin({0: 0.18, 1: 1.9}) == {0: 0.18, 1: 0.3}
    span_low = {"span": (0.2, 0.2, 0.2, 0.2, 0.2)}
    # 0.2 nats below its floor: not 0.3, but more than the reference's 0.18 on random spans: trained
    ok = claim_verdict(verdict_rows(GAPS, LOSS, below=span_low, reference={"span": (0.18,) * 5}))
    assert ok.status == "holds" and [j.status for j in ok.judgements][2] == "holds"
    # below the reference on one seed: that pair is not judged, and the line says what it needed
    short = claim_verdict(verdict_rows(GAPS, LOSS, below=span_low, reference={"span": (0.18, 0.25, 0.18, 0.18, 0.18)}))
    assert short.judgements[2].status == "inconclusive" and "span seed 1 (0.20 < 0.25)" in short.evidence
    # no reference rows (a CSV from before issue 29): the fixed 0.3 nats
    assert claim_verdict(verdict_rows(GAPS, LOSS, below=span_low)).judgements[2].status == "inconclusive"
    # a reference far below the floor does not raise the bar above 0.3
    high = claim_verdict(verdict_rows(GAPS, LOSS, below={"random": (0.35,) * 5}, reference={"random": (1.9,) * 5}))
    assert high.judgements[0].status == "holds"


def test_loss_on_random_spans_counts_only_where_both_models_are_below_its_floor():
    from benchmarks.specs.pmi_masking import claim_verdict

    # 0.25 and 0.15 nats below the floor (floor 5.75, pmi 5.502, whole_word 5.602 over the 5 seeds): not 0.3, so PMI
    # "worse" there says nothing and the shortcut gaps decide; the gate says how many steps the curves would need
    # (whole_word: 0.152 nats to go at 1e-4 nats per step after step 1,000)
    worse = dict(LOSS, random=wiggle(5.4))
    at_floor = claim_verdict(verdict_rows(GAPS, worse, span_floor=5.75))
    assert at_floor.status == "holds" and "gate closed" in at_floor.evidence
    assert [j.status for j in at_floor.judgements] == ["holds", "holds", "holds", "inconclusive", "inconclusive"]
    assert "pmi: floor − loss" in at_floor.evidence and "after at least 2,520 pretraining steps" in at_floor.evidence
    flat = claim_verdict(verdict_rows(GAPS, worse, span_floor=5.75, slope=1e-4))
    assert "not falling at this budget" in flat.evidence
    # with the gate open the same losses decide: does not hold
    assert claim_verdict(verdict_rows(GAPS, worse)).status == "does not hold"
    # where the reference is only 0.2 below that floor, 0.25 and 0.15 below it is what the gate asks for: 0.2
    reach = claim_verdict(verdict_rows(GAPS, worse, span_floor=5.75, span_reference=5.55))
    assert "gate closed, not 0.20 nats below" in reach.evidence and "whole_word: floor − loss" in reach.evidence
    assert "pmi: floor − loss" not in reach.evidence  # pmi, 0.248 below, passes; whole_word, 0.148, does not
    assert claim_verdict(verdict_rows(GAPS, worse, span_floor=5.75, span_reference=5.6)).status == "does not hold"


def test_steps_to_margin_extrapolates_the_curve_past_its_first_checkpoint():
    from benchmarks.specs.pmi_masking import steps_to_margin

    # loss − floor = 0.1 − 1e-4 (step − 250) after the first checkpoint, which is off the line: -0.3 at step 4,250
    curve = {0: [(250, 9.0), (500, 6.075), (750, 6.05), (1000, 6.025)], 1: [(500, 6.175), (750, 6.15), (1000, 6.125)]}
    assert steps_to_margin(curve, {0: 6.0, 1: 6.1}, 0.3) == pytest.approx(4250)
    assert steps_to_margin(curve, {0: 6.5, 1: 6.6}, 0.3) == 0.0  # already 0.475 below
    assert steps_to_margin({0: [(250, 6.0), (500, 6.1), (750, 6.2)]}, {0: 6.0}) == math.inf
    with pytest.raises(ValueError, match="at least 3 checkpoints"):
        steps_to_margin({0: [(250, 6.0), (500, 6.1)]}, {0: 6.0})


def test_the_cross_evaluation_matrix_is_drawn_from_every_row_of_the_run(tmp_path):
    """The report draws the matrix once, from all units' rows (mean over seeds), so no unit
    finishing last or at the same time can leave a row out."""
    import pandas as pd

    from benchmarks.units.pmi_masking import EVAL_MASKINGS, matrix_artifacts

    rows = []
    for scheme, base in (("pmi", 5.0), ("random", 6.0)):
        for seed in (0, 1):
            for m in EVAL_MASKINGS:
                rows += [dict(variant=scheme, seed=seed, step=None, metric=f"heldout_loss@mask={m}", value=base + seed),
                         dict(variant=scheme, seed=seed, step=None, metric=f"heldout_acc@mask={m}", value=0.1),
                         dict(variant=scheme, seed=seed, step=None, metric=f"floor_loss@mask={m}", value=7.0)]
            rows.append(dict(variant=scheme, seed=seed, step=None, metric="shortcut_gap", value=0.02 * (seed + 1)))
    rows.append(dict(variant="ngram_statistics", seed=0, step=None, metric="pmi_vocab_coverage", value=0.12))
    matrix_artifacts(pd.DataFrame(rows), tmp_path)
    table = (tmp_path / "pmi_masking_matrix.md").read_text()
    assert "| pmi | 5.500 / 0.100 |" in table and "| random | 6.500 / 0.100 |" in table  # means over both seeds
    assert "| 0.030 | 2 |" in table and "ngram_statistics" not in table
    assert (tmp_path / "pmi_masking_matrix.png").stat().st_size > 0
    empty = tmp_path / "none"
    empty.mkdir()
    matrix_artifacts(pd.DataFrame(rows[-1:]), empty)  # no unit measured the matrix: nothing drawn
    assert not list(empty.iterdir())
