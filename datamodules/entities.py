"""Entity disambiguation data: (mention, context, entity) triples and a KB of titles.

Offline default (``gensim_wiki``): the wikilinks ``[[Target|anchor]]`` of the English
Wikipedia extract in gensim's test data (:mod:`datamodules.corpora`), about 30,000 real
mentions. The KB is the set of link targets' canonical titles (first letter capitalised,
underscores as spaces, redirects resolved where the extract has the redirect page) plus
the extract's article titles. A mention's context is the cleaned article text around it
(found in order; a mention not found in the cleaned text keeps an empty context).
Mentions are split into train / validation / test **by article**.

Real data from ``--data-dir`` (KILT format, as GENRE's entity-disambiguation sets ship):
- ``aida``: ``aidayago2-train-kilt.jsonl`` (train) and ``aidayago2-dev-kilt.jsonl``, whose
  first half (by document order) is the validation split and the whole the test split
  (KILT's AIDA test file has no answers);
- ``wned``: AIDA train for training, ``wned-dev-kilt.jsonl`` (and ``cweb-dev-kilt.jsonl``
  when present) for validation and test;
- the KB: ``kb_titles.txt`` (one title a line), else the titles of the files' answers.
Each KILT line is ``{"id", "input": "... [START_ENT] m [END_ENT] ...", "output":
[{"answer": title, "provenance": [{"title": title}]}], "meta": {"left_context",
"mention", "right_context"}}``; ``meta`` is used when present, else ``input`` is split.

Public API: :func:`load_entity_data` -> :class:`EntityData`; :func:`read_kilt_jsonl`;
:func:`mark_mention` (the model input); :func:`train_bpe` (a cached byte-level BPE
tokenizer with the entity markers as special tokens); :func:`gensim_training_articles` (the
training split's article text, for pre-training).
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import lightning as L

from datamodules import DatasetNotFoundError
from datamodules.corpora import CLEANER_VERSION, Article, cache_dir, gensim_wiki_path, load_wiki_articles, split_documents
from datamodules.text import cached_tokenizer, checkpoint_backend_tokenizer

ENTITY_DATASETS = ("gensim_wiki", "aida", "wned")
START_ENT, END_ENT = "[START_ENT]", "[END_ENT]"  # GENRE's mention markers
# BART's special tokens and ids (<s>=0, <pad>=1, </s>=2, <unk>=3), then the two markers
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", START_ENT, END_ENT)
KB_FILE = "kb_titles.txt"
KILT_FILES = {
    "aida": ("aidayago2-train-kilt.jsonl", ("aidayago2-dev-kilt.jsonl",)),
    "wned": ("aidayago2-train-kilt.jsonl", ("wned-dev-kilt.jsonl", "cweb-dev-kilt.jsonl")),
}


@dataclass(frozen=True)
class Mention:
    """One entity mention: its surface string, the words around it, the gold KB title."""

    mention: str
    left: str
    right: str
    entity: str
    doc: str = ""

    @property
    def is_exact(self) -> bool:
        """The trivial case: the mention (first letter capitalised) is the title itself."""
        return capitalise(self.mention) == self.entity


@dataclass
class EntityData:
    train: list[Mention]
    validation: list[Mention]
    test: list[Mention]
    kb: list[str]  # sorted, distinct titles; every split's gold entity is in it
    name: str = ""

    def seen_entities(self) -> set[str]:
        return {m.entity for m in self.train}


def capitalise(title: str) -> str:
    """MediaWiki's canonical form: underscores as spaces, first letter upper case."""
    title = title.replace("_", " ").strip()
    return title[:1].upper() + title[1:]


def mark_mention(m: Mention, context_words: int) -> str:
    """GENRE's input: ``left [START_ENT] mention [END_ENT] right``, ``context_words`` words each side."""
    left = " ".join(m.left.split()[-context_words:]) if context_words > 0 else ""
    right = " ".join(m.right.split()[:context_words]) if context_words > 0 else ""
    return " ".join(p for p in (left, START_ENT, m.mention, END_ENT, right) if p)


# --------------------------------------------------------------------------------------
# gensim's Wikipedia extract
# --------------------------------------------------------------------------------------
_REDIRECT = re.compile(r"#redirect\s*\[\[([^\]|#]+)", re.IGNORECASE)


@functools.lru_cache(maxsize=2)
def wiki_redirects(path: str | None = None) -> dict[str, str]:
    """Redirect page title -> canonical target title, for the redirect pages in the dump."""
    from gensim.corpora.wikicorpus import extract_pages

    path = str(path or gensim_wiki_path())
    opener = bz2.open if path.endswith(".bz2") else open
    out = {}
    with opener(path, "rb") as fh:
        for title, markup, _ in extract_pages(fh):
            m = _REDIRECT.match(markup.lstrip())
            if m:
                out[capitalise(title)] = capitalise(m.group(1))
    return out


def resolve(title: str, redirects: dict[str, str]) -> str:
    seen = set()
    while title in redirects and title not in seen:  # follow chains, stop on cycles
        seen.add(title)
        title = redirects[title]
    return title


def article_mentions(article: Article, redirects: dict[str, str], window: int = 32) -> list[Mention]:
    """The article's wikilinks as mentions, each located in the cleaned text in link order
    (search from the previous hit, then from the start); ``window`` words of context kept."""
    text, cursor, out = article.text, 0, []
    for mention, entity in article.links:
        at = text.find(mention, cursor)
        if at < 0:
            at = text.find(mention)
        if at < 0:
            left = right = ""
        else:
            span = 20 * window  # characters: enough for ``window`` words, without splitting the whole text
            left = " ".join(text[max(0, at - span):at].split()[-window:])
            right = " ".join(text[at + len(mention):at + len(mention) + span].split()[:window])
            cursor = at + len(mention)
        out.append(Mention(mention, left, right, resolve(entity, redirects), article.title))
    return out


ENTITY_DATA_VERSION = 1  # bump when article_mentions / the KB change: invalidates disk caches


def gensim_training_articles(seed: int = 0, val_frac: float = 0.1, test_frac: float = 0.15) -> list[Article]:
    """The extract's articles whose links are :func:`load_gensim_entities`'s training mentions (the same split):
    text a model may pre-train on, since held-out articles hold the validation and test mentions' contexts."""
    return split_documents(load_wiki_articles(), seed, val_frac, test_frac)[0]


def load_gensim_entities(seed: int = 0, val_frac: float = 0.1, test_frac: float = 0.15) -> EntityData:
    """The extract's wikilinks split by article with ``seed``; cached as JSON under :func:`cache_dir`."""
    path = gensim_wiki_path()
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{seed}|{val_frac}|{test_frac}|"
                         f"{CLEANER_VERSION}|{ENTITY_DATA_VERSION}".encode()).hexdigest()[:16]
    cached = cache_dir() / f"wiki-entities-{key}.json"
    if cached.exists():
        raw = json.loads(cached.read_text(encoding="utf-8"))
        splits = [[Mention(*row) for row in raw[part]] for part in ("train", "validation", "test")]
        return EntityData(*splits, kb=raw["kb"], name="gensim_wiki")
    articles = load_wiki_articles()
    redirects = wiki_redirects()
    train, val, test = split_documents(articles, seed, val_frac, test_frac)
    splits = [[m for a in part for m in article_mentions(a, redirects)] for part in (train, val, test)]
    kb = sorted({m.entity for part in splits for m in part} | {capitalise(a.title) for a in articles})
    raw = {"kb": kb, **{name: [astuple(m) for m in part] for name, part in zip(("train", "validation", "test"), splits)}}
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(raw), encoding="utf-8")
    os.replace(tmp, cached)
    return EntityData(*splits, kb=kb, name="gensim_wiki")


# --------------------------------------------------------------------------------------
# KILT JSONL
# --------------------------------------------------------------------------------------
def _kilt_record(record: dict, where: str) -> Mention | None:
    meta = record.get("meta") or {}
    if "mention" in meta:
        left, mention, right = meta.get("left_context", ""), meta["mention"], meta.get("right_context", "")
    else:
        text = record.get("input", "")
        if START_ENT not in text or END_ENT not in text:
            raise ValueError(f"{where}: expected meta.mention or an input with {START_ENT} ... {END_ENT}; got {text[:80]!r}")
        left, rest = text.split(START_ENT, 1)
        mention, right = rest.split(END_ENT, 1)
    outputs = record.get("output") or []
    titles = [p["title"] for o in outputs for p in (o.get("provenance") or []) if p.get("title")]
    titles += [o["answer"] for o in outputs if o.get("answer")]
    if not titles:
        return None  # a test file without answers
    return Mention(mention.strip(), left.strip(), right.strip(), capitalise(titles[0]), str(record.get("id", "")))


def read_kilt_jsonl(path: str | os.PathLike) -> list[Mention]:
    """Mentions of a KILT entity-disambiguation file (records without an answer skipped)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: expected one JSON object per line; got {line[:60]!r} ({exc.msg})") from None
            m = _kilt_record(record, f"{path}:{i}")
            if m is not None:
                out.append(m)
    return out


def kilt_files(name: str, data_dir: str | os.PathLike | None) -> dict[str, Path | None]:
    """The KILT files ``name`` reads from ``data_dir`` (None: an optional one not there); a
    :class:`~datamodules.DatasetNotFoundError` naming what is missing, within milliseconds."""
    train_file, eval_files = KILT_FILES[name]
    expected = (f"dataset {name!r} reads KILT JSONL from --data-dir: {train_file} and {' / '.join(eval_files)} "
                f"(from the KILT release), plus optionally {KB_FILE} (one KB title a line)")
    if data_dir is None:
        raise DatasetNotFoundError(expected + "; no --data-dir given")
    root = Path(data_dir)
    found = {f: _find(root, f) for f in (train_file, *eval_files, KB_FILE)}
    if found[train_file] is None or found[eval_files[0]] is None:
        raise DatasetNotFoundError(f"{expected}; not found under {root}")
    return found


def load_kilt(name: str, data_dir: str | os.PathLike | None) -> EntityData:
    train_file, eval_files = KILT_FILES[name]
    found = kilt_files(name, data_dir)
    train = read_kilt_jsonl(found[train_file])
    evaluation = [m for f in eval_files if found[f] is not None for m in read_kilt_jsonl(found[f])]
    validation = evaluation[: max(1, len(evaluation) // 2)] if name == "aida" else evaluation
    titles = {m.entity for part in (train, evaluation) for m in part}
    if found[KB_FILE] is not None:
        with open(found[KB_FILE], encoding="utf-8") as fh:
            titles |= {capitalise(line) for line in fh if line.strip()}
    return EntityData(train, validation, evaluation, kb=sorted(titles), name=name)


def _find(root: Path, filename: str) -> Path | None:
    if (root / filename).is_file():
        return root / filename
    return next(iter(sorted(root.glob(f"*/{filename}"))), None)


def load_entity_data(name: str = "gensim_wiki", data_dir: str | os.PathLike | None = None, seed: int = 0) -> EntityData:
    """A dataset by name: ``gensim_wiki`` offline, ``aida`` / ``wned`` (KILT) from ``data_dir``."""
    if name not in ENTITY_DATASETS:
        raise ValueError(f"unknown entity dataset {name!r}; known: {', '.join(ENTITY_DATASETS)}")
    if name == "gensim_wiki":
        return load_gensim_entities(seed)
    return load_kilt(name, data_dir)


def subsample(mentions: Sequence[Mention], n: int | None, seed: int) -> list[Mention]:
    """At most ``n`` mentions, drawn without replacement with ``seed`` (all when ``n`` is None)."""
    import random

    if n is None or n >= len(mentions):
        return list(mentions)
    picked = sorted(random.Random(seed).sample(range(len(mentions)), n))
    return [mentions[i] for i in picked]


# --------------------------------------------------------------------------------------
# Trivial baselines
# --------------------------------------------------------------------------------------
def alias_table(train: Iterable[Mention]) -> dict[str, str]:
    """Lower-cased mention -> its most frequent entity in training (p(e|m)'s mode)."""
    counts: dict[str, Counter] = {}
    for m in train:
        counts.setdefault(m.mention.lower(), Counter())[m.entity] += 1
    return {k: c.most_common(1)[0][0] for k, c in counts.items()}


def trivial_prediction(m: Mention, kb_lower: dict[str, str], aliases: dict[str, str] | None = None) -> str | None:
    """The string-match baseline: the alias table's entity when given and known, else the KB
    title equal to the mention up to case (``kb_lower``: lower-cased title -> title), else None."""
    key = m.mention.lower()
    if aliases is not None and key in aliases:
        return aliases[key]
    return kb_lower.get(key)


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------
def train_bpe(texts: Sequence[str], vocab_size: int = 8000, lowercase: bool = True, cache: bool = True):
    """A byte-level BPE ``tokenizers.Tokenizer`` (BART's kind) trained on ``texts``, with
    :data:`SPECIAL_TOKENS` as ids 0..5; cached under :func:`cache_dir` by a hash of the
    texts and settings, so every unit of a run loads the same one."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes + specials), got {vocab_size}")
    def build():
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer=trainer)
        return tok

    return cached_tokenizer("bpe", f"bpe|{vocab_size}|{lowercase}|", texts, build, cache)


def checkpoint_tokenizer(name: str):
    """The ``tokenizers.Tokenizer`` of a pre-trained BART-style checkpoint (a Hugging Face name or a local folder),
    for models that start from it (genre's ``checkpoint``): its byte-level BPE with ``<s> <pad> </s> <unk>`` as ids
    0..3, as :func:`train_bpe`'s; the mention markers added as special tokens after its vocabulary, and a prefix space
    added to every piece (a mention, its context, a title are encoded apart; this way each starts as a word does
    inside running text, as :func:`train_bpe` does). The checkpoint's case is kept (``lowercase`` is :func:`train_bpe`'s)."""
    from tokenizers import pre_tokenizers

    tok = checkpoint_backend_tokenizer(name)
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS[:4]]
    if ids != [0, 1, 2, 3]:
        raise ValueError(f"tokenizer {name!r} is not BART-style (<s> <pad> </s> <unk> = ids 0 1 2 3); got ids {ids}")
    tok.add_special_tokens([START_ENT, END_ENT])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    return tok


# --------------------------------------------------------------------------------------
# Tokenised examples and the DataModule
# --------------------------------------------------------------------------------------
PAD_ID, EOS_ID = 1, 2
# How the model input is laid out. "context" is GENRE's ``left [START_ENT] mention [END_ENT] right``.
# "mention_first" moves the marked mention to the front, ``[START_ENT] mention [END_ENT] left right``:
# a stand-in for BART's pre-training at CPU scale, where a seq2seq trained from scratch must first
# learn to copy from wherever the mention sits (quick, 500 steps: acc@1 0.03 with the context order,
# 0.43 mention-first; the dual encoder gets the same input).
SOURCE_ORDERS = ("context", "mention_first")


class EntityDataModule(L.LightningDataModule):
    """Mentions tokenised for both models: GENRE's ``(marked context -> title </s>)`` pairs,
    and the dual encoder's (context, title) pairs with the title's KB index.

    ``setup()`` loads the dataset, trains (or loads the cached) tokenizer on the training
    contexts and the KB titles (``tokenizer_name``: a pre-trained checkpoint's instead, see
    :func:`checkpoint_tokenizer`), and tokenises every KB title (``title_ids[i]`` ends with
    ``</s>``).
    """

    def __init__(self, name: str = "gensim_wiki", data_dir: str | None = None, seed: int = 0, context_words: int = 8,
                 max_source_len: int = 64, vocab_size: int = 8000, lowercase: bool = True, batch_size: int = 32,
                 max_train_mentions: int | None = None, source_order: str = "context", title_pairs: bool = False,
                 tokenizer_name: str | None = None):
        super().__init__()
        self.title_pairs, self.tokenizer_name = title_pairs, tokenizer_name
        if source_order not in SOURCE_ORDERS:
            raise ValueError(f"source_order must be one of {', '.join(SOURCE_ORDERS)}; got {source_order!r}")
        self.source_order = source_order
        self.max_train_mentions = max_train_mentions
        if name not in ENTITY_DATASETS:
            raise ValueError(f"unknown entity dataset {name!r}; known: {', '.join(ENTITY_DATASETS)}")
        self.name, self.data_dir, self.seed = name, data_dir, seed
        self.context_words, self.max_source_len = context_words, max_source_len
        self.vocab_size, self.lowercase, self.batch_size = vocab_size, lowercase, batch_size
        self.data: EntityData | None = None

    def prepare_data(self) -> None:
        """Only checks that a real dataset's files and a named tokenizer are there (the harness's preflight)."""
        if self.name != "gensim_wiki":
            kilt_files(self.name, self.data_dir)
        if self.tokenizer_name:
            checkpoint_tokenizer(self.tokenizer_name)

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        self.data = load_entity_data(self.name, self.data_dir, self.seed)
        if self.max_train_mentions is not None:
            self.data.train = subsample(self.data.train, self.max_train_mentions, self.seed)
        cw = self.context_words
        texts = [" ".join([*m.left.split()[-cw:], m.mention, *m.right.split()[:cw]]) if cw > 0 else m.mention
                 for m in self.data.train] + self.data.kb
        self.tokenizer = (checkpoint_tokenizer(self.tokenizer_name) if self.tokenizer_name
                          else train_bpe(texts, self.vocab_size, self.lowercase))
        self.kb_index = {t: i for i, t in enumerate(self.data.kb)}
        encoded = self.tokenizer.encode_batch(self.data.kb, add_special_tokens=False)
        self.title_ids = [e.ids + [EOS_ID] for e in encoded]

    def pretraining_texts(self) -> list[str]:
        """Training-split text only, for pre-training (issue 27): the training articles' cleaned text for
        ``gensim_wiki`` (split by article as the mentions are), else each training mention in its context
        (``left mention right``; KILT files carry no other text). The KB titles are added by the caller."""
        self.setup()
        if self.name == "gensim_wiki":
            return [a.text for a in gensim_training_articles(self.seed)]
        return [" ".join(p for p in (m.left, m.mention, m.right) if p) for m in self.data.train]

    def training_mentions(self) -> list[Mention]:
        """The training split's mentions; with ``title_pairs``, also every KB title as a mention of itself with no
        context (the names of entities no training link points to: both models see every KB entity once)."""
        self.setup()
        extra = [Mention(title, "", "", title, doc="kb-title") for title in self.data.kb] if self.title_pairs else []
        return list(self.data.train) + extra

    def encode_sources(self, mentions: Sequence[Mention]) -> list[list[int]]:
        """Token ids of ``left [START_ENT] mention [END_ENT] right`` (``context_words`` words each
        side), cut to ``max_source_len`` tokens: the mention first, then the context evenly.
        ``source_order="mention_first"``: the same tokens as ``[START_ENT] mention [END_ENT] left
        right`` (see :data:`SOURCE_ORDERS`)."""
        cw = self.context_words
        lefts = [" ".join(m.left.split()[-cw:]) if cw > 0 else "" for m in mentions]
        rights = [" ".join(m.right.split()[:cw]) if cw > 0 else "" for m in mentions]
        enc = lambda texts: [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]  # noqa: E731
        start, end = self.tokenizer.token_to_id(START_ENT), self.tokenizer.token_to_id(END_ENT)
        out = []
        for left, mention, right in zip(enc(lefts), enc([m.mention for m in mentions]), enc(rights)):
            mention = mention[: self.max_source_len - 2]
            room = self.max_source_len - 2 - len(mention)
            n_right = min(len(right), max(room // 2, room - len(left)))
            n_left = min(len(left), room - n_right)
            marked = [start] + mention + [end]
            left = left[len(left) - n_left :]
            out.append(marked + left + right[:n_right] if self.source_order == "mention_first" else left + marked + right[:n_right])
        return out

    def dataset(self, mentions: Sequence[Mention]) -> list[tuple[list[int], int]]:
        """(source ids, KB index of the gold title) per mention."""
        return list(zip(self.encode_sources(mentions), (self.kb_index[m.entity] for m in mentions)))

    def collate(self, batch: Sequence[tuple[list[int], int]]) -> dict:
        """``input_ids``/``attention_mask`` [B, S]; ``labels`` [B, T] (title + </s>, -100 padded);
        ``title_ids``/``title_mask`` [B, T]; ``entity`` [B] KB indices."""
        import torch

        def pad(seqs: list[list[int]], value: int) -> torch.Tensor:
            width = max(map(len, seqs))
            return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)

        sources = [s for s, _ in batch]
        entity = torch.tensor([e for _, e in batch], dtype=torch.long)
        titles = [self.title_ids[e] for _, e in batch]
        input_ids, title_ids = pad(sources, PAD_ID), pad(titles, PAD_ID)
        return dict(input_ids=input_ids, attention_mask=(input_ids != PAD_ID).long(),
                    labels=title_ids.masked_fill(title_ids == PAD_ID, -100),
                    title_ids=title_ids, title_mask=(title_ids != PAD_ID).long(), entity=entity)

    def train_dataloader(self, seed: int | None = None):
        import torch
        from torch.utils.data import DataLoader

        self.setup()
        g = torch.Generator().manual_seed(self.seed if seed is None else seed)
        return DataLoader(self.dataset(self.training_mentions()), batch_size=self.batch_size, shuffle=True, generator=g,
                          collate_fn=self.collate, drop_last=True)
