"""Text corpora: gensim's Wikipedia extract (offline default), plain text and WikiText.

Offline default: the English Wikipedia XML extract that ships with gensim's test data
(``enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``: 206 pages, of
which 106 are articles of at least 50 words once redirects, non-article namespaces and
markup are removed; about 480k words). Its ``[[target|mention]]`` wikilinks give real
mention -> entity pairs (:attr:`Article.links`).

Real corpora read from ``--data-dir``:
- ``plain``: ``train.txt`` (+ optional ``valid.txt``, ``test.txt``), one document a line;
- ``wikitext``: WikiText raw files ``wiki.{train,valid,test}.raw`` (WikiText-2/103 raw),
  articles split at the top-level `` = Title = `` headings.

Public API (reused by other benchmarks):
- :func:`load_wiki_articles` -> list of :class:`Article` (title, cleaned text, links);
- :func:`mention_entity_pairs` -> (mention, entity, source article) for every wikilink;
- :func:`load_corpus` -> :class:`TextCorpus` (train/validation/test documents);
- :func:`cache_dir` -> where derived artefacts (cleaned articles, tokenizers) are cached.
Tokenising and the MLM DataModule are in :mod:`datamodules.text`.
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from datamodules import DatasetNotFoundError  # a missing real dataset: the CLI exits 3

CORPORA = ("gensim_wiki", "plain", "wikitext")
GENSIM_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MIN_ARTICLE_WORDS = 50  # gensim.corpora.wikicorpus.ARTICLE_MIN_WORDS


@dataclass(frozen=True)
class Article:
    """One document: its title, plain text, and (mention, entity title) wikilink pairs."""

    title: str
    text: str
    links: tuple[tuple[str, str], ...] = ()


@dataclass
class TextCorpus:
    """Documents split by document (never a document in two splits)."""

    train: list[Article]
    validation: list[Article]
    test: list[Article]
    name: str = ""

    def split(self, name: str) -> list[Article]:
        splits = {"train": self.train, "validation": self.validation, "test": self.test}
        if name not in splits:
            raise ValueError(f"unknown split {name!r}; known: {', '.join(splits)}")
        return splits[name]


# --------------------------------------------------------------------------------------
# Wikipedia markup
# --------------------------------------------------------------------------------------
_LINK = re.compile(r"\[\[([^\[\]|]+?)(?:\|([^\[\]]*?))?\]\]")
_HEADING = re.compile(r"^\s*=+\s*(.*?)\s*=+\s*$")
_TABLE_LINE = re.compile(r"^\s*(\{\||\|\}|\||!)")
_BOLD_ITALIC = re.compile(r"'{2,}")
_LIST_MARK = re.compile(r"^[*#:;]+\s*")
_SPACES = re.compile(r"[ \t\u00a0]+")


def gensim_wiki_path() -> Path:
    """Path of the Wikipedia extract inside the installed gensim package."""
    from gensim.test.utils import datapath

    path = Path(datapath(GENSIM_WIKI_FILE))
    if not path.exists():
        raise FileNotFoundError(f"gensim's test data lacks {GENSIM_WIKI_FILE}; reinstall gensim (pip install gensim)")
    return path


def extract_wikilinks(markup: str) -> list[tuple[str, str]]:
    """(mention, entity) pairs of the article links in raw wiki markup.

    ``[[Target|shown]]`` -> ("shown", "Target"); ``[[Target]]`` -> ("Target", "Target");
    links into other namespaces (``File:``, ``Category:``, interlanguage) are skipped, as
    is a ``#section`` suffix of the target. Entity titles get a capital first letter and
    spaces for underscores, as MediaWiki resolves them.
    """
    pairs = []
    for target, shown in _LINK.findall(markup):
        if ":" in target:
            continue
        entity = target.split("#", 1)[0].replace("_", " ").strip()
        mention = (shown or target).strip()
        if not entity or not mention:
            continue
        pairs.append((mention, entity[0].upper() + entity[1:]))
    return pairs


def clean_wiki_markup(markup: str) -> str:
    """Plain text of raw wiki markup: gensim's ``filter_wiki`` (templates, refs, links,
    files, tags) and then what it leaves: bold/italic quotes, headings, table rows, list
    markers, repeated blank lines. Paragraphs stay separated by a newline."""
    from gensim.corpora.wikicorpus import filter_wiki

    lines = []
    for line in filter_wiki(markup).splitlines():
        if _HEADING.match(line) or _TABLE_LINE.match(line):
            continue
        line = _SPACES.sub(" ", _LIST_MARK.sub("", _BOLD_ITALIC.sub("", line))).strip()
        if len(line.split()) >= 3:  # drop stray captions and list stubs
            lines.append(line)
    return "\n".join(lines)


def iter_wiki_articles(path: str | os.PathLike, min_words: int = MIN_ARTICLE_WORDS) -> Iterator[Article]:
    """Stream articles from a MediaWiki XML dump (``.bz2`` or plain), skipping redirects,
    non-article namespaces and articles shorter than ``min_words`` words after cleaning."""
    from gensim.corpora.wikicorpus import IGNORED_NAMESPACES, extract_pages

    opener = bz2.open if str(path).endswith(".bz2") else open
    with opener(path, "rb") as fh:
        for title, markup, _pageid in extract_pages(fh):
            if markup.lstrip().lower().startswith("#redirect"):
                continue
            if any(title.startswith(ns + ":") for ns in IGNORED_NAMESPACES):
                continue
            text = clean_wiki_markup(markup)
            if len(text.split()) < min_words:
                continue
            yield Article(title, text, tuple(extract_wikilinks(markup)))


CLEANER_VERSION = 1  # bump when clean_wiki_markup / extract_wikilinks change: invalidates disk caches


@functools.lru_cache(maxsize=4)
def _cached_wiki_articles(path: str, min_words: int) -> tuple[Article, ...]:
    """Articles of a dump, cached in memory and as JSON under :func:`cache_dir`."""
    stat = Path(path).stat()
    key = hashlib.sha256(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{min_words}|{CLEANER_VERSION}".encode())
    cached = cache_dir() / f"wiki-articles-{key.hexdigest()[:16]}.json"
    if cached.exists():
        rows = json.loads(cached.read_text(encoding="utf-8"))
        return tuple(Article(r["title"], r["text"], tuple(map(tuple, r["links"]))) for r in rows)
    articles = tuple(iter_wiki_articles(path, min_words))
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps([{"title": a.title, "text": a.text, "links": a.links} for a in articles]), encoding="utf-8")
    os.replace(tmp, cached)
    return articles


def load_wiki_articles(path: str | os.PathLike | None = None, min_words: int = MIN_ARTICLE_WORDS) -> list[Article]:
    """Cleaned articles (title, text, wikilinks) of a Wikipedia dump; gensim's by default."""
    return list(_cached_wiki_articles(str(path or gensim_wiki_path()), min_words))


def mention_entity_pairs(articles: Sequence[Article]) -> list[tuple[str, str, str]]:
    """(mention, entity title, title of the article it occurs in) for every wikilink."""
    return [(m, e, a.title) for a in articles for m, e in a.links]


# --------------------------------------------------------------------------------------
# Real corpora from --data-dir
# --------------------------------------------------------------------------------------
def read_plain_text(path: str | os.PathLike) -> list[Article]:
    """One document per non-empty line; titles are ``"<file stem>:<line number>"``."""
    path = Path(path)
    docs = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            line = line.strip()
            if line:
                docs.append(Article(f"{path.stem}:{i}", line))
    return docs


_WT_TITLE = re.compile(r"^ = ([^=].*?) = $")


def read_wikitext(path: str | os.PathLike) -> list[Article]:
    """Articles of a WikiText raw file: each starts at a line `` = Title = `` (one ``=``
    each side; `` = = Section = = `` lines are headings inside it and are dropped)."""
    docs: list[Article] = []
    title, lines = None, []

    def flush() -> None:
        if title is not None and lines:
            docs.append(Article(title, "\n".join(lines)))

    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            m = _WT_TITLE.match(line)
            if m:
                flush()
                title, lines = m.group(1).strip(), []
            elif line.strip() and not _HEADING.match(line):
                lines.append(line.strip())
    flush()
    return docs


def split_documents(docs: Sequence[Article], seed: int, val_frac: float = 0.1, test_frac: float = 0.1):
    """Shuffle documents with ``seed`` and cut them into (train, validation, test)."""
    if not 0 <= val_frac < 1 or not 0 <= test_frac < 1 or val_frac + test_frac >= 1:
        raise ValueError(f"val_frac={val_frac}, test_frac={test_frac}: each in [0, 1) with sum < 1")
    if len(docs) < 3:
        raise ValueError(f"need at least 3 documents to split, got {len(docs)}")
    order = np.random.default_rng(seed).permutation(len(docs))
    n_test = max(1, round(test_frac * len(docs)))
    n_val = max(1, round(val_frac * len(docs)))
    pick = lambda idx: [docs[i] for i in sorted(idx)]  # noqa: E731  (keep the file's order)
    return pick(order[n_test + n_val :]), pick(order[n_test : n_test + n_val]), pick(order[:n_test])


def load_corpus(
    name: str = "gensim_wiki",
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
) -> TextCorpus:
    """A corpus by name (``gensim_wiki`` offline, ``plain`` / ``wikitext`` from data_dir).

    Files given as validation/test splits are used as such; otherwise the documents are
    split by document with ``seed``.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    if name == "gensim_wiki":
        return TextCorpus(*split_documents(load_wiki_articles(), seed, val_frac, test_frac), name=name)
    found = corpus_files(name, data_dir)
    reader = read_plain_text if name == "plain" else read_wikitext
    train = reader(found[0])
    if found[1] is not None and found[2] is not None:
        return TextCorpus(train, reader(found[1]), reader(found[2]), name=name)
    return TextCorpus(*split_documents(train, seed, val_frac, test_frac), name=name)


def corpus_files(name: str, data_dir: str | os.PathLike | None) -> list[Path | None]:
    """The (train, valid, test) files of a ``plain`` / ``wikitext`` corpus under ``data_dir`` (valid and test may be
    None); a :class:`DatasetNotFoundError` saying what to put where when the training file is missing."""
    if data_dir is None:
        raise DatasetNotFoundError(f"corpus {name!r} needs --data-dir; {_EXPECTED[name]}")
    root = Path(data_dir)
    names = {"plain": ("train.txt", "valid.txt", "test.txt"), "wikitext": ("wiki.train.raw", "wiki.valid.raw", "wiki.test.raw")}[name]
    found = [_find(root, n) for n in names]
    if found[0] is None:
        raise DatasetNotFoundError(f"no {names[0]} under {root}; {_EXPECTED[name]}")
    return found


_EXPECTED = {
    "plain": "put train.txt (and optionally valid.txt, test.txt), one document per line, in it",
    "wikitext": "put WikiText raw files wiki.train.raw, wiki.valid.raw, wiki.test.raw "
    "(from wikitext-103-raw-v1.zip or wikitext-2-raw-v1.zip) in it",
}


def _find(root: Path, filename: str) -> Path | None:
    if (root / filename).is_file():
        return root / filename
    return next(iter(sorted(root.glob(f"*/{filename}"))), None)


def cache_dir() -> Path:
    """``$ICLRBENCH_CACHE`` or ``~/.cache/iclrbench``."""
    path = Path(os.environ.get("ICLRBENCH_CACHE", Path.home() / ".cache" / "iclrbench"))
    path.mkdir(parents=True, exist_ok=True)
    return path
