"""GENRE (paper 6): the trie, constrained decoding, the in-batch loss, the entity data loaders."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from datamodules.entities import (
    EntityDataModule,
    Mention,
    alias_table,
    load_entity_data,
    load_kilt,
    mark_mention,
    read_kilt_jsonl,
    resolve,
    trivial_prediction,
    wiki_redirects,
)
from datamodules.standin import kilt_line  # the stand-in data's writer: one KILT record
from lit_modules.genre import GenreModule, Trie, generate_titles, in_batch_loss
from lit_modules.genre.models import END_ENT_ID, START_ENT_ID, mention_span

EOS = 2


def reference_next(seqs: list[tuple[int, ...]], prefix: tuple[int, ...]) -> list[int]:
    """What a trie must answer, by brute force over the sequences."""
    n = len(prefix)
    return sorted({s[n] for s in seqs if len(s) > n and s[:n] == prefix})


def random_titles(rng: random.Random, n: int, alphabet: int = 4, max_len: int = 5) -> list[list[int]]:
    """Titles over a tiny alphabet (ids 3..), so that many share prefixes, some repeat and some are
    prefixes of others (before their </s>)."""
    return [[rng.randrange(3, 3 + alphabet) for _ in range(rng.randint(1, max_len))] + [EOS] for _ in range(n)]


# ------------------------------------------------------------------------------ trie
def test_trie_every_prefix_returns_exactly_the_next_tokens():
    rng = random.Random(0)
    titles = random_titles(rng, 300)
    trie = Trie(titles)
    distinct = sorted(set(map(tuple, titles)))
    for s in distinct:
        for i in range(len(s) + 1):
            assert trie.get(s[:i]) == reference_next(distinct, s[:i]), s[:i]
    # prefixes that are no title's prefix, found by extending real ones with every token
    for s in distinct[:50]:
        for i in range(len(s)):
            for t in range(0, 10):
                p = s[:i] + (t,)
                assert trie.get(p) == reference_next(distinct, p)


def test_trie_shared_prefixes_and_a_title_that_prefixes_another():
    a, b, c, d = [5, 6, EOS], [5, 6, 7, EOS], [5, 8, EOS], [9, EOS]
    trie = Trie([a, b, c, d])
    assert trie.get([]) == [5, 9]
    assert trie.get([5]) == [6, 8]
    assert trie.get([5, 6]) == [EOS, 7]
    assert trie.get([5, 6, 7]) == [EOS]
    assert trie.get([5, 6, EOS]) == [] and trie.get([5, 6, 7, EOS]) == []  # complete titles
    assert trie.get([6]) == [] and trie.get([5, 7]) == [] and trie.get([5, 6, 7, EOS, 3]) == []  # not prefixes
    assert [5, 6, EOS] in trie and [5, 6] not in trie and [4] not in trie


def test_trie_empty_prefix_gives_all_first_tokens_and_len_counts_distinct():
    titles = [[7, 3, EOS], [4, EOS], [7, 3, EOS], [11, 4, EOS], [4, EOS]]
    trie = Trie(titles)
    assert trie.get([]) == [4, 7, 11]
    assert len(trie) == 3  # a title inserted twice counts once
    assert trie.num_nodes == 8
    assert trie.max_length == 3
    assert len(Trie([])) == 0 and Trie([]).get([]) == []


def test_trie_get_returns_a_fresh_python_list_of_ints():
    trie = Trie([[3, EOS], [4, EOS]])
    first = trie.get([])
    assert first == [3, 4] and all(type(t) is int for t in first)
    first.append(99)
    assert trie.get([]) == [3, 4]


def test_trie_refuses_empty_sequences_and_negative_ids():
    with pytest.raises(ValueError, match="at least one token"):
        Trie([[3, EOS], []])
    with pytest.raises(ValueError, match=">= 0"):
        Trie([[3, -4, EOS]])


# ------------------------------------------------------------------------------ constrained decoding
@pytest.mark.parametrize("pre_norm", [False, True])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_constrained_decoding_of_an_untrained_model_only_yields_kb_titles(num_beams, pre_norm):
    torch.manual_seed(0)
    vocab = 40
    model = GenreModule(vocab_size=vocab, d_model=16, layers=1, heads=2, ffn_dim=32, max_positions=32, dropout=0.0,
                        pre_norm=pre_norm).model
    rng = random.Random(1)
    titles = [[rng.randrange(6, vocab) for _ in range(rng.randint(1, 4))] + [EOS] for _ in range(12)]
    titles += [[10, 11, EOS], [10, 11, 12, EOS], [10, 11, 12, 13, EOS]]  # titles that prefix others
    kb = set(map(tuple, titles))
    trie = Trie(titles)
    ids = torch.randint(6, vocab, (16, 7))
    mask = torch.ones_like(ids)
    constrained = generate_titles(model, ids, mask, num_beams, trie.max_length, trie)
    assert len(constrained) == 16 and all(len(beams) == num_beams for beams in constrained)
    assert all(b in kb for beams in constrained for b in beams)
    free = generate_titles(model, ids, mask, num_beams, trie.max_length, None)
    assert any(b not in kb for beams in free for b in beams)  # the trie, not luck, keeps outputs in the KB


@pytest.mark.parametrize("pre_norm", [False, True])
def test_constrained_decoding_can_stop_at_a_title_that_prefixes_another(pre_norm):
    """Bias the untrained model's output layer towards </s>: the short title must come out."""
    torch.manual_seed(0)
    model = GenreModule(vocab_size=30, d_model=16, layers=1, heads=2, ffn_dim=32, max_positions=32, dropout=0.0,
                        pre_norm=pre_norm).model
    with torch.no_grad():
        model.final_logits_bias[0, EOS] = 50.0
    trie = Trie([[10, 11, EOS], [10, 11, 12, EOS]])
    ids = torch.randint(6, 30, (4, 5))
    out = generate_titles(model, ids, torch.ones_like(ids), 1, trie.max_length, trie)
    assert [beams[0] for beams in out] == [(10, 11, EOS)] * 4


@pytest.mark.parametrize("pre_norm", [False, True])
def test_teacher_forcing_shifts_labels_as_transformers_does(pre_norm):
    """Our decoder inputs and loss equal BART's / mBART's own (labels=...) with no label smoothing
    (mBART shifts its labels by another rule: the last non-pad token, here </s>, moves to the front)."""
    torch.manual_seed(0)
    module = GenreModule(vocab_size=30, d_model=16, layers=1, heads=2, ffn_dim=32, max_positions=32, dropout=0.0,
                         label_smoothing=0.0, pre_norm=pre_norm)
    labels = torch.tensor([[7, 8, 9, EOS], [10, EOS, -100, -100]])
    batch = dict(input_ids=torch.randint(6, 30, (2, 5)), attention_mask=torch.ones(2, 5, dtype=torch.long), labels=labels)
    expected = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    assert torch.allclose(module.loss(batch), expected, atol=1e-6)


def test_mention_span_covers_the_marked_tokens_only():
    S, E = START_ENT_ID, END_ENT_ID
    ids = torch.tensor([[S, 7, 8, E, 9, 10, 1], [11, 12, S, 13, E, 14, 1], [11, 12, 13, 1, 1, 1, 1]])
    mask = (ids != 1).long()
    assert mention_span(ids, mask).long().tolist() == [[1, 1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]]


@pytest.mark.parametrize("pre_norm", [False, True])
def test_dual_encoder_pools_a_mention_over_its_span_and_a_title_over_all_tokens(pre_norm):
    from lit_modules.genre import DualEncoderModule

    torch.manual_seed(0)
    de = DualEncoderModule(vocab_size=30, d_model=16, layers=1, heads=2, ffn_dim=32, max_positions=32, dropout=0.0,
                           pre_norm=pre_norm).eval()
    ids = torch.tensor([[START_ENT_ID, 7, 8, END_ENT_ID, 9, 10, 1]])
    mask = (ids != 1).long()
    with torch.no_grad():
        h = de.mention_encoder(input_ids=ids, attention_mask=mask).last_hidden_state[0]
        assert torch.allclose(de.encode_mentions(ids, mask)[0], h[:4].mean(0), atol=1e-6)
        de.hparams.pool = "mean"
        assert torch.allclose(de.encode_mentions(ids, mask)[0], h[:6].mean(0), atol=1e-6)
        t = de.title_encoder(input_ids=ids, attention_mask=mask).last_hidden_state[0]
        assert torch.allclose(de.encode_titles(ids, mask)[0], t[:6].mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="pool"):
        DualEncoderModule(vocab_size=30, d_model=16, pool="cls")


# ------------------------------------------------------------------------------ in-batch negatives
def test_in_batch_loss_matches_the_softmax_over_the_batch_and_masks_repeated_titles():
    torch.manual_seed(0)
    q, e = torch.randn(4, 8), torch.randn(4, 8)
    entity = torch.tensor([0, 1, 2, 3])
    s = q @ e.T
    expected = -torch.stack([s[i, i] - torch.logsumexp(s[i], 0) for i in range(4)]).mean()
    assert torch.allclose(in_batch_loss(q, e, entity), expected, atol=1e-6)
    dup = torch.tensor([0, 1, 0, 3])  # rows 0 and 2 share a title: neither is the other's negative
    keep = [[0, 1, 3], [0, 1, 2, 3], [1, 2, 3], [0, 1, 2, 3]]
    expected = -torch.stack([s[i, i] - torch.logsumexp(s[i, keep[i]], 0) for i in range(4)]).mean()
    assert torch.allclose(in_batch_loss(q, e, dup), expected, atol=1e-6)


# ------------------------------------------------------------------------------ data
def test_mark_mention_and_the_trivial_baselines():
    m = Mention("paris", "he lived in", "for ten years", "Paris")
    assert mark_mention(m, 2) == "lived in [START_ENT] paris [END_ENT] for ten"
    assert mark_mention(m, 0) == "[START_ENT] paris [END_ENT]"
    assert m.is_exact and not Mention("Paris", "", "", "Paris, Texas").is_exact
    kb_lower = {"paris": "Paris", "paris, texas": "Paris, Texas"}
    train = [Mention("Paris", "", "", "Paris, Texas")] * 2 + [Mention("paris", "", "", "Paris")]
    aliases = alias_table(train)
    assert aliases == {"paris": "Paris, Texas"}
    assert trivial_prediction(m, kb_lower) == "Paris"
    assert trivial_prediction(m, kb_lower, aliases) == "Paris, Texas"
    assert trivial_prediction(Mention("Lyon", "", "", "Lyon"), kb_lower) is None


def test_gensim_links_split_by_article_with_every_gold_title_in_the_kb():
    data = load_entity_data("gensim_wiki", seed=0)
    docs = [{m.doc for m in part} for part in (data.train, data.validation, data.test)]
    assert not (docs[0] & docs[1]) and not (docs[0] & docs[2]) and not (docs[1] & docs[2])
    kb = set(data.kb)
    assert len(kb) == len(data.kb) > 10000 and all(m.entity in kb for part in (data.train, data.test) for m in part)
    assert len(data.train) + len(data.validation) + len(data.test) > 25000
    redirects = wiki_redirects()
    assert resolve("AccessibleComputing", redirects) == "Computer accessibility"
    assert not any(m.entity in redirects for m in data.train)  # redirects resolved
    assert sum(bool(m.left or m.right) for m in data.test) > 0.8 * len(data.test)


def test_kilt_jsonl_reads_meta_or_the_marked_input_and_skips_unanswered_lines(tmp_path):
    path = tmp_path / "aidayago2-train-kilt.jsonl"
    path.write_text("\n".join([
        kilt_line(0, "EU rejects", "German", "call to boycott", "Germany"),
        kilt_line(1, "Peter Blackburn", "BRUSSELS", "1996-08-22", "Brussels", meta=False),
        kilt_line(2, "no", "answer", "here", None),
        "",
    ]))
    rows = read_kilt_jsonl(path)
    assert rows == [Mention("German", "EU rejects", "call to boycott", "Germany", "q0"),
                    Mention("BRUSSELS", "Peter Blackburn", "1996-08-22", "Brussels", "q1")]
    (tmp_path / "aidayago2-dev-kilt.jsonl").write_text(kilt_line(3, "in", "Paris", "today", "Paris") + "\n")
    (tmp_path / "kb_titles.txt").write_text("Germany\nBrussels\nParis\nLyon\n")
    data = load_kilt("aida", tmp_path)
    assert data.kb == ["Brussels", "Germany", "Lyon", "Paris"] and len(data.train) == 2 and len(data.test) == 1


def test_kilt_bad_input_gives_one_line_errors(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="one JSON object per line"):
        read_kilt_jsonl(bad)
    bad.write_text(json.dumps({"input": "no markers", "output": [{"answer": "X"}]}) + "\n")
    with pytest.raises(ValueError, match=r"\[START_ENT\]"):
        read_kilt_jsonl(bad)
    with pytest.raises(FileNotFoundError, match="aidayago2-train-kilt.jsonl"):
        load_kilt("aida", tmp_path)
    with pytest.raises(ValueError, match="unknown entity dataset 'kilt'"):
        load_entity_data("kilt")


def write_tiny_aida(tmp_path, repeats: int) -> None:
    """A KILT AIDA train file of six city mentions times ``repeats``, and a one-line dev file."""
    train = "\n".join(kilt_line(i, "the city of", name, "is large", name) for i, name in
                      enumerate(["Paris", "Lyon", "Nice", "Paris", "Lille", "Metz"] * repeats))
    (tmp_path / "aidayago2-train-kilt.jsonl").write_text(train + "\n")
    (tmp_path / "aidayago2-dev-kilt.jsonl").write_text(kilt_line(99, "in", "Nice", "now", "Nice") + "\n")


def test_datamodule_batches_feed_both_models(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLRBENCH_CACHE", str(tmp_path))
    write_tiny_aida(tmp_path, repeats=3)
    dm = EntityDataModule("aida", str(tmp_path), context_words=2, vocab_size=300, batch_size=4)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and batch["labels"].shape == batch["title_ids"].shape
    for ids, labels, e in zip(batch["title_ids"], batch["labels"], batch["entity"]):
        n = len(dm.title_ids[int(e)])
        assert ids[:n].tolist() == dm.title_ids[int(e)] and ids[n - 1] == EOS
        assert (labels[n:] == -100).all()
    module = GenreModule(vocab_size=dm.tokenizer.get_vocab_size(), d_model=16, layers=1, heads=2, ffn_dim=32)
    loss = module.loss(batch)
    assert math.isfinite(loss.item())
    # mention first: the same tokens, the marked mention moved to the front
    first = EntityDataModule("aida", str(tmp_path), context_words=2, vocab_size=300, source_order="mention_first")
    first.setup()
    start, end = dm.tokenizer.token_to_id("[START_ENT]"), dm.tokenizer.token_to_id("[END_ENT]")
    for a, b in zip(dm.encode_sources(dm.data.train), first.encode_sources(first.data.train)):
        i, j = a.index(start), a.index(end)
        assert b == a[i : j + 1] + a[:i] + a[j + 1 :] and b[0] == start
    with pytest.raises(ValueError, match="source_order"):
        EntityDataModule("aida", str(tmp_path), source_order="reversed")


def test_title_pairs_add_every_kb_title_as_a_mention_of_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLRBENCH_CACHE", str(tmp_path))
    write_tiny_aida(tmp_path, repeats=3)
    plain = EntityDataModule("aida", str(tmp_path), context_words=2, vocab_size=300, batch_size=4)
    paired = EntityDataModule("aida", str(tmp_path), context_words=2, vocab_size=300, batch_size=4, title_pairs=True)
    assert plain.training_mentions() == list(plain.data.train)
    mentions = paired.training_mentions()
    extra = mentions[len(paired.data.train):]
    assert mentions[: len(paired.data.train)] == list(paired.data.train)
    assert [m.entity for m in extra] == paired.data.kb and all(m.mention == m.entity and not m.left and not m.right for m in extra)
    start, end = paired.tokenizer.token_to_id("[START_ENT]"), paired.tokenizer.token_to_id("[END_ENT]")
    for source, (ids, e) in zip(paired.encode_sources(extra), paired.dataset(extra)):
        assert source == ids and source[0] == start and source[-1] == end  # the marked title and nothing else
        assert source[1:-1] == paired.title_ids[e][:-1]  # the title's own tokens (its target, without </s>)
    n_batches = len(paired.train_dataloader())
    assert n_batches == (len(paired.data.train) + len(paired.data.kb)) // 4 and n_batches > len(plain.train_dataloader())


# ------------------------------------------------------------------------------ the verdict
NOISE = [0.004, -0.006, 0.002, -0.003, 0.005, -0.001, 0.0, -0.004]  # per-seed jitter, mean -0.000375


def genre_rows(genre: list[float], dual: list[float], trivial: list[float] | None = None, trie_mb: float = 1.0,
               copy: float | None = 0.99):
    import pandas as pd

    trivial = trivial if trivial is not None else [0.4] * len(genre)
    rows = [dict(variant=v, seed=s, metric="acc_at_1", value=x, step=None)
            for v, xs in (("genre", genre), ("dual_encoder", dual), ("bm25", [0.5] * len(genre))) for s, x in enumerate(xs)]
    rows += [dict(variant="genre", seed=s, metric="trivial_acc", value=x, step=None) for s, x in enumerate(trivial)]
    rows += [dict(variant=v, seed=s, metric="index_mb", value=mb, step=None)
             for v, mb in (("genre", trie_mb), ("dual_encoder", 10.0)) for s in range(len(genre))]
    if copy is not None:
        rows += [dict(variant="genre", seed=s, metric="acc_at_1_exact", value=copy + 0.002 * (-1) ** s, step=None)
                 for s in range(len(genre))]
    return pd.DataFrame(rows)


def test_verdict_is_a_noninferiority_test_at_the_declared_margin():
    from scipy import stats

    from benchmarks.specs.genre import MARGIN, PRIMARY, claim_verdict

    assert PRIMARY.kind == "noninferior" and PRIMARY.margin == MARGIN == 0.03 and PRIMARY.source
    dual = [0.75 + e for e in NOISE]
    # 8 seeds, genre 1 point below the dual encoder (within the 3-point margin): holds
    genre = [d - 0.01 + e / 2 for d, e in zip(dual, reversed(NOISE))]
    v = claim_verdict(genre_rows(genre, dual))
    (j,) = v.judgements  # no non-trivial / unseen rows: no lines beside
    assert v.status == "holds" and j.estimate.n == 8
    diffs = [g - d for g, d in zip(genre, dual)]
    low, high = stats.t.interval(0.90, len(diffs) - 1, loc=sum(diffs) / 8, scale=stats.sem(diffs))
    assert j.estimate.low == pytest.approx(low) and j.estimate.high == pytest.approx(high) and low > -MARGIN
    # memory and validity are measurements, not conditions: a trie larger than the dense index changes nothing
    assert claim_verdict(genre_rows(genre, dual, trie_mb=50.0)).status == "holds"
    # 8 seeds, genre 8 points below: the 90 % interval lies below -margin
    assert claim_verdict(genre_rows([d - 0.08 + e for d, e in zip(dual, reversed(NOISE))], dual)).status == "does not hold"
    # 1 point below but 5 points apart from seed to seed: not decided at 8 seeds
    noisy = [d - 0.01 + 10 * e for d, e in zip(dual, reversed(NOISE))]
    assert claim_verdict(genre_rows(noisy, dual)).status == "inconclusive"
    # 2 seeds whose differences disagree (+0.01, -0.04): inconclusive, with the seeds that would decide it
    v2 = claim_verdict(genre_rows([0.76, 0.71], [0.75, 0.75], trivial=[0.36, 0.31]))
    assert v2.status == "inconclusive" and v2.judgements[0].seeds_needed and v2.judgements[0].seeds_needed > 2
    assert "seeds would decide it" in v2.evidence


def test_verdict_is_inconclusive_unless_both_models_clear_the_exact_title_baseline_by_the_margin():
    from benchmarks.specs.genre import claim_verdict

    dual = [0.75 + e for e in NOISE]
    genre = [d - 0.01 + e / 2 for d, e in zip(dual, reversed(NOISE))]
    # genre beats the string match by only 2 points: the comparison alone would hold, the gate makes it inconclusive
    close = [g - 0.02 for g in genre]
    v = claim_verdict(genre_rows(genre, dual, trivial=close))
    assert v.status == "inconclusive" and "exact-title baseline" in v.evidence and "genre: model − floor" in v.evidence
    assert v.judgements[0].estimate.low > -0.03  # the interval is kept
    # no exact-title rows: the floor is unknown, so not shown
    assert claim_verdict(genre_rows(genre, dual).query("metric != 'trivial_acc'")).status == "inconclusive"
    missing = claim_verdict(genre_rows(genre, dual).query("variant != 'dual_encoder'"))
    assert missing.status == "inconclusive" and "missing acc_at_1 for dual_encoder" in missing.evidence


def test_verdict_waits_for_genre_to_copy_exact_titles_and_reports_the_harder_mentions_beside():
    import pandas as pd

    from benchmarks.specs.genre import COPY_GATE, claim_verdict

    dual = [0.75 + e for e in NOISE]
    genre = [d - 0.01 + e / 2 for d, e in zip(dual, reversed(NOISE))]
    # copying exact titles at 0.87 (issue 27: 0.864 / 0.884 at quick): the comparison would hold, the gate says no
    v = claim_verdict(genre_rows(genre, dual, copy=0.87))
    assert COPY_GATE == 0.97 and v.status == "inconclusive" and "copies mentions that are exactly their title at 0.870" in v.evidence
    assert claim_verdict(genre_rows(genre, dual, copy=None)).status == "inconclusive"  # not shown
    # non-trivial and unseen lines are judged and shown, but only the overall line decides
    harder = genre_rows(genre, dual)
    extra = [dict(variant=var, seed=s, metric=m, value=x - (0.2 if var == "genre" else 0.0), step=None)
             for m in ("acc_at_1_nontrivial", "acc_at_1_unseen") for var, xs in (("genre", genre), ("dual_encoder", dual))
             for s, x in enumerate(xs)]
    v = claim_verdict(pd.concat([harder, pd.DataFrame(extra)]))
    overall, nontrivial, unseen = v.judgements
    assert v.status == "holds" and nontrivial.status == unseen.status == "does not hold"
    assert "(reported)" in nontrivial.comparison.label and nontrivial.comparison.metric == "acc_at_1_nontrivial"


def test_bm25_gives_no_answer_to_a_query_made_only_of_stop_words():
    from lit_modules.genre import bm25_index, bm25_search

    retriever = bm25_index(["The Who", "Who Framed Roger Rabbit", "Rabbit"])
    docs = bm25_search(retriever, ["the of", "roger", "zebra"], k=2)
    assert docs[0].tolist() == [-1, -1] and docs[2].tolist() == [-1, -1]  # no indexed word: no arbitrary titles
    assert docs[1, 0] == 1


def test_titles_equal_after_tokenization_are_one_entity_for_scoring():
    """"Apple" and "APPLE" lower-case to one token sequence: a model that predicts either is right for both."""
    from types import SimpleNamespace

    from benchmarks.units.genre import accuracy_rows, canonical_titles

    title_ids = [[7, 8, 2], [9, 2], [7, 8, 2], [10, 2]]  # KB indices 0 and 2 are one sequence
    assert canonical_titles(title_ids).tolist() == [0, 1, 0, 3]
    kb = ["Apple", "Banana", "APPLE", "Cherry"]
    dm = SimpleNamespace(title_ids=title_ids, kb_index={t: i for i, t in enumerate(kb)},
                         data=SimpleNamespace(seen_entities=lambda: set()))
    test = [Mention("apple", "", "", "APPLE"), Mention("apple", "", "", "Apple"), Mention("x", "", "", "Cherry")]
    rows = {r.metric: r.value for r in accuracy_rows([[0, 1], [2, 3], [1, 0]], test, dm, 2)}
    assert rows["acc_at_1"] == pytest.approx(2 / 3) and rows["recall_at_k@k=2"] == pytest.approx(2 / 3)


def test_tuning_reads_the_validation_split_with_equal_tries_and_its_own_row_names():
    from benchmarks.registry import get_benchmark
    from benchmarks.unit import Measurement
    from benchmarks.units.genre import on_split

    t = get_benchmark("genre").tuning
    assert t.score == "acc_at_1@split=validation"
    assert len(t.points("genre")) == len(t.points("dual_encoder")) == 4
    assert all(p["eval_split"] == "validation" for v in t.grids for p in t.points(v))
    rows = on_split([Measurement("acc_at_1", 0.5), Measurement("recall_at_k@k=5", 0.9)], "validation")
    assert [r.metric for r in rows] == ["acc_at_1@split=validation", "recall_at_k@k=5,split=validation"]
    assert on_split(rows, "test") == rows


# ------------------------------------------------------------------------------ pre-training (issue 27)
def infill_spans(source: list[int], target: list[int], mask_id: int) -> list[int] | None:
    """Lengths of the spans each mask of ``source`` stands for, if the kept tokens of ``source`` are ``target``'s in
    order with each mask replacing one contiguous (possibly empty) run; None otherwise. Greedy matching is exact here
    because no two masks touch."""
    spans, t = [], 0
    for i, tok in enumerate(source):
        if tok == mask_id:
            nxt = source[i + 1] if i + 1 < len(source) else None
            start = t
            if nxt is None:
                t = len(target)
            else:
                while t < len(target) and target[t] != nxt:
                    t += 1
                if t == len(target):
                    return None
            spans.append(t - start)
        else:
            if t >= len(target) or target[t] != tok:
                return None
            t += 1
    return spans if t == len(target) else None


def test_text_infilling_masks_thirty_percent_in_poisson_spans_each_one_mask_token():
    import numpy as np

    from lit_modules.genre.pretrain import MASK_ID, text_infilling

    rng = np.random.default_rng(0)
    masked = total = 0
    lengths: list[int] = []
    for _ in range(3000):
        L = int(rng.integers(1, 60))
        # distinct ids, so that the kept tokens' order and every span can be read back unambiguously
        tokens = (np.arange(L) + 10).tolist()
        source = text_infilling(tokens, 0.3, 3.0, rng)
        assert MASK_ID not in tokens
        assert all(not (a == b == MASK_ID) for a, b in zip(source, source[1:]))  # spans never touch: one mask each
        spans = infill_spans(source, tokens, MASK_ID)
        assert spans is not None, (tokens, source)
        assert [t for t in source if t != MASK_ID] == [t for t in tokens if t in set(source)]  # kept, in order
        assert sum(spans) == L - sum(t != MASK_ID for t in source)
        masked += sum(spans)
        total += L
        lengths += spans
    assert abs(masked / total - 0.3) < 0.01  # E[n] = 0.3 L exactly (stochastic rounding), 45k tokens
    # the spans are Poisson(3) draws, the last cut to the budget: mean a little below 3, 0-length spans ~ e^-3 of them
    lengths = np.array(lengths)
    assert 2.3 < lengths.mean() < 3.0
    assert 0.02 < (lengths == 0).mean() < 0.08


def test_text_infilling_batches_target_the_original_text():
    import numpy as np

    from lit_modules.genre.pretrain import MASK_ID, InfillingCollate

    texts = [[7, 8, 9, 10, 11, 12, 13, 14], [20, 21, 22], [30]]
    batch = InfillingCollate(0.3, 3.0, seed=0)(texts)
    for text, ids, mask, labels in zip(texts, batch["input_ids"], batch["attention_mask"], batch["labels"]):
        assert labels[labels != -100].tolist() == text + [EOS]
        source = ids[mask.bool()].tolist()
        assert infill_spans(source, text, MASK_ID) is not None
    # the same seed, the same corruptions
    again = InfillingCollate(0.3, 3.0, seed=0)(texts)
    assert torch.equal(again["input_ids"], batch["input_ids"]) and np.all(again["labels"].numpy() == batch["labels"].numpy())


def test_span_lengths_sum_to_the_budget():
    import numpy as np

    from lit_modules.genre.pretrain import span_lengths

    rng = np.random.default_rng(1)
    for n in (0, 1, 2, 5, 17, 40):
        for _ in range(50):
            lengths = span_lengths(n, 3.0, rng)
            assert sum(lengths) == n and all(k >= 0 for k in lengths)


def test_mlm_masks_fifteen_percent_of_regular_tokens_and_never_a_special_one():
    from lit_modules.genre.pretrain import MASK_ID, NUM_SPECIAL, mlm_mask

    g = torch.Generator().manual_seed(0)
    vocab = 500
    ids = torch.randint(NUM_SPECIAL, vocab, (400, 64), generator=g)
    ids[:, :3] = torch.tensor([START_ENT_ID, END_ENT_ID, 0])  # specials that must never be chosen
    ids[:, -5:] = 1  # padding
    inputs, labels = mlm_mask(ids, 0.15, vocab, g)
    chosen = labels != -100
    eligible = ids >= NUM_SPECIAL
    assert not chosen[~eligible].any() and torch.equal(inputs[~eligible], ids[~eligible])
    rate = chosen[eligible].float().mean().item()
    assert abs(rate - 0.15) < 0.005  # 28k eligible tokens: sd 0.002
    assert torch.equal(labels[chosen], ids[chosen])
    as_mask = (inputs == MASK_ID) & chosen
    changed = (inputs != ids) & (inputs != MASK_ID) & chosen
    kept = (inputs == ids) & chosen
    n = chosen.sum().item()
    assert abs(as_mask.sum().item() / n - 0.8) < 0.02 and abs(changed.sum().item() / n - 0.1) < 0.015
    assert abs(kept.sum().item() / n - 0.1) < 0.015  # includes the rare random draw of the same token
    assert (inputs[changed] >= NUM_SPECIAL).all() and (inputs[changed] < vocab).all()
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_masked_lm_initialises_both_dual_encoder_towers():
    from lit_modules.genre import DualEncoderModule
    from lit_modules.genre.pretrain import MaskedLMCollate, MaskedLMModule, init_dual_encoder

    torch.manual_seed(0)
    arch = dict(vocab_size=40, d_model=16, layers=1, heads=2, ffn_dim=32, max_positions=32, dropout=0.0, pre_norm=True)
    mlm = MaskedLMModule(**arch)
    batch = MaskedLMCollate(0.5, 40, seed=0)([[7, 8, 9, 10, 11, 12], [13, 14, 15]])
    loss = mlm.loss(batch)
    loss.backward()
    assert math.isfinite(loss.item()) and all(p.grad is not None for p in mlm.parameters())
    de = DualEncoderModule(**arch)
    init_dual_encoder(de, mlm.encoder_state())
    ids = torch.tensor([[7, 8, 9, 1]])
    mask = (ids != 1).long()
    with torch.no_grad():
        want = mlm.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        for tower in (de.mention_encoder, de.title_encoder):
            assert torch.allclose(tower(input_ids=ids, attention_mask=mask).last_hidden_state, want)
    assert de.mention_encoder.embed_tokens is de.title_encoder.embed_tokens is de.shared
    assert torch.equal(de.shared.weight, mlm.shared.weight)


def test_length_batches_cover_each_text_once_per_epoch_with_similar_lengths():
    from lit_modules.genre.pretrain import LengthBatches

    lengths = [5] * 40 + [48] * 40 + [3] * 9
    sampler = LengthBatches(lengths, 8, seed=0)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 11
    flat = [i for b in first for i in b]
    assert len(flat) == len(set(flat)) == 88
    assert sum(1 for b in first if len({lengths[i] for i in b}) > 1) <= 2  # only batches at a boundary mix lengths
    assert first != second  # a new order every epoch


def test_pretraining_texts_come_from_training_articles_only():
    from datamodules.entities import gensim_training_articles

    data = load_entity_data("gensim_wiki", seed=1)
    titles = {a.title for a in gensim_training_articles(seed=1)}
    assert titles == {m.doc for m in data.train}  # the articles whose links are the training mentions
    assert not titles & {m.doc for m in data.validation + data.test}


def test_pretrained_weights_are_cached_per_seed_and_reused(tmp_path, monkeypatch):
    from benchmarks.registry import get_benchmark
    from benchmarks.unit import UnitContext
    from benchmarks.units import genre as units

    monkeypatch.setenv("ICLRBENCH_CACHE", str(tmp_path))
    write_tiny_aida(tmp_path, repeats=6)
    config = {**get_benchmark("genre").config("smoke", "genre"), "vocab_size": 300, "pretrain_batch_size": 4,
              "pretrain_steps": 2}
    calls = []
    real = units.pretrain
    monkeypatch.setattr(units, "pretrain", lambda *a: calls.append(a[2]) or real(*a))

    def ctx(seed: int, **changes) -> UnitContext:
        return UnitContext(benchmark="genre", name="genre", seed=seed, preset="smoke", dataset="aida", config={**config, **changes},
                           data_dir=str(tmp_path), quiet=True, artifacts_dir=str(tmp_path / "run"), logger="none")

    dm = ctx(0).datamodule()
    dm.setup()
    texts = units.pretraining_texts(dm, 8)
    assert texts[-len(dm.kb_index):] == [s[:-1] for s in dm.title_ids] and all(0 < len(t) <= 8 for t in texts)
    first = units.pretrained(ctx(0), dm, "infill")
    again = units.pretrained(ctx(0), dm, "infill")
    assert calls == ["infill"]  # the second call loads, it does not train
    assert again["pretrain_s"] == first["pretrain_s"] and all(torch.equal(again["state"][k], v) for k, v in first["state"].items())
    units.pretrained(ctx(1), dm, "infill")  # another seed, another pre-training
    units.pretrained(ctx(0, mask_ratio=0.2), dm, "infill")  # another setting too
    units.pretrained(ctx(0), dm, "mlm")
    assert calls == ["infill", "infill", "infill", "mlm"]
    assert units.pretrained(ctx(0, pretrain_steps=0), dm, "infill") is None


# ------------------------------------------------------------------------------ a pre-trained checkpoint
def write_tiny_bart(folder, texts: list[str]):
    """A BART-style checkpoint as ``save_pretrained`` writes one (facebook/bart-large is a download): a byte-level
    BPE with ``<s> <pad> </s> <unk>`` as ids 0..3 and no mention markers, a 1-layer BART with BART's generation
    defaults (forced ``<s>``, trigram blocking), seeded random weights."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    model = BartForConditionalGeneration(BartConfig(
        vocab_size=tok.get_vocab_size(), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_bos_token_id=0,
        no_repeat_ngram_size=3))
    model.save_pretrained(folder)
    return tok, model


def test_both_models_start_from_a_checkpoint_with_its_tokenizer_and_the_markers_added(tmp_path, monkeypatch):
    """``checkpoint``: GENRE fine-tunes the checkpoint itself, both dual-encoder towers start from its encoder, the
    tokenizer is its BPE plus the two markers (new ids, which the dual encoder's span pooling must use), and the
    pre-training stage is skipped; a checkpoint that cannot be loaded fails in one line."""
    from benchmarks.registry import get_benchmark
    from benchmarks.unit import UnitContext
    from benchmarks.units import genre as units
    from lit_modules.genre import DualEncoderModule

    monkeypatch.setenv("ICLRBENCH_CACHE", str(tmp_path))
    write_tiny_aida(tmp_path, repeats=4)
    folder = tmp_path / "tiny-bart"
    tok, saved = write_tiny_bart(folder, ["the city of paris is large", "lyon nice lille metz"] * 20)
    base = tok.get_vocab_size()
    config = {**get_benchmark("genre").config("smoke", "genre"), "checkpoint": str(folder), "eval_max_mentions": 8}

    def ctx(variant: str) -> UnitContext:
        return UnitContext(benchmark="genre", name=variant, seed=0, preset="smoke", dataset="aida", config=config,
                           data_dir=str(tmp_path), quiet=True, artifacts_dir=str(tmp_path / "run"), logger="none")

    dm = ctx("genre").datamodule()
    dm.setup()
    start, end = dm.tokenizer.token_to_id("[START_ENT]"), dm.tokenizer.token_to_id("[END_ENT]")
    assert (start, end) == (base, base + 1) and dm.tokenizer.get_vocab_size() == base + 2
    source = dm.encode_sources(dm.data.train[:1])[0]
    assert source[0] == start and end in source  # mention first, marked by the added ids
    # GENRE: the checkpoint's weights (grown by two marker rows), train mode, neutral generation defaults
    genre = GenreModule(vocab_size=base + 2, checkpoint=str(folder))
    assert genre.model.get_input_embeddings().num_embeddings == base + 2 and all(m.training for m in genre.modules())
    assert torch.equal(genre.model.get_input_embeddings().weight[:base], saved.get_input_embeddings().weight)
    fc1 = "model.encoder.layers.0.fc1.weight"
    assert torch.equal(genre.model.state_dict()[fc1], saved.state_dict()[fc1])
    assert genre.model.generation_config.forced_bos_token_id is None and genre.model.generation_config.no_repeat_ngram_size == 0
    de = DualEncoderModule(vocab_size=base + 2, checkpoint=str(folder), span_ids=(start, end))
    for tower in (de.mention_encoder, de.title_encoder):
        assert torch.equal(tower.layers[0].fc1.weight, saved.state_dict()[fc1]) and tower.embed_tokens is de.shared
    assert de.mention_encoder.layers[0].fc1.weight is not de.title_encoder.layers[0].fc1.weight  # two towers
    ids = torch.tensor([source])
    span = mention_span(ids, torch.ones_like(ids), start, end)[0]
    assert span.tolist() == [i <= source.index(end) for i in range(len(source))]
    with torch.no_grad():  # pooled over the marked span, found by the added ids (eval: no dropout)
        de.eval()
        h = de.mention_encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        assert torch.allclose(de.encode_mentions(ids, torch.ones_like(ids))[0], h[span].mean(0), atol=1e-6)
    # the units: no pre-training rows, the checkpoint's parameter count, the markers' ids passed on
    built = []
    monkeypatch.setattr(units, "DualEncoderModule", lambda **kw: built.append(kw["span_ids"]) or DualEncoderModule(**kw))
    for variant, model in (("genre", genre), ("dual_encoder", de)):
        rows = {r.metric: r.value for r in units.run(ctx(variant))}
        assert 0 <= rows["acc_at_1"] <= 1 and "pretrain_s" not in rows
        assert rows["params"] == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert built == [(start, end)] and units.full_params(config) == sum(p.numel() for p in genre.parameters())
    with pytest.raises(FileNotFoundError, match="cannot load seq2seq checkpoint .*offline"):
        GenreModule(checkpoint=str(tmp_path / "missing"))
    from datamodules import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="cannot load tokenizer"):  # the preflight's: exit 3
        EntityDataModule("aida", str(tmp_path), tokenizer_name=str(tmp_path / "missing")).prepare_data()
