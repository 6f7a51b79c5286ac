"""ANCE (paper 7): tests that fail if the loss, the negative samplers, the index refresh, the
retrieval metrics or the data loaders were wrong."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from datamodules.corpora import Article
from datamodules.retrieval import (
    RetrievalDataModule,
    article_passages,
    inverse_cloze,
    load_beir,
    load_msmarco,
    load_retrieval,
)
from lit_modules.ance import (
    AnnRefresh,
    DenseRetriever,
    DualEncoder,
    TableNegatives,
    bm25_index,
    bm25_search,
    contrastive_loss,
    encode,
    depth_from_fraction,
    hard_negatives,
    in_batch_columns,
    in_batch_negatives,
    init_from_corpus,
    random_negatives,
    retrieval_metrics,
    token_idf,
)


# ------------------------------------------------------------------------------ the loss
def test_contrastive_loss_equals_the_formula():
    g = torch.Generator().manual_seed(0)
    q, pos, neg = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    expected = 0.0
    for b in range(3):
        scores = [float(q[b] @ pos[b])] + [float(q[b] @ neg[b, j]) for j in range(4)]
        expected += -(scores[0] - math.log(sum(math.exp(s) for s in scores)))
    assert float(contrastive_loss(q, pos, neg)) == pytest.approx(expected / 3, rel=1e-5)


def test_contrastive_loss_gradient_raises_the_positive_score():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(4, 8, generator=g)
    pos = torch.randn(4, 8, generator=g, requires_grad=True)
    neg = torch.randn(4, 3, 8, generator=g, requires_grad=True)
    contrastive_loss(q, pos, neg).backward()
    with torch.no_grad():
        before_pos, before_neg = (q * pos).sum(-1), torch.einsum("bd,bnd->bn", q, neg)
        after_pos = (q * (pos - 0.1 * pos.grad)).sum(-1)
        after_neg = torch.einsum("bd,bnd->bn", q, neg - 0.1 * neg.grad)
    assert (after_pos > before_pos).all() and (after_neg < before_neg).all()
    # the gradient wrt pos is -(1 - p_pos) q / B: along +q
    assert torch.allclose(torch.nn.functional.cosine_similarity(-pos.grad, q), torch.ones(4), atol=1e-5)


def test_contrastive_loss_refuses_bad_shapes():
    with pytest.raises(ValueError, match="neg must be"):
        contrastive_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="q and pos"):
        contrastive_loss(torch.zeros(2, 3), torch.zeros(3, 3), torch.zeros(2, 1, 3))


def test_in_batch_negatives_are_the_other_positives():
    pos = torch.arange(8.0).view(4, 2)
    neg = in_batch_negatives(pos)
    assert neg.shape == (4, 3, 2)
    for b in range(4):
        assert sorted(neg[b, :, 0].tolist()) == [pos[j, 0].item() for j in range(4) if j != b]


# ------------------------------------------------------------------------------ negatives
def small_space(P: int = 50, Q: int = 12, D: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(Q, D, generator=g), torch.randn(P, D, generator=g)


def test_in_batch_columns_never_pick_the_rows_own_passage_and_draw_as_many_as_the_others():
    positive = torch.tensor([3, 7, 3, 9, 7, 1])  # rows 0 and 2 share passage 3, rows 1 and 4 passage 7
    for seed in range(20):
        cols, valid = in_batch_columns(positive, 3, torch.Generator().manual_seed(seed))
        assert cols.shape == valid.shape == (6, 3) and valid.all()
        assert (positive[cols] != positive[:, None]).all()  # never a false negative (the diagonal or a same-passage column)
        assert all(len(set(r.tolist())) == 3 for r in cols)  # without replacement
    # a row with fewer other passages than n: the extra columns are marked invalid, and masked out of the loss
    cols, valid = in_batch_columns(torch.tensor([5, 5, 5, 8]), 3)
    assert valid.sum(1).tolist() == [1, 1, 1, 3]
    assert (torch.tensor([5, 5, 5, 8])[cols][valid] != torch.tensor([5, 5, 5, 8])[:, None].expand(4, 3)[valid]).all()
    # every column of the batch is drawn equally often over many draws (uniform among the allowed)
    counts = torch.zeros(6)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3000):
        cols, _ = in_batch_columns(torch.arange(6), 2, gen)
        counts += torch.bincount(cols[0], minlength=6).float()
    assert counts[0] == 0 and torch.allclose(counts[1:] / 6000, torch.full((5,), 0.2), atol=0.02)


def test_masked_negatives_drop_out_of_the_softmax():
    torch.manual_seed(0)
    q, pos, neg = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
    expected = 0.0
    for b in range(3):
        logits = torch.cat([(q[b] * pos[b]).sum(0, keepdim=True), neg[b][mask[b]] @ q[b]])
        expected += -torch.log_softmax(logits, 0)[0]
    assert float(contrastive_loss(q, pos, neg, mask)) == pytest.approx(float(expected) / 3, rel=1e-5)
    with pytest.raises(ValueError, match="neg_mask"):
        contrastive_loss(q, pos, neg, mask[:, :2])


def test_in_batch_training_masks_other_queries_of_the_same_passage():
    """Two queries of one passage in a batch: neither is the other's negative (the issue's false negatives)."""
    torch.manual_seed(0)
    module = DenseRetriever(negatives="inbatch", num_negatives=3, vocab_size=40, hidden_size=8, num_layers=1, num_heads=2,
                            intermediate_size=16, max_len=6)
    passages, queries = torch.randint(5, 40, (5, 6)), torch.randint(5, 40, (4, 4))
    module.attach(passages, queries, torch.tensor([0, 0, 1, 2])).eval()
    q, pos, neg, valid = module.embed_batch(torch.arange(4), None)
    assert neg.shape == (4, 3, 8) and valid.tolist()[0] == [True, True, False]  # rows 0 and 1 have 2 other passages
    for b in range(4):  # every valid negative is another passage's embedding
        others = [pos[j] for j in range(4) if module.positive_ids[j] != module.positive_ids[b]]
        assert all(any(torch.allclose(n, o) for o in others) for n in neg[b][valid[b]])


def test_depth_is_a_fraction_of_the_corpus_with_a_floor():
    assert depth_from_fraction(200 / 8_841_823, 8_841_823, 21) == 200  # the paper's regime
    assert depth_from_fraction(0.001, 20_821, 21) == 21
    assert depth_from_fraction(0.01, 20_821, 21) == 208
    assert depth_from_fraction(200 / 8_841_823, 20_821, 21) == 21  # half a passage: the floor
    assert depth_from_fraction(0.5, 10, 21) == 10  # never beyond the corpus
    with pytest.raises(ValueError, match="fraction"):
        depth_from_fraction(0.0, 100, 5)


def test_span_pooling_reads_the_marked_mention_and_passages_whole():
    from lit_modules.ance.model import span_mask

    ids = torch.tensor([[2, 9, 5, 11, 12, 6, 13, 3, 0], [2, 11, 12, 3, 0, 0, 0, 0, 0], [2, 9, 5, 11, 12, 3, 0, 0, 0]])
    mask = ids != 0
    got = span_mask(ids, mask, 5, 6)
    assert got[0].tolist() == [False, False, True, True, True, True, False, False, False]  # markers included
    assert got[1].tolist() == mask[1].tolist()  # a passage: all its tokens
    assert got[2].tolist() == [False, False, True, True, True, True, False, False, False]  # end marker cut: to the last token
    torch.manual_seed(0)
    enc = DualEncoder(vocab_size=20, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16, max_len=9,
                      span_ids=(5, 6)).eval()
    with torch.no_grad():
        hidden = enc.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        expected = (hidden[0, 2:6]).mean(0)
        assert torch.allclose(enc(ids)[0], expected, atol=1e-6)


def test_wikilinks_poses_entity_linking_as_retrieval_over_the_whole_kb():
    from datamodules.entities import END_ENT, START_ENT, load_gensim_entities
    from datamodules.retrieval import load_wikilinks

    from datamodules.entities import subsample

    data = load_wikilinks(context_words=4, max_eval_queries=300)
    entities = load_gensim_entities(0)
    lowered = {t.lower() for t in entities.kb}
    assert len(data.passages) == len(lowered) < len(entities.kb)  # titles equal up to case are one passage
    assert len(data.train_queries) == len(entities.train) and len(data.test_queries) == len(data.val_queries) == 300
    assert not {m.doc for m in entities.test} & {m.doc for m in entities.train}  # split by article
    # each query is its mention marked in 4 words of context each side, and its one relevant passage is its gold title
    for m, q, rel in zip(subsample(entities.test, 300, 0), data.test_queries, data.test_relevant):
        assert q.split(START_ENT)[1].split(END_ENT)[0].strip() == m.mention and len(q.split(START_ENT)[0].split()) <= 4
        assert len(rel) == 1 and data.passages[rel[0]].lower() == m.entity.lower()
    nonexact = data.test_groups["nonexact"]
    exact_rows = [i for i, f in enumerate(nonexact) if not f]
    assert all(data.passages[data.test_relevant[i][0]].lower() ==
               data.test_queries[i].split(START_ENT)[1].split(END_ENT)[0].strip().lower() for i in exact_rows)
    assert 0.2 < sum(nonexact) / len(nonexact) < 0.5 and sum(data.test_groups["unseen"]) > len(data.test_queries) / 2


def test_hard_negatives_come_from_the_top_depth_and_never_the_positive():
    q, p = small_space()
    scores = q @ p.T  # [Q, P]
    positive = scores.argmax(1)  # the hardest case: the positive is the top passage
    depth = 7
    top = scores.topk(depth, dim=1).indices
    for seed in range(5):
        neg = hard_negatives(q, p, positive, n=4, depth=depth, generator=torch.Generator().manual_seed(seed))
        assert neg.shape == (12, 4)
        assert not (neg == positive[:, None]).any()
        for i in range(12):
            assert set(neg[i].tolist()) <= set(top[i].tolist())
            assert len(set(neg[i].tolist())) == 4  # without replacement


def test_hard_negatives_repeat_for_the_same_seed_and_vary_otherwise():
    q, p = small_space()
    positive = torch.zeros(12, dtype=torch.long)
    a = hard_negatives(q, p, positive, 3, 20, torch.Generator().manual_seed(7))
    b = hard_negatives(q, p, positive, 3, 20, torch.Generator().manual_seed(7))
    c = hard_negatives(q, p, positive, 3, 20, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_hard_negatives_clamp_depth_and_refuse_too_many():
    q, p = small_space(P=6)
    positive = (q @ p.T).argmax(1)
    neg = hard_negatives(q, p, positive, n=5, depth=200)  # depth clamped to 6; 5 left after the positive
    assert sorted(neg[0].tolist()) == sorted(set(range(6)) - {int(positive[0])})
    with pytest.raises(ValueError, match="n=6"):
        hard_negatives(q, p, positive, n=6, depth=200)
    with pytest.raises(ValueError, match="n=3"):
        hard_negatives(q, p, positive, n=3, depth=3)  # the positive takes one of the top 3


def test_random_negatives_never_return_the_positive_and_cover_the_rest():
    positive = torch.tensor([0, 3, 4])
    neg = random_negatives(5, positive, 400, torch.Generator().manual_seed(0))
    for i in range(3):
        assert set(neg[i].tolist()) == set(range(5)) - {int(positive[i])}


def test_table_negatives_draw_from_the_query_pool():
    table = torch.tensor([[1, 2, 3], [7, 8, 9]])
    got = TableNegatives(table, seed=0).sample(torch.tensor([1, 0, 1]), 2)
    assert set(got[0].tolist()) <= {7, 8, 9} and set(got[1].tolist()) <= {1, 2, 3} and len(set(got[2].tolist())) == 2
    with pytest.raises(ValueError, match="pool of 3"):
        TableNegatives(table).sample(torch.tensor([0]), 4)


# ------------------------------------------------------------------------------ the refresh
def tiny_encoder() -> DualEncoder:
    torch.manual_seed(0)
    return DualEncoder(vocab_size=40, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16, max_len=12)


def test_refreshed_index_answers_like_brute_force():
    g = torch.Generator().manual_seed(0)
    passages = torch.randint(5, 40, (30, 10), generator=g)
    passages[:, 7:] = 0  # padding
    queries = torch.randint(5, 40, (6, 5), generator=g)
    encoder = tiny_encoder()
    refresh = AnnRefresh(passages, queries, torch.arange(6), every=1, pool=4, depth=10)
    refresh.launch(encoder, step=3)
    refresh.wait()
    refresh.adopt(step=5)
    r = refresh.current
    assert r.snapshot_step == 3 and refresh.stats()["refresh_lag"] == 2
    scores, ids = r.index.search(encode(encoder, queries).numpy(), 5)
    brute = encode(encoder, queries) @ encode(encoder, passages).T  # [Q, P]
    top = brute.topk(5, dim=1)
    assert torch.allclose(torch.from_numpy(scores), top.values, atol=1e-5)
    assert torch.equal(torch.from_numpy(ids).long(), top.indices)
    depth_sets = brute.topk(10, dim=1).indices
    for i in range(6):  # the pool comes from the top 10 and avoids the positive
        assert set(r.pool[i].tolist()) <= set(depth_sets[i].tolist()) and i not in r.pool[i].tolist()


def test_the_snapshot_is_frozen_while_training_moves_on():
    g = torch.Generator().manual_seed(0)
    passages, queries = torch.randint(5, 40, (20, 8), generator=g), torch.randint(5, 40, (4, 5), generator=g)
    encoder = tiny_encoder()
    before = encode(encoder, passages)
    refresh = AnnRefresh(passages, queries, torch.arange(4), every=1, pool=2, depth=5, synchronous=False)
    refresh.launch(encoder, step=0)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(1.0)  # training moves on while the thread encodes
    refresh.wait()
    refresh.adopt(step=1)
    assert torch.allclose(refresh.current.passage_emb, before, atol=1e-6)


def test_dense_retriever_trains_with_the_ann_refresh_callback():
    import lightning as L

    g = torch.Generator().manual_seed(0)
    passages, queries = torch.randint(5, 40, (30, 8), generator=g), torch.randint(5, 40, (16, 5), generator=g)
    positive = torch.arange(16)
    torch.manual_seed(0)
    module = DenseRetriever(negatives="ann", num_negatives=2, vocab_size=40, hidden_size=8, num_layers=1, num_heads=2,
                            intermediate_size=16, max_len=12, max_steps=6, warmup_steps=1)
    fallback = TableNegatives(torch.arange(16, 30).repeat(16, 1)[:, :4])
    refresh = AnnRefresh(passages, queries, positive, every=2, start=1, pool=3, depth=10, synchronous=True, fallback=fallback)
    module.attach(passages, queries, positive, refresh)
    loader = torch.utils.data.DataLoader(torch.arange(16), batch_size=4, shuffle=True)
    trainer = L.Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[refresh], accelerator="cpu")
    trainer.fit(module, train_dataloaders=loader)
    stats = refresh.stats()
    # steps 0..5: BM25 fallback at step 0, refreshes at 1 and 3 (none on the last step: it would never be used)
    assert stats["refreshes"] == 2 and stats["refresh_lag"] == 0 and stats["fallback_steps"] == 1
    assert [r.snapshot_step for r in refresh.history] == [1, 3]
    assert stats["index_staleness"] == pytest.approx((0 + 1 + 0 + 1 + 2) / 5)
    # every step's loss and its gradient norm before clipping are traced (the paper's Sec. 3 quantities)
    assert [t[0] for t in module.trace] == list(range(6)) and all(t[1] > 0 and t[2] > 0 for t in module.trace)


def test_the_traced_gradient_norm_is_taken_before_clipping():
    import lightning as L

    torch.manual_seed(0)
    passages, queries = torch.randint(5, 40, (12, 6)), torch.randint(5, 40, (8, 4))
    norms = {}
    for clip in (None, 1e-3):
        torch.manual_seed(0)
        module = DenseRetriever(negatives="inbatch", num_negatives=3, vocab_size=40, hidden_size=8, num_layers=1,
                                num_heads=2, intermediate_size=16, max_len=6, max_steps=1, warmup_steps=0)
        module.attach(passages, queries, torch.arange(8))
        trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu", gradient_clip_val=clip)
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(torch.arange(8), batch_size=8))
        norms[clip] = module.trace[0][2]
    assert norms[1e-3] == pytest.approx(norms[None]) and norms[None] > 1e-2


# ------------------------------------------------------------------------------ corpus initialisation
def test_token_idf_is_the_closed_form_and_zero_for_specials():
    tokens = torch.tensor([[2, 5, 6, 5, 3, 0], [2, 5, 7, 3, 0, 0], [2, 8, 3, 0, 0, 0]])
    idf = token_idf(tokens, vocab_size=10)
    assert idf[5] == pytest.approx(math.log(4 / 3)) and idf[6] == pytest.approx(math.log(4 / 2))
    assert idf[9] == pytest.approx(math.log(4 / 1)) and (idf[:5] == 0).all()
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 8\)"):
        token_idf(tokens, vocab_size=8)


def test_pooling_is_the_weighted_mean_of_hidden_states():
    torch.manual_seed(0)
    encoder = DualEncoder(vocab_size=20, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16, max_len=8).eval()
    ids = torch.tensor([[2, 7, 9, 3, 0], [2, 11, 3, 0, 0]])
    with torch.no_grad():
        encoder.pool_weight.weight.uniform_(0.5, 2.0)
        out = encoder(ids)
        for b in range(2):
            n = int((ids[b] != 0).sum())
            hidden = encoder.bert(input_ids=ids[b:b + 1, :n]).last_hidden_state[0]  # [n, D]
            expected = (hidden * encoder.pool_weight(ids[b, :n])).sum(0) / n
            assert torch.allclose(out[b], expected, atol=1e-5)


def test_corpus_init_is_the_same_for_every_variant_and_sees_training_articles_only():
    sentence = "Sentence number {} of article {} talks about topic{} word{}."
    articles = [Article(f"A{a}", " ".join(sentence.format(i, a, a, i % 7) for i in range(40))) for a in range(10)]
    data = inverse_cloze(articles, passage_words=30, test_frac=0.3, split_seed=0)
    train_ids = data.train_passage_ids()
    test_articles = {data.passage_article[r[0]] for r in data.test_relevant}
    assert train_ids and all(data.passage_article[p] not in test_articles for p in train_ids)
    assert {data.passage_article[p] for p in train_ids} == set(range(10)) - test_articles
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(5, 40, (len(data.passages), 12), generator=g)
    states = []
    for negatives in ("ann", "random", "inbatch", "bm25"):
        torch.manual_seed(3)
        module = DenseRetriever(negatives=negatives, vocab_size=40, hidden_size=8, num_layers=1, num_heads=2,
                                intermediate_size=16, max_len=12)
        init_from_corpus(module.encoder, tokens[train_ids])
        states.append(module.encoder.state_dict())
    assert all(torch.equal(states[0][k], s[k]) for s in states[1:] for k in states[0])
    emb = module.encoder.bert.embeddings
    assert (emb.position_embeddings.weight == 0).all() and (emb.token_type_embeddings.weight == 0).all()
    # changing every held-out passage leaves the initialisation unchanged
    changed = tokens.clone()
    held_out = [p for p in range(len(tokens)) if p not in set(train_ids)]
    changed[held_out] = 39
    torch.manual_seed(3)
    other = DualEncoder(vocab_size=40, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16, max_len=12)
    init_from_corpus(other, changed[train_ids])
    assert torch.equal(other.pool_weight.weight, module.encoder.pool_weight.weight)
    assert torch.equal(other.pool_weight.weight[:, 0], token_idf(tokens[train_ids], 40))


def test_dense_retriever_refuses_unknown_negatives():
    with pytest.raises(ValueError, match="unknown negatives 'hard'"):
        DenseRetriever(negatives="hard")


# ------------------------------------------------------------------------------ metrics and BM25
def test_retrieval_metrics_match_hand_computed_values():
    ids = torch.arange(100).repeat(3, 1)  # every query ranks passages 0..99 in order
    scores = -torch.arange(100.0).repeat(3, 1)
    relevant = [[2], [0, 50], [150]]  # rank 3; ranks 1 and 51; not retrieved
    m = retrieval_metrics(ids, scores, relevant)
    assert m["mrr_at_10"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert m["recall_at_k@k=1"] == pytest.approx((0 + 0.5 + 0) / 3)
    assert m["recall_at_k@k=10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["recall_at_k@k=100"] == pytest.approx((1 + 1 + 0) / 3)
    ndcg_q1 = 1 / math.log2(4)
    ndcg_q2 = 1.0 / (1 + 1 / math.log2(3))  # one of two relevant at rank 1; ideal has both on top
    assert m["ndcg_at_10"] == pytest.approx((ndcg_q1 + ndcg_q2 + 0) / 3)


def test_bm25_finds_the_passage_that_shares_the_rare_words():
    passages = ["the cat sat on the mat", "quantum chromodynamics of gluons", "a dog chased the ball", "stock markets fell"]
    ids, _ = bm25_search(bm25_index(passages), ["gluons and chromodynamics", "which dog chased", "zzzz"], 2)
    assert ids[0, 0] == 1 and ids[1, 0] == 2 and ids.shape == (3, 2)


# ------------------------------------------------------------------------------ data
def test_bm25_search_ranks_with_bm25s_scores():
    """The batched sparse product gives bm25s's own scores and ranking (repeated query words counted twice)."""
    import bm25s

    from datamodules.corpora import load_wiki_articles

    passages = [a.title + " " + " ".join(a.text.split()[:30]) for a in load_wiki_articles()[:80]]
    queries = [" ".join(p.split()[3:7]) for p in passages[:40]] + ["the of", "anarchism anarchism war", "zzzz unknownword"]
    retriever = bm25_index(passages)
    ids, scores = bm25_search(retriever, queries, 10, chunk=7)
    tokens = bm25s.tokenize(queries[:-3] + queries[-2:-1], stopwords="en", show_progress=False)
    ref_ids, ref_scores = retriever.retrieve(tokens, k=10, show_progress=False, n_threads=1)
    rows = list(range(40)) + [41]
    assert torch.allclose(scores[rows], torch.as_tensor(ref_scores, dtype=torch.float32), rtol=1e-5, atol=1e-6)
    for r, row in enumerate(rows):  # the same passages wherever scores are not tied
        distinct = [i for i in range(10) if (i == 0 or ref_scores[r][i] < ref_scores[r][i - 1] - 1e-6)
                    and (i == 9 or ref_scores[r][i] > ref_scores[r][i + 1] + 1e-6)]
        assert [int(ids[row][i]) for i in distinct] == [int(ref_ids[r][i]) for i in distinct]
    assert scores[40].eq(0).all() and scores[42].eq(0).all()  # only stop words / unknown words: no score


def test_bm25_reads_a_marked_query_by_its_mention_and_traces_average_per_interval():
    from benchmarks.units.ance import lexical, window_means

    marks = ("[START_ENT]", "[END_ENT]")
    assert lexical(["went to [START_ENT] New York [END_ENT] last year", "no marker"], marks) == ["New York", "no marker"]
    assert lexical(["went to [START_ENT] x [END_ENT] y"], None) == ["went to [START_ENT] x [END_ENT] y"]
    trace = [(s, float(s), 2.0 * s) for s in range(7)]
    assert window_means(trace, 3) == [(2, 1.0, 2.0), (5, 4.0, 8.0), (6, 6.0, 12.0)]


def test_inverse_cloze_removes_the_query_and_splits_by_article():
    sentence = "Sentence number {} of article {} talks about topic {}."
    articles = [Article(f"A{a}", " ".join(sentence.format(i, a, a) for i in range(40))) for a in range(10)]
    data = inverse_cloze(articles, passage_words=30, test_frac=0.3, split_seed=0)
    assert len(data.test_queries) and len(data.train_queries)
    for q, pid in zip(data.train_queries, data.train_positive):
        assert q not in data.passages[pid] and q.split()[-1].rstrip(".") == data.passages[pid].split()[-1].rstrip(".")
    train_articles = {data.passage_article[p] for p in data.train_positive}
    test_articles = {data.passage_article[r[0]] for r in data.test_relevant}
    assert not train_articles & test_articles and len(test_articles) == 3


def test_every_training_sentence_is_a_query_with_its_passage_minus_it():
    sentence = "Sentence number {} of article {} talks about topic {}."
    articles = [Article(f"A{a}", " ".join(sentence.format(i, a, a) for i in range(40))) for a in range(10)]
    one = inverse_cloze(articles, passage_words=30, test_frac=0.3, split_seed=0)
    data = inverse_cloze(articles, passage_words=30, test_frac=0.3, split_seed=0, all_train_sentences=True)
    # the corpus and the held-out queries do not change; the first draw of each passage stays a query
    assert data.passages == one.passages and data.test_queries == one.test_queries and data.test_relevant == one.test_relevant
    assert set(zip(one.train_queries, one.train_positive)) <= set(zip(data.train_queries, data.train_positive))
    assert len(data.train_queries) > 2 * len(one.train_queries) and len(data.train_positive_text) == len(data.train_queries)
    test_articles = {data.passage_article[r[0]] for r in data.test_relevant}
    assert not {data.passage_article[p] for p in data.train_positive} & test_articles  # no query from a held-out article
    assert not set(data.train_queries) & set(data.test_queries)
    drawn = dict(zip(one.train_positive, one.train_queries))  # passage -> the sentence removed from it in the corpus
    for q, pid, text in zip(data.train_queries, data.train_positive, data.train_positive_text):
        assert q not in text  # the positive is its own passage minus the query sentence, nothing else
        if q == drawn[pid]:
            assert text == data.passages[pid]
        else:
            assert sorted(text.split() + q.split()) == sorted(data.passages[pid].split() + drawn[pid].split())
    assert data.train_passage_ids() == one.train_passage_ids()


def test_training_negatives_stay_in_the_training_articles():
    from lit_modules.ance import RandomNegatives

    allowed = torch.tensor([1, 3, 4, 7, 8])
    positive = torch.tensor([3, 7, 1, 8])
    neg = RandomNegatives(10, positive, seed=0, passage_ids=allowed).sample(torch.arange(4), 50)
    assert set(neg.unique().tolist()) == set(allowed.tolist()) and not (neg == positive[:, None]).any()
    g = torch.Generator().manual_seed(0)
    passages, queries = torch.randint(5, 60, (10, 6), generator=g), torch.randint(5, 60, (4, 5), generator=g)
    torch.manual_seed(0)
    encoder = DualEncoder(vocab_size=60, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_len=8)
    refresh = AnnRefresh(passages, queries, positive, every=1, pool=3, depth=10, passage_ids=allowed)
    pool = refresh.refresh_now(encoder, 0).pool
    assert set(pool.unique().tolist()) <= set(allowed.tolist()) and not (pool == positive[:, None]).any()


def test_article_passages_pack_whole_sentences():
    text = " ".join(f"This is sentence {i} here." for i in range(23))  # 5 words each
    passages = article_passages(text, passage_words=20)
    assert [len(p) for p in passages] == [4, 4, 4, 4, 4, 3]
    assert sum(passages, []) == [f"This is sentence {i} here." for i in range(23)]


def test_gensim_wiki_counts_are_stable():
    data = load_retrieval("gensim_wiki", max_passages_per_article=12)
    assert data.counts() == {"passages": 1064, "train_queries": 857, "test_queries": 201}
    data = load_retrieval("gensim_wiki", max_passages_per_article=12, all_train_sentences=True)
    assert data.counts() == {"passages": 1064, "train_queries": 4622, "test_queries": 201}


def test_positive_tokens_replace_the_corpus_passage_as_the_positive():
    torch.manual_seed(0)
    module = DenseRetriever(negatives="inbatch", vocab_size=40, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16, max_len=6)
    passages, queries = torch.randint(5, 40, (5, 6)), torch.randint(5, 40, (3, 4))
    own = torch.randint(5, 40, (3, 6))
    module.attach(passages, queries, torch.tensor([0, 1, 2]), None, own).eval()
    _, pos, _, _ = module.embed_batch(torch.tensor([2, 0]), None)
    assert torch.allclose(pos, module.encoder(own[[2, 0]]))
    module.attach(passages, queries, torch.tensor([0, 1, 2]))
    _, pos, _, _ = module.embed_batch(torch.tensor([2, 0]), None)
    assert torch.allclose(pos, module.encoder(passages[[2, 0]]))


def test_msmarco_tsv_loader_reads_tiny_files(tmp_path):
    (tmp_path / "collection.tsv").write_text("0\tthe cat sat\n1\tgluon physics\n2\tdogs bark\n")
    (tmp_path / "queries.train.tsv").write_text("10\twhere did the cat sit\n")
    (tmp_path / "queries.dev.small.tsv").write_text("20\twhat is a gluon\n21\tunjudged query\n")
    (tmp_path / "qrels.train.tsv").write_text("10\t0\t0\t1\n")
    (tmp_path / "qrels.dev.small.tsv").write_text("20\t0\t1\t1\n20\t0\t2\t0\n")
    data = load_msmarco(tmp_path)
    assert data.passages == ["the cat sat", "gluon physics", "dogs bark"]
    assert data.train_queries == ["where did the cat sit"] and data.train_positive == [0]
    assert data.test_queries == ["what is a gluon"] and data.test_relevant == [[1]]


def test_beir_jsonl_loader_reads_tiny_files(tmp_path):
    corpus = [{"_id": "d1", "title": "Cats", "text": "sit on mats"}, {"_id": "d2", "title": "", "text": "gluons bind quarks"}]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what binds quarks"}) + "\n"
                                            + json.dumps({"_id": "q2", "text": "cats"}) + "\n")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td1\t1\n")
    data = load_beir(tmp_path)
    assert data.passages == ["Cats sit on mats", "gluons bind quarks"]
    assert data.test_queries == ["what binds quarks"] and data.test_relevant == [[1]]
    assert data.train_queries == ["cats"] and data.train_positive == [0]


def test_loaders_fail_with_one_line_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="collection.tsv"):
        load_msmarco(tmp_path)
    with pytest.raises(FileNotFoundError, match="needs --data-dir"):
        load_retrieval("msmarco")
    with pytest.raises(ValueError, match="unknown retrieval dataset 'trec'"):
        load_retrieval("trec")
    (tmp_path / "collection.tsv").write_text("0 no tab here\n")
    with pytest.raises(ValueError, match="expected 2 tab-separated columns"):
        load_msmarco(tmp_path)


def test_datamodule_tokenizes_with_cls_sep_and_padding(tmp_path):
    (tmp_path / "collection.tsv").write_text("".join(f"{i}\tpassage number {i} about topic {i % 3}\n" for i in range(12)))
    (tmp_path / "queries.train.tsv").write_text("".join(f"{i}\ttopic {i % 3} number {i}\n" for i in range(8)))
    (tmp_path / "qrels.train.tsv").write_text("".join(f"{i}\t0\t{i}\t1\n" for i in range(8)))
    (tmp_path / "queries.dev.tsv").write_text("100\tnumber 9\n")
    (tmp_path / "qrels.dev.tsv").write_text("100\t0\t9\t1\n")
    dm = RetrievalDataModule("msmarco", str(tmp_path), vocab_size=60, passage_max_len=8, query_max_len=6, batch_size=4).prepare()
    cls_id, sep_id = dm.tokenizer.token_to_id("[CLS]"), dm.tokenizer.token_to_id("[SEP]")
    assert dm.passage_tokens.shape == (12, 8) and dm.train_query_tokens.shape == (8, 6)
    assert (dm.passage_tokens[:, 0] == cls_id).all() and (dm.passage_tokens == sep_id).sum(1).eq(1).all()
    assert [len(b) for b in dm.train_dataloader()] == [4, 4]


# ------------------------------------------------------------------------------ the verdict
def verdict_rows(values: dict[str, list[float]], untrained: float = 0.01, validation: dict[str, float] | None = None) -> pd.DataFrame:
    rows = []
    for variant, per_seed in values.items():
        for seed, v in enumerate(per_seed):
            rows.append(dict(variant=variant, seed=seed, metric="mrr_at_10", value=v, step=None))
            if validation and variant in validation:
                rows.append(dict(variant=variant, seed=seed, metric="mrr_at_10@split=validation", value=validation[variant], step=None))
            if variant != "bm25":
                rows.append(dict(variant=variant, seed=seed, metric="untrained_mrr_at_10", value=untrained, step=None))
    return pd.DataFrame(rows)


NOISE = [0.004, -0.006, 0.002, -0.003, 0.005, -0.001, 0.0, -0.004]  # per-seed jitter


def seeds(level: float, jitter: float = 1.0, shift: int = 0, n: int = 8) -> list[float]:
    """``n`` seeds around ``level`` (jitter scales the noise; shift rotates it, so variants are not perfectly correlated)."""
    return [level + jitter * NOISE[(i + shift) % 8] for i in range(n)]


def test_verdict_judges_ance_against_the_best_other_source_chosen_on_validation():
    from scipy import stats

    from benchmarks.specs.ance import DELTA, claim_verdict

    dense = {"ance_sync": seeds(0.35), "random_neg": seeds(0.30, shift=1), "inbatch_neg": seeds(0.31, shift=2),
             "bm25_neg": seeds(0.32, shift=3)}
    # validation says bm25_neg is the strongest other source: it is the judged baseline, the others are reported
    val = {"random_neg": 0.29, "inbatch_neg": 0.30, "bm25_neg": 0.33}
    v = claim_verdict(verdict_rows({**dense, "ance": seeds(0.40), "bm25": [0.50] * 8}, untrained=0.05, validation=val))
    primary = v.judgements[0]
    assert v.status == "holds" == primary.status and primary.comparison.baseline == "bm25_neg"
    assert primary.comparison.kind == "better" and primary.comparison.delta == DELTA == 0.01 and primary.comparison.source
    diffs = [a - b for a, b in zip(seeds(0.40), seeds(0.32, shift=3))]
    # 8 seeds: IQM with the stratified bootstrap, whose interval holds the mean paired difference
    assert primary.estimate.low > 0 and primary.estimate.low <= sum(diffs) / 8 <= primary.estimate.high
    # bm25 (0.50) beats ance: its own line says so, and the status is the primary line alone
    bm25 = next(j for j in v.judgements if j.comparison.baseline == "bm25")
    assert bm25.status == "does not hold" and "separate line" in bm25.comparison.name
    assert {j.comparison.baseline for j in v.judgements[1:]} == {"bm25", "random_neg", "inbatch_neg"}
    # the best source is chosen on validation, not on the judged test split: validation naming random_neg
    # judges ance against random_neg although bm25_neg is higher on test
    v = claim_verdict(verdict_rows({**dense, "ance": seeds(0.40), "bm25": [0.50] * 8}, untrained=0.05,
                                   validation={"random_neg": 0.40, "inbatch_neg": 0.30, "bm25_neg": 0.33}))
    assert v.judgements[0].comparison.baseline == "random_neg" and "on validation" in v.evidence
    # the case: ance 0.33 and bm25_neg 0.295 trained, random_neg stalled at 0.105 over an untrained 0.06
    # (+0.045, below the 0.05 that counts as trained): decided against bm25_neg, not made inconclusive by random_neg
    case = {"ance": seeds(0.33, n=3), "bm25_neg": seeds(0.295, shift=3, n=3), "random_neg": seeds(0.105, shift=1, n=3),
            "bm25": [0.2] * 3}
    v = claim_verdict(verdict_rows(case, untrained=0.06, validation={"bm25_neg": 0.29, "random_neg": 0.5}))
    assert v.judgements[0].comparison.baseline == "bm25_neg" and v.status == "holds"
    diffs = [a - b for a, b in zip(case["ance"], case["bm25_neg"])]
    low, high = stats.t.interval(0.95, 2, loc=sum(diffs) / 3, scale=stats.sem(diffs))  # 3 seeds: paired t
    assert (v.judgements[0].estimate.low, v.judgements[0].estimate.high) == (pytest.approx(low), pytest.approx(high))
    # ance above the best source by 0.003 +- 0.002: reliably smaller than the smallest gain of 0.01 -> does not hold
    tie = claim_verdict(verdict_rows({**dense, "bm25_neg": seeds(0.397, 0.3, shift=4), "ance": seeds(0.40, 0.3), "bm25": [0.3] * 8},
                                     untrained=0.05, validation=val))
    assert tie.status == "does not hold"
    # the same mean gap, but noisy seeds: inconclusive, and the judgement says how many seeds would decide it
    noisy = claim_verdict(verdict_rows({**dense, "bm25_neg": seeds(0.397, 3, shift=4), "ance": seeds(0.40, 3), "bm25": [0.3] * 8},
                                       untrained=0.05, validation=val))
    assert noisy.status == "inconclusive" and noisy.judgements[0].seeds_needed


def test_verdict_is_inconclusive_unless_ance_and_the_judged_source_trained_beyond_their_start():
    from benchmarks.specs.ance import claim_verdict

    dense = {"ance_sync": seeds(0.35), "random_neg": seeds(0.30, shift=1), "inbatch_neg": seeds(0.31, shift=2),
             "bm25_neg": seeds(0.32, shift=3), "bm25": [0.3] * 8}
    val = {"random_neg": 0.29, "inbatch_neg": 0.30, "bm25_neg": 0.33}
    # every dense variant's start at 0.37: ance (0.40) is not above it by 0.05, so the verdict is inconclusive
    untrained = verdict_rows({**dense, "ance": seeds(0.40)}, untrained=0.37, validation=val)
    v = claim_verdict(untrained)
    assert v.status == "inconclusive" and v.judgements[0].status == "inconclusive"
    assert "not trained beyond its start: ance" in v.judgements[0].note
    assert "inverse cloze" in claim_verdict(untrained.assign(dataset="gensim_wiki")).evidence
    assert "inverse cloze" not in claim_verdict(untrained.assign(dataset="msmarco")).evidence
    # a source at its start is not the judged one: bm25_neg (best on validation) untrained, inbatch_neg is judged
    rows = verdict_rows({**dense, "ance": seeds(0.40)}, untrained=0.05, validation=val)
    rows.loc[(rows["variant"] == "bm25_neg") & (rows["metric"] == "untrained_mrr_at_10"), "value"] = 0.32
    v = claim_verdict(rows)
    assert v.judgements[0].comparison.baseline == "inbatch_neg" and v.status == "holds"
    # the floor is the larger of the untrained encoder's and a random ranking's
    rows = verdict_rows({**dense, "ance": seeds(0.40)}, untrained=0.05, validation=val)
    random = rows[rows["metric"] == "untrained_mrr_at_10"].assign(metric="trivial_mrr_at_10@ranking=random", value=0.37)
    assert claim_verdict(pd.concat([rows, random])).status == "inconclusive"


def test_emb_lr_zero_freezes_the_word_embeddings_and_temperature_scales_unit_norm_scores():
    torch.manual_seed(0)
    passages, queries = torch.randint(5, 40, (6, 6)), torch.randint(5, 40, (4, 4))
    module = DenseRetriever(negatives="inbatch", vocab_size=40, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16,
                            max_len=6, lr=1e-2, emb_lr=0.0, temperature=0.1, warmup_steps=0)
    module.attach(passages, queries, torch.arange(4))
    words = module.encoder.bert.get_input_embeddings().weight.detach().clone()
    pool = module.encoder.pool_weight.weight.detach().clone()
    opt = module.configure_optimizers()["optimizer"]
    for _ in range(3):
        opt.zero_grad()
        contrastive_loss(*module.embed_batch(torch.arange(4), None)).backward()
        opt.step()
    assert torch.equal(module.encoder.bert.get_input_embeddings().weight, words)
    assert not torch.equal(module.encoder.pool_weight.weight, pool)  # the others train
    module.eval()
    q, pos, _, _ = module.embed_batch(torch.arange(4), None)
    assert torch.allclose(pos.norm(dim=1), torch.ones(4), atol=1e-5) and torch.allclose(q.norm(dim=1), torch.full((4,), 10.0), atol=1e-4)


def test_an_encoder_loaded_from_a_local_checkpoint_trains_in_train_mode(tmp_path):
    """transformers' from_pretrained returns an eval-mode model and Lightning keeps that mode at fit
    start; the encoder must come back in train mode (dropout on) with the checkpoint's weights."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    saved = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=16), add_pooling_layer=False)
    saved.save_pretrained(tmp_path)
    encoder = DualEncoder(checkpoint=str(tmp_path))
    assert all(m.training for m in encoder.modules())
    assert torch.equal(encoder.bert.get_input_embeddings().weight, saved.get_input_embeddings().weight)
    assert encoder.dim == 16 and encoder.pool_weight.num_embeddings == 50


def test_a_named_tokenizer_that_cannot_be_loaded_fails_the_preflight_in_one_line(tmp_path):
    """The harness's preflight (``prepare_data``) loads a named checkpoint's tokenizer: offline, or a wrong path, is
    the CLI's exit 3 before any unit starts, not an error in every unit."""
    from datamodules import DatasetNotFoundError
    from datamodules.retrieval import RetrievalDataModule

    with pytest.raises(DatasetNotFoundError, match="cannot load tokenizer .*offline"):
        RetrievalDataModule(tokenizer_name=str(tmp_path / "missing")).prepare_data()
