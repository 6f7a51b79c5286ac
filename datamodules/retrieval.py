"""Passage retrieval data: queries, a passage corpus and relevance judgements.

Offline default (``gensim_wiki``): the Wikipedia extract in gensim's test data
(:func:`datamodules.corpora.load_wiki_articles`, 106 articles) cut into passages and
queries by the inverse cloze task (ICT, Lee et al. 2019, arXiv 1906.00300):

1. each article's text is split into sentences (:func:`datamodules.text.split_sentences`,
   sentences of at least 4 words); consecutive sentences are packed into passages of at
   least ``passage_words`` words (~100, as MS MARCO's and DPR's passages); a short tail
   joins the article's last passage; at most ``max_passages_per_article`` passages are
   kept per article (the first ones; ``None`` keeps all);
2. from every passage of at least 3 sentences one sentence of at least ``min_query_words``
   words is drawn (``numpy`` generator seeded with ``split_seed``); it becomes the query and
   is removed from the passage, whose rest is the query's one relevant passage (ICT removes
   the sentence so that exact string match does not solve the task);
3. articles are shuffled with ``split_seed`` and a fraction ``test_frac`` of them gives the
   held-out queries: no test query's article contributes a training query. The corpus
   (every passage, with its query sentence removed) is searched in full at test time;
4. with ``all_train_sentences=True``, every other sentence of at least ``min_query_words``
   words of a *training* article's passage (of at least 3 sentences) is a training query
   too, its positive the text of its own passage minus that sentence
   (``RetrievalData.train_positive_text``; its ``train_positive`` is still the passage's
   corpus id, never drawn as its negative). Step 2's draws, hence the corpus and the
   held-out queries, are the same either way; held-out articles give no extra query.

Real data from ``--data-dir``:
- ``msmarco``: MS MARCO passage ranking TSV files: ``collection.tsv`` (pid, passage),
  ``queries.train.tsv`` and ``queries.dev.small.tsv`` (or ``queries.dev.tsv``) (qid, text),
  ``qrels.train.tsv`` and ``qrels.dev.small.tsv`` (or ``qrels.dev.tsv``) (TREC qrels:
  qid, 0, pid, relevance);
- ``beir``: a BEIR dataset folder: ``corpus.jsonl`` ({"_id", "title", "text"}),
  ``queries.jsonl`` ({"_id", "text"}), ``qrels/train.tsv`` and ``qrels/test.tsv`` (or
  ``qrels/dev.tsv``) with a header line ``query-id corpus-id score``.
Only judgements with relevance > 0 count; queries without a relevant passage in the
corpus are dropped. A query's first relevant passage is its training positive.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch

from datamodules import DatasetNotFoundError
from datamodules.corpora import Article, load_wiki_articles
from datamodules.text import checkpoint_backend_tokenizer, split_sentences

RETRIEVAL_DATASETS = ("wikilinks", "gensim_wiki", "msmarco", "beir")


@dataclass
class RetrievalData:
    """A corpus, training queries with one positive each, and held-out queries with their
    relevant passages (indices into ``passages``)."""

    passages: list[str]
    train_queries: list[str]
    train_positive: list[int]
    test_queries: list[str]
    test_relevant: list[list[int]]
    name: str = ""
    passage_article: list[int] = field(default_factory=list)  # gensim_wiki: the article of each passage
    # the text of each training query's positive when it is not its corpus passage's (ICT with
    # all_train_sentences: the passage minus the query sentence); empty: the corpus passages
    train_positive_text: list[str] = field(default_factory=list)
    # a validation split (tuning and model selection: never the judged test split); may be empty
    val_queries: list[str] = field(default_factory=list)
    val_relevant: list[list[int]] = field(default_factory=list)
    # named subsets of the test queries (a flag per test query), reported beside the whole: wikilinks' "nonexact"
    # (the mention is not its entity's title) and "unseen" (the entity is no training query's)
    test_groups: dict[str, list[bool]] = field(default_factory=dict)
    # the strings that mark a query's span (wikilinks: GENRE's [START_ENT] / [END_ENT]): tokenizer special tokens,
    # and the encoder pools a query over the marked span
    markers: tuple[str, str] | None = None
    # extra texts the tokenizer is trained on besides the passages (wikilinks: the training mentions in context)
    tokenizer_texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        P = len(self.passages)
        if len(self.train_queries) != len(self.train_positive) or len(self.test_queries) != len(self.test_relevant):
            raise ValueError("queries and their positives differ in length: "
                             f"{len(self.train_queries)}/{len(self.train_positive)} train, {len(self.test_queries)}/{len(self.test_relevant)} test")
        bad = [i for i in list(self.train_positive) + [i for rel in self.test_relevant for i in rel] if not 0 <= i < P]
        if bad:
            raise ValueError(f"relevant passage ids must be in [0, {P}); got {bad[:5]}")
        if any(not rel for rel in self.test_relevant):
            raise ValueError("every test query needs at least one relevant passage; got an empty list")
        if self.train_positive_text and len(self.train_positive_text) != len(self.train_queries):
            raise ValueError(f"train_positive_text has {len(self.train_positive_text)} texts for {len(self.train_queries)} training queries")
        if len(self.val_queries) != len(self.val_relevant):
            raise ValueError(f"{len(self.val_queries)} validation queries but {len(self.val_relevant)} relevance lists")
        for group, flags in self.test_groups.items():
            if len(flags) != len(self.test_queries):
                raise ValueError(f"test group {group!r} flags {len(flags)} queries; there are {len(self.test_queries)}")

    def train_passage_ids(self) -> list[int]:
        """Passages that unsupervised statistics may be computed from without seeing a held-out
        query's article: with ``passage_article`` (gensim_wiki), every passage of an article
        that has no test query; otherwise (MS MARCO, BEIR: queries are not tied to documents)
        the whole corpus."""
        if not self.passage_article:
            return list(range(len(self.passages)))
        held_out = {self.passage_article[i] for rel in self.test_relevant for i in rel}
        return [p for p, a in enumerate(self.passage_article) if a not in held_out]

    def counts(self) -> dict[str, int]:
        out = {"passages": len(self.passages), "train_queries": len(self.train_queries),
               "test_queries": len(self.test_queries)}
        if self.val_queries:
            out["val_queries"] = len(self.val_queries)
        out.update({f"test_queries_{g}": sum(flags) for g, flags in self.test_groups.items()})
        return out


# --------------------------------------------------------------------------------------
# Offline default: inverse cloze task over gensim's Wikipedia extract
# --------------------------------------------------------------------------------------
def article_passages(text: str, passage_words: int = 100, min_sentence_words: int = 4) -> list[list[str]]:
    """Consecutive sentences packed into passages of at least ``passage_words`` words;
    each passage a list of sentences. A tail shorter than half a passage joins the last one."""
    if passage_words < 1:
        raise ValueError(f"passage_words must be >= 1, got {passage_words}")
    passages: list[list[str]] = []
    current: list[str] = []
    words = 0
    for sentence in split_sentences(text, min_sentence_words):
        current.append(sentence)
        words += len(sentence.split())
        if words >= passage_words:
            passages.append(current)
            current, words = [], 0
    if current:
        if passages and words < passage_words / 2:
            passages[-1].extend(current)
        else:
            passages.append(current)
    return passages


def inverse_cloze(
    articles: Sequence[Article],
    passage_words: int = 100,
    max_passages_per_article: int | None = None,
    min_query_words: int = 6,
    test_frac: float = 0.2,
    split_seed: int = 0,
    name: str = "gensim_wiki",
    all_train_sentences: bool = False,
) -> RetrievalData:
    """The ICT procedure of the module's docstring over ``articles`` (step 4 with
    ``all_train_sentences``)."""
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac}")
    if max_passages_per_article is not None and max_passages_per_article < 1:
        raise ValueError(f"max_passages_per_article must be >= 1 or None, got {max_passages_per_article}")
    rng = np.random.default_rng(split_seed)
    order = rng.permutation(len(articles))
    n_test = max(1, round(test_frac * len(articles)))
    test_articles = {int(a) for a in order[:n_test]}
    passages, passage_article = [], []
    train_q, train_pos, test_q, test_rel = [], [], [], []
    train_text: list[str] = []  # each training query's positive text (step 4)
    for a, article in enumerate(articles):
        for sentences in article_passages(article.text, passage_words)[:max_passages_per_article]:
            eligible = [i for i, s in enumerate(sentences) if len(s.split()) >= min_query_words]
            pid = len(passages)
            whole = sentences
            if len(sentences) >= 3 and eligible:
                q = eligible[int(rng.integers(len(eligible)))]
                sentences = whole[:q] + whole[q + 1:]
                if a in test_articles:
                    test_q.append(whole[q])
                    test_rel.append([pid])
                else:
                    train_q.append(whole[q])
                    train_pos.append(pid)
                    train_text.append(" ".join(sentences))
                    if all_train_sentences:  # step 4: the passage's other sentences, no draw (step 2's stay the same)
                        for j in eligible:
                            if j != q:
                                train_q.append(whole[j])
                                train_pos.append(pid)
                                train_text.append(" ".join(whole[:j] + whole[j + 1:]))
            passages.append(" ".join(sentences))
            passage_article.append(a)
    if not train_q or not test_q:
        raise ValueError(f"the inverse cloze task found {len(train_q)} training and {len(test_q)} test queries in "
                         f"{len(articles)} articles; need at least one of each (more or longer articles)")
    return RetrievalData(passages, train_q, train_pos, test_q, test_rel, name, passage_article,
                         train_text if all_train_sentences else [])


def load_gensim_wiki(passage_words: int = 100, max_passages_per_article: int | None = None, min_query_words: int = 6,
                     test_frac: float = 0.2, split_seed: int = 0, all_train_sentences: bool = False) -> RetrievalData:
    return inverse_cloze(load_wiki_articles(), passage_words, max_passages_per_article, min_query_words, test_frac,
                         split_seed, "gensim_wiki", all_train_sentences)


# --------------------------------------------------------------------------------------
# Offline default: entity retrieval over the extract's wikilinks
# --------------------------------------------------------------------------------------
def load_wikilinks(context_words: int = 4, split_seed: int = 0, max_train_queries: int | None = None,
                   max_eval_queries: int | None = None) -> RetrievalData:
    """Mention -> entity retrieval on the wikilinks of gensim's Wikipedia extract: the data of
    the ``genre`` benchmark (:func:`datamodules.entities.load_gensim_entities`, split by article
    with ``split_seed``), posed as passage retrieval.

    - a passage is a KB entity's title: the whole KB (~21k) is the corpus. Titles that are
      equal after lower-casing (the tokenizer lower-cases) are one passage, relevant to the
      mentions of each of them (60 pairs, differing only in case);
    - a query is the mention marked in its context, ``left [START_ENT] mention [END_ENT]
      right`` with ``context_words`` words each side (GENRE's input); the encoder pools the
      marked span (``markers``);
    - training queries come from the training articles, validation (tuning, model selection)
      and test queries (judged) from held-out articles; ``max_eval_queries`` keeps a seeded
      subsample of each (the same for every variant);
    - test groups: ``nonexact``, the mention is not its title (lexical match does not decide),
      and ``unseen``, the entity is no training mention's.

    Nothing of a held-out mention reaches the corpus: a passage is only a title.
    """
    from datamodules.entities import END_ENT, START_ENT, load_gensim_entities, mark_mention, subsample

    data = load_gensim_entities(split_seed)
    pid: dict[str, int] = {}
    passages: list[str] = []
    for title in data.kb:  # sorted: the first of a case-collision group names the passage
        key = title.lower()
        if key not in pid:
            pid[key] = len(passages)
            passages.append(title)
    train = subsample(data.train, max_train_queries, split_seed)
    val = subsample(data.validation, max_eval_queries, split_seed)
    test = subsample(data.test, max_eval_queries, split_seed)
    query = lambda m: mark_mention(m, context_words)  # noqa: E731
    seen = {m.entity for m in data.train}
    cw = context_words
    context = [" ".join([*m.left.split()[-cw:], m.mention, *m.right.split()[:cw]]) if cw > 0 else m.mention for m in train]
    return RetrievalData(
        passages, [query(m) for m in train], [pid[m.entity.lower()] for m in train],
        [query(m) for m in test], [[pid[m.entity.lower()]] for m in test], name="wikilinks",
        val_queries=[query(m) for m in val], val_relevant=[[pid[m.entity.lower()]] for m in val],
        test_groups={"nonexact": [not m.is_exact for m in test], "unseen": [m.entity not in seen for m in test]},
        markers=(START_ENT, END_ENT), tokenizer_texts=context)


# --------------------------------------------------------------------------------------
# Real data: MS MARCO passage ranking (TSV) and BEIR (JSONL)
# --------------------------------------------------------------------------------------
def _first(root: Path, names: Sequence[str], what: str) -> Path:
    for n in names:
        for path in (root / n, *sorted(root.glob(f"*/{n}"))):
            if path.is_file():
                return path
    raise DatasetNotFoundError(f"no {what} under {root}: expected one of {', '.join(names)}")


def _read_tsv(path: Path, columns: int) -> list[list[str]]:
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        for n, row in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not row:
                continue
            if len(row) < columns:
                raise ValueError(f"{path}:{n}: expected {columns} tab-separated columns, got {len(row)}: {row!r}")
            rows.append(row)
    return rows


def _qrels(rows: list[list[str]], q_col: int, p_col: int, rel_col: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in rows:
        if float(row[rel_col]) > 0:
            out.setdefault(row[q_col], []).append(row[p_col])
    return out


def _assemble(name: str, pids: list[str], passages: list[str], queries: dict[str, str],
              train_qrels: dict[str, list[str]], test_qrels: dict[str, list[str]]) -> RetrievalData:
    index = {pid: i for i, pid in enumerate(pids)}
    train_q, train_pos, test_q, test_rel = [], [], [], []
    for qid, rel in train_qrels.items():
        ids = [index[p] for p in rel if p in index]
        if qid in queries and ids:
            train_q.append(queries[qid])
            train_pos.append(ids[0])
    for qid, rel in test_qrels.items():
        ids = [index[p] for p in rel if p in index]
        if qid in queries and ids:
            test_q.append(queries[qid])
            test_rel.append(ids)
    if not test_q:
        raise ValueError(f"{name}: no test query has a relevant passage in the corpus (check the qrels' ids)")
    return RetrievalData(passages, train_q, train_pos, test_q, test_rel, name)


def load_msmarco(data_dir: str | os.PathLike) -> RetrievalData:
    """MS MARCO passage ranking from its TSV files (see the module's docstring)."""
    root = Path(data_dir)
    collection = _read_tsv(_first(root, ["collection.tsv"], "MS MARCO collection"), 2)
    queries = {}
    for names in (["queries.train.tsv"], ["queries.dev.small.tsv", "queries.dev.tsv"]):
        try:
            queries.update({r[0]: r[1] for r in _read_tsv(_first(root, names, "queries"), 2)})
        except FileNotFoundError:
            if names[0] != "queries.train.tsv":
                raise
    test_qrels = _qrels(_read_tsv(_first(root, ["qrels.dev.small.tsv", "qrels.dev.tsv"], "MS MARCO dev qrels"), 4), 0, 2, 3)
    try:
        train_qrels = _qrels(_read_tsv(_first(root, ["qrels.train.tsv"], "train qrels"), 4), 0, 2, 3)
    except FileNotFoundError:
        train_qrels = {}
    return _assemble("msmarco", [r[0] for r in collection], [r[1] for r in collection], queries, train_qrels, test_qrels)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not a JSON line ({exc.msg})") from None
    return rows


def load_beir(data_dir: str | os.PathLike) -> RetrievalData:
    """A BEIR dataset folder (see the module's docstring); the title is prepended to the text."""
    root = Path(data_dir)
    corpus = _read_jsonl(_first(root, ["corpus.jsonl"], "BEIR corpus"))
    queries = {str(r["_id"]): r["text"] for r in _read_jsonl(_first(root, ["queries.jsonl"], "BEIR queries"))}
    pids = [str(r["_id"]) for r in corpus]
    passages = [(r.get("title", "") + " " + r.get("text", "")).strip() for r in corpus]

    def qrels(names):
        rows = _read_tsv(_first(root, [f"qrels/{n}" for n in names], "BEIR qrels"), 3)
        return _qrels(rows[1:] if rows and not rows[0][2].lstrip("-").isdigit() else rows, 0, 1, 2)

    test = qrels(["test.tsv", "dev.tsv"])
    try:
        train = qrels(["train.tsv"])
    except FileNotFoundError:
        train = {}
    return _assemble("beir", pids, passages, queries, train, test)


def load_retrieval(name: str, data_dir: str | os.PathLike | None = None, **wiki_options) -> RetrievalData:
    """A retrieval dataset by name: ``wikilinks`` and ``gensim_wiki`` (inverse cloze) offline,
    ``msmarco`` / ``beir`` from ``data_dir``; ``wiki_options`` go to the offline loader."""
    if name not in RETRIEVAL_DATASETS:
        raise ValueError(f"unknown retrieval dataset {name!r}; known: {', '.join(RETRIEVAL_DATASETS)}")
    if name == "wikilinks":
        return load_wikilinks(**wiki_options)
    if name == "gensim_wiki":
        return load_gensim_wiki(**wiki_options)
    check_files(name, data_dir)
    return (load_msmarco if name == "msmarco" else load_beir)(data_dir)


def check_files(name: str, data_dir: str | os.PathLike | None) -> None:
    """Within milliseconds, a :class:`~datamodules.DatasetNotFoundError` naming what is missing
    when ``data_dir`` lacks a file that ``name`` needs (the CLI checks this before any unit)."""
    if name in ("wikilinks", "gensim_wiki"):
        return
    if data_dir is None:
        raise DatasetNotFoundError(f"dataset {name!r} needs --data-dir (its TSV/JSONL files); got none")
    root = Path(data_dir)
    if name == "msmarco":
        _first(root, ["collection.tsv"], "MS MARCO collection")
        _first(root, ["queries.dev.small.tsv", "queries.dev.tsv"], "MS MARCO dev queries")
        _first(root, ["qrels.dev.small.tsv", "qrels.dev.tsv"], "MS MARCO dev qrels")
    else:
        _first(root, ["corpus.jsonl"], "BEIR corpus")
        _first(root, ["queries.jsonl"], "BEIR queries")
        _first(root, ["qrels/test.tsv", "qrels/dev.tsv"], "BEIR qrels")


# --------------------------------------------------------------------------------------
# Tokenised tensors and the DataModule
# --------------------------------------------------------------------------------------
def tokenize(tokenizer, texts: Sequence[str], max_len: int) -> torch.Tensor:
    """[N, max_len] int64 token ids ``[CLS] ... [SEP]`` right-padded with 0 ([PAD]) and
    truncated to ``max_len``; ``tokenizer`` is a ``tokenizers.Tokenizer`` whose special
    tokens are BERT's (:data:`datamodules.text.SPECIAL_TOKENS`)."""
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    out = np.zeros((len(texts), max_len), dtype=np.int64)
    for i, enc in enumerate(tokenizer.encode_batch(list(texts), add_special_tokens=False)):
        ids = [cls_id, *enc.ids[: max_len - 2], sep_id]
        out[i, : len(ids)] = ids
    return torch.from_numpy(out)


def pretrained_tokenizer(name: str):
    """The ``tokenizers.Tokenizer`` of a Hugging Face BERT-style checkpoint (name or local path)."""
    tok = checkpoint_backend_tokenizer(name)
    if tok.token_to_id("[CLS]") is None or tok.token_to_id("[PAD]") != 0:
        raise ValueError(f"tokenizer {name!r} is not BERT-style ([CLS], [SEP], [PAD]=0); got another vocabulary")
    return tok


class RetrievalDataModule(L.LightningDataModule):
    """Tokenised passages and queries of a :class:`RetrievalData`; batches of training
    query indices. The WordPiece tokenizer is trained offline on the corpus passages
    (:func:`datamodules.text.train_wordpiece`, cached on disk). ``prepare()`` loads
    everything once; the tensors are reused outside a fit (indexing, evaluation)."""

    def __init__(self, name: str = "gensim_wiki", data_dir: str | None = None, vocab_size: int = 4000,
                 query_max_len: int = 32, passage_max_len: int = 128, batch_size: int = 32, seed: int = 0,
                 max_train_queries: int | None = None, max_test_queries: int | None = None,
                 tokenizer_name: str | None = None, **wiki_options) -> None:
        super().__init__()
        self.tokenizer_name = tokenizer_name  # a Hugging Face BERT tokenizer (name or path) instead of training one
        self.name, self.data_dir, self.vocab_size = name, data_dir, vocab_size
        self.query_max_len, self.passage_max_len, self.batch_size, self.seed = query_max_len, passage_max_len, batch_size, seed
        self.max_train_queries, self.max_test_queries = max_train_queries, max_test_queries
        self.wiki_options = wiki_options
        self.data: RetrievalData | None = None

    def prepare(self) -> "RetrievalDataModule":
        if self.data is not None:
            return self
        from datamodules.text import train_wordpiece

        data = load_retrieval(self.name, self.data_dir, **self.wiki_options)
        rng = np.random.default_rng(self.seed)
        if self.max_train_queries is not None and len(data.train_queries) > self.max_train_queries:
            keep = np.sort(rng.permutation(len(data.train_queries))[: self.max_train_queries])
            data.train_queries = [data.train_queries[i] for i in keep]
            data.train_positive = [data.train_positive[i] for i in keep]
            if data.train_positive_text:
                data.train_positive_text = [data.train_positive_text[i] for i in keep]
        if self.max_test_queries is not None and len(data.test_queries) > self.max_test_queries:
            keep = np.sort(np.random.default_rng(0).permutation(len(data.test_queries))[: self.max_test_queries])
            data.test_queries = [data.test_queries[i] for i in keep]
            data.test_relevant = [data.test_relevant[i] for i in keep]
            data.test_groups = {g: [flags[i] for i in keep] for g, flags in data.test_groups.items()}
        if not data.train_queries:
            raise ValueError(f"{self.name}: no training queries (train qrels missing?); a dense retriever needs some")
        if self.tokenizer_name:
            self.tokenizer = pretrained_tokenizer(self.tokenizer_name)
            if data.markers:  # a pre-trained vocabulary gets the markers as added special tokens
                self.tokenizer.add_special_tokens(list(data.markers))
        elif data.markers or data.tokenizer_texts:
            self.tokenizer = train_wordpiece([*data.passages, *data.tokenizer_texts], self.vocab_size,
                                             extra_special=data.markers or ())
        else:  # the inverse-cloze corpus: the tokenizer of its reference runs (same texts, same cache key)
            self.tokenizer = train_wordpiece(data.passages, self.vocab_size)
        # the marker ids (None: no span pooling), and the vocabulary the encoder needs
        self.marker_ids = tuple(self.tokenizer.token_to_id(t) for t in data.markers) if data.markers else None
        self.vocab_size = max(self.vocab_size, self.tokenizer.get_vocab_size())
        self.passage_tokens = tokenize(self.tokenizer, data.passages, self.passage_max_len)  # [P, Lp]
        self.train_query_tokens = tokenize(self.tokenizer, data.train_queries, self.query_max_len)  # [Q, Lq]
        self.test_query_tokens = tokenize(self.tokenizer, data.test_queries, self.query_max_len)  # [Qt, Lq]
        self.val_query_tokens = tokenize(self.tokenizer, data.val_queries, self.query_max_len)  # [Qv, Lq] (may be empty)
        self.train_positive = torch.as_tensor(data.train_positive, dtype=torch.long)  # [Q]
        # [Q, Lp] each training query's positive: its corpus passage, or its own text (ICT, all_train_sentences)
        self.train_positive_tokens = (tokenize(self.tokenizer, data.train_positive_text, self.passage_max_len)
                                      if data.train_positive_text else self.passage_tokens[self.train_positive])
        self.data = data
        return self

    def prepare_data(self) -> None:
        """Only checks that a real dataset's files and a named tokenizer are there (the harness's preflight)."""
        check_files(self.name, self.data_dir)
        if self.tokenizer_name:
            pretrained_tokenizer(self.tokenizer_name)

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """Shuffled batches of training query indices (the module looks up their tokens)."""
        self.prepare()
        gen = torch.Generator().manual_seed(self.seed)
        return torch.utils.data.DataLoader(torch.arange(len(self.train_positive)), batch_size=self.batch_size,
                                           shuffle=True, drop_last=True, generator=gen)
