"""Word corpora for static word embeddings, and the word-similarity / analogy sets.

Corpora (one sentence = one paragraph or line, lower-cased words, punctuation dropped):
- ``gensim_wiki`` (offline default): every article of gensim's Wikipedia extract, read and
  cleaned by :mod:`datamodules.corpora`, one paragraph a sentence (about 460k words);
- ``plain``: ``train.txt`` under ``--data-dir`` (a WikiText or OpenWebText dump as plain
  text, one document a line), read streaming: lines are tokenised in batches and reading
  stops after ``max_words`` words, so a dump of any size can be given;
- ``wikitext``: WikiText raw files (``wiki.train.raw``), read by :func:`datamodules.corpora.read_wikitext`.

Words come from the same tokeniser as the other text benchmarks (a BERT-style normaliser and
pre-tokeniser via :func:`datamodules.text.train_wordpiece` and :func:`datamodules.text.encode_words`:
lower case, accents stripped, punctuation split off); tokens without a letter or digit are
dropped. The vocabulary is cut by frequency (``vocab_size`` most frequent words with at least
``min_count`` occurrences); out-of-vocabulary words are removed from the sentences before any
window is formed, as gensim's Word2Vec does, so both methods see the same token stream.

Evaluation sets, shipped in gensim's test data: WordSim-353 (``wordsim353.tsv``), SimLex-999
(``simlex999.txt``) and the Google analogy questions (``questions-words.txt``).
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from datamodules import DatasetNotFoundError  # a missing real dataset: the CLI exits 3
from datamodules.corpora import cache_dir, gensim_wiki_path, load_wiki_articles, read_wikitext
from datamodules.text import encode_words, train_wordpiece

CORPORA = ("gensim_wiki", "plain", "wikitext")
SIMILARITY_SETS = {"ws353": "wordsim353.tsv", "simlex": "simlex999.txt"}
ANALOGY_FILE = "questions-words.txt"
TOKENIZER_VOCAB = 8000  # WordPiece pieces; only its normaliser and pre-tokeniser shape the words
TOKENIZER_SAMPLE_DOCS = 2000  # documents a streamed corpus's tokenizer is trained on
MAX_SENTENCE_WORDS = 10000  # gensim's MAX_WORDS_IN_BATCH: Word2Vec truncates longer sentences
STREAM_BATCH = 1000  # lines tokenised per encode_batch call when streaming
CORPUS_VERSION = 1  # bump when tokenising changes: invalidates cached corpora


def gensim_test_file(filename: str) -> Path:
    from gensim.test.utils import datapath

    path = Path(datapath(filename))
    if not path.exists():
        raise FileNotFoundError(f"gensim's test data lacks {filename}; reinstall gensim (pip install gensim)")
    return path


# --------------------------------------------------------------------------------------
# Evaluation sets
# --------------------------------------------------------------------------------------
def load_similarity_pairs(name: str) -> list[tuple[str, str, float]]:
    """(word 1, word 2, human score) of ``ws353`` or ``simlex``, words lower-cased."""
    if name not in SIMILARITY_SETS:
        raise ValueError(f"unknown similarity set {name!r}; known: {', '.join(SIMILARITY_SETS)}")
    pairs = []
    for line in gensim_test_file(SIMILARITY_SETS[name]).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        a, b, score = line.split("\t")[:3]
        pairs.append((a.lower(), b.lower(), float(score)))
    return pairs


SPLITS = ("tune", "eval")


def split_pairs(pairs: list[tuple[str, str, float]], split: str) -> list[tuple[str, str, float]]:
    """The tuning (``"tune"``) or the judged (``"eval"``) half of a similarity set: a pair belongs to the tuning half
    when the CRC-32 of ``"word1 word2"`` is even. Fixed by the words alone, so every corpus, seed and run splits alike
    (WS353: 174 tuning pairs of 353; SimLex: 481 of 999)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    even = split == "tune"
    return [p for p in pairs if (zlib.crc32(f"{p[0]} {p[1]}".encode()) % 2 == 0) == even]


def load_analogy_questions() -> list[tuple[str, str, str, str, str]]:
    """(section, a, b, c, d) of the Google analogy questions (a : b :: c : d), lower-cased."""
    out, section = [], ""
    for line in gensim_test_file(ANALOGY_FILE).read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            section = line[1:].strip()
        elif line.strip():
            a, b, c, d = line.lower().split()
            out.append((section, a, b, c, d))
    return out


# --------------------------------------------------------------------------------------
# Corpora
# --------------------------------------------------------------------------------------
@dataclass
class WordCorpus:
    """A tokenised corpus over a frequency-cut vocabulary.

    ``vocab[i]`` is the word of id ``i`` (most frequent first), ``counts[i]`` its count in
    the kept stream, ``sentences`` arrays of word ids (out-of-vocabulary words removed).
    """

    vocab: list[str]
    counts: np.ndarray
    sentences: list[np.ndarray]
    name: str = ""

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def num_tokens(self) -> int:
        return int(sum(len(s) for s in self.sentences))

    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}

    def word_lists(self) -> list[list[str]]:
        """The sentences as lists of words (what gensim's Word2Vec takes)."""
        return [[self.vocab[i] for i in s] for s in self.sentences]


def _keep(word: str) -> bool:
    return any(ch.isalnum() for ch in word)


def _split_long(words: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(words), MAX_SENTENCE_WORDS):
        yield words[start : start + MAX_SENTENCE_WORDS]


def tokenize_lines(lines: Iterable[str], tokenizer, max_words: int | None = None) -> Iterator[list[str]]:
    """Word lists of text lines, tokenised ``STREAM_BATCH`` lines at a time; stops after ``max_words``."""
    total, batch = 0, []

    def flush(batch):
        for words, _ids in encode_words(tokenizer, batch):
            yield from _split_long([w for w in words if _keep(w)])

    for line in lines:
        if line.strip():
            batch.append(line.strip())
        if len(batch) == STREAM_BATCH:
            for words in flush(batch):
                if max_words is not None and total >= max_words:
                    return
                words = words if max_words is None else words[: max_words - total]
                total += len(words)
                yield words
            batch = []
    for words in flush(batch):
        if max_words is not None and total >= max_words:
            return
        words = words if max_words is None else words[: max_words - total]
        total += len(words)
        yield words


def _find(root: Path, filename: str) -> Path | None:
    """``root/filename`` or the first ``root/*/filename``."""
    if (root / filename).is_file():
        return root / filename
    return next(iter(sorted(root.glob(f"*/{filename}"))), None)


def _iter_lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        yield from fh


def _head(path: Path, n: int) -> list[str]:
    out = []
    for line in _iter_lines(path):
        if line.strip():
            out.append(line.strip())
            if len(out) >= n:
                break
    return out


def corpus_sentences(name: str = "gensim_wiki", data_dir: str | os.PathLike | None = None,
                     max_words: int | None = None) -> Iterator[list[str]]:
    """Stream the word lists (sentences) of a corpus; see the module docstring."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    if name == "gensim_wiki":
        articles = load_wiki_articles()
        tokenizer = train_wordpiece([a.text for a in articles], TOKENIZER_VOCAB)
        yield from tokenize_lines((p for a in articles for p in a.text.split("\n")), tokenizer, max_words)
        return
    if data_dir is None:
        raise DatasetNotFoundError(f"corpus {name!r} needs --data-dir; {_EXPECTED[name]}")
    filename = {"plain": "train.txt", "wikitext": "wiki.train.raw"}[name]
    path = _find(Path(data_dir), filename)
    if path is None:
        raise DatasetNotFoundError(f"no {filename} under {data_dir}; {_EXPECTED[name]}")
    if name == "wikitext":
        lines = [line for doc in read_wikitext(path) for line in doc.text.split("\n")]
        tokenizer = train_wordpiece(lines[:TOKENIZER_SAMPLE_DOCS], TOKENIZER_VOCAB)
        yield from tokenize_lines(lines, tokenizer, max_words)
        return
    tokenizer = train_wordpiece(_head(path, TOKENIZER_SAMPLE_DOCS), TOKENIZER_VOCAB)
    yield from tokenize_lines(_iter_lines(path), tokenizer, max_words)


_EXPECTED = {
    "plain": "put train.txt (one document per line, e.g. an OpenWebText or WikiText dump as plain text) in it",
    "wikitext": "put the WikiText raw file wiki.train.raw (from wikitext-103-raw-v1.zip or wikitext-2-raw-v1.zip) in it",
}


def build_word_corpus(sentences: Iterable[list[str]], vocab_size: int, min_count: int = 1, name: str = "") -> WordCorpus:
    """Cut the vocabulary to the ``vocab_size`` most frequent words (count >= ``min_count``,
    ties broken alphabetically) and map the sentences to ids, dropping other words.

    One pass over ``sentences``: they are held as ids of the full vocabulary, then remapped.
    """
    if vocab_size < 1 or min_count < 1:
        raise ValueError(f"vocab_size and min_count must be >= 1; got {vocab_size}, {min_count}")
    full: dict[str, int] = {}
    raw: list[np.ndarray] = []
    for words in sentences:
        raw.append(np.fromiter((full.setdefault(w, len(full)) for w in words), dtype=np.int64, count=len(words)))
    counts = np.bincount(np.concatenate(raw), minlength=len(full)) if raw else np.zeros(0, dtype=np.int64)
    words_by_id = list(full)
    order = sorted((i for i in range(len(full)) if counts[i] >= min_count), key=lambda i: (-counts[i], words_by_id[i]))
    order = order[:vocab_size]
    if not order:
        raise ValueError("the corpus has no word with the minimum count; give more text or a lower min_count")
    remap = np.full(len(full), -1, dtype=np.int64)
    remap[np.asarray(order)] = np.arange(len(order))
    kept = [r[r >= 0] for r in (remap[s] for s in raw)]
    kept = [s for s in kept if len(s)]
    return WordCorpus([words_by_id[i] for i in order], counts[np.asarray(order)], kept, name)


def load_word_corpus(name: str = "gensim_wiki", data_dir: str | os.PathLike | None = None, vocab_size: int = 10000,
                     min_count: int = 5, max_words: int | None = None, cache: bool = True) -> WordCorpus:
    """:func:`build_word_corpus` over :func:`corpus_sentences`, cached as JSON under
    :func:`datamodules.corpora.cache_dir` (keyed by the corpus file, the settings and ``CORPUS_VERSION``)."""
    WordCorpusSource(name, None if data_dir is None else str(data_dir)).prepare_data()  # fails fast, with where files go
    if name == "gensim_wiki":
        source = gensim_wiki_path()
    else:
        source = _find(Path(data_dir), {"plain": "train.txt", "wikitext": "wiki.train.raw"}[name])
    stat = Path(source).stat()
    key = f"{Path(source).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{name}|{vocab_size}|{min_count}|{max_words}|{CORPUS_VERSION}"
    path = cache_dir() / f"word-corpus-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if cache and path.exists():  # JSON, not pickle: a cache file must not be able to run code
        saved = json.loads(path.read_text())
        return WordCorpus(saved["vocab"], np.asarray(saved["counts"], dtype=np.int64),
                          [np.asarray(s, dtype=np.int64) for s in saved["sentences"]], name)
    corpus = build_word_corpus(corpus_sentences(name, data_dir, max_words), vocab_size, min_count, name)
    if cache:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"vocab": corpus.vocab, "counts": corpus.counts.tolist(),
                                   "sentences": [s.tolist() for s in corpus.sentences]}))
        os.replace(tmp, path)
    return corpus


def in_vocab_pairs(pairs: list[tuple[str, str, float]], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids of word 1, ids of word 2, human scores) of the pairs with both words in ``index``."""
    kept = [(index[a], index[b], s) for a, b, s in pairs if a in index and b in index]
    if not kept:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    a, b, s = zip(*kept)
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64), np.asarray(s, dtype=np.float64)


@dataclass
class WordCorpusSource:
    """What a dataset factory returns: the corpus to load and how to cut it.
    ``prepare_data()`` checks within seconds that a ``--data-dir`` corpus is there."""

    name: str = "gensim_wiki"
    data_dir: str | None = None
    vocab_size: int = 10000
    min_count: int = 3
    max_words: int | None = None

    def prepare_data(self) -> None:
        if self.name == "gensim_wiki":
            gensim_wiki_path()
            return
        if self.name not in CORPORA:
            raise ValueError(f"unknown corpus {self.name!r}; known: {', '.join(CORPORA)}")
        if self.data_dir is None:
            raise DatasetNotFoundError(f"corpus {self.name!r} needs --data-dir; {_EXPECTED[self.name]}")
        filename = {"plain": "train.txt", "wikitext": "wiki.train.raw"}[self.name]
        if _find(Path(self.data_dir), filename) is None:
            raise DatasetNotFoundError(f"no {filename} under {self.data_dir}; {_EXPECTED[self.name]}")

    def load(self) -> WordCorpus:
        self.prepare_data()
        return load_word_corpus(self.name, self.data_dir, self.vocab_size, self.min_count, self.max_words)
