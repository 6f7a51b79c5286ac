"""A cached WordPiece tokenizer, word-aligned token chunks and an MLM DataModule.

The corpora themselves (gensim's Wikipedia extract offline, plain text and WikiText from
``--data-dir``) are read by :mod:`datamodules.corpora`; this module tokenises them.

Public API (reused by other benchmarks):
- :func:`train_wordpiece` -> a ``tokenizers.Tokenizer`` trained offline and cached;
- :func:`words_of` / :func:`encode_chunks` -> words and token chunks whose words keep
  their token spans (so whole-word and n-gram units map to token positions);
- :func:`sentence_classification_data` -> a "which article is this sentence from" task;
- :class:`MLMDataModule` -> batches of chunks collated by a caller-given masker.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from datamodules.corpora import CLEANER_VERSION, Article, TextCorpus, cache_dir, corpus_files, load_corpus

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # BERT's, in BERT's order of ids 0..4


# --------------------------------------------------------------------------------------
# Tokenizer and word <-> token spans
# --------------------------------------------------------------------------------------
# Tokenizers trained on the embedded corpora for the smoke and quick presets, committed with the code:
# ``tokenizers``' WordPiece training is not reproducible across processes (ids and the last merges come out
# in hash-map order), so a fresh machine would train another vocabulary and get other results than
# results/reference/cpu-quick.csv. A texts+settings hash names each file, as in the cache.
PINNED_TOKENIZERS = Path(__file__).with_name("tokenizers")


def cached_tokenizer(kind: str, settings: str, texts: Sequence[str], build: Callable[[], Any], cache: bool = True):
    """``build()`` (a trained ``tokenizers.Tokenizer``), cached on disk under :func:`cache_dir`
    as ``<kind>-<hash>.json`` by a hash of ``settings`` and ``texts``, so every subprocess of a
    run loads the same tokenizer; written atomically. A file of that name in
    :data:`PINNED_TOKENIZERS` is used first. ``cache=False``: never read or write the cache."""
    from tokenizers import Tokenizer

    digest = hashlib.sha256(settings.encode())
    for t in texts:
        digest.update(t.encode())
        digest.update(b"\0")
    name = f"{kind}-{digest.hexdigest()[:16]}.json"
    if (PINNED_TOKENIZERS / name).exists():
        return Tokenizer.from_file(str(PINNED_TOKENIZERS / name))
    path = cache_dir() / name
    if cache and path.exists():
        return Tokenizer.from_file(str(path))
    tok = build()
    if cache:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tok.save(str(tmp))
        os.replace(tmp, path)
    return tok


def checkpoint_backend_tokenizer(name: str):
    """The ``tokenizers.Tokenizer`` behind a Hugging Face checkpoint's fast tokenizer (a name, downloaded when online,
    or a local folder); one that cannot be loaded is a :class:`~datamodules.DatasetNotFoundError` in one line (the
    harness's preflight: exit 3)."""
    from transformers import AutoTokenizer

    from datamodules import DatasetNotFoundError

    try:
        return AutoTokenizer.from_pretrained(name).backend_tokenizer
    except OSError as exc:
        raise DatasetNotFoundError(f"cannot load tokenizer {name!r} (offline? pass a local path): "
                                   f"{str(exc).splitlines()[0]}") from None


def train_wordpiece(texts: Sequence[str], vocab_size: int = 8000, lowercase: bool = True, cache: bool = True,
                    extra_special: Sequence[str] = ()):
    """A BERT-style WordPiece ``tokenizers.Tokenizer`` trained on ``texts`` (cached: see
    :func:`cached_tokenizer`). Special tokens are ``SPECIAL_TOKENS`` with ids 0..4, then
    ``extra_special`` (e.g. entity markers) with ids 5, 6, ...
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if vocab_size < len(SPECIAL_TOKENS) + 26:
        raise ValueError(f"vocab_size must be >= {len(SPECIAL_TOKENS) + 26}, got {vocab_size}")

    def build():
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[*SPECIAL_TOKENS, *extra_special],
                                            show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return tok

    # the settings string without extras is the one pinned tokenizers were hashed with
    extra = f"{'|'.join(extra_special)}|" if extra_special else ""
    return cached_tokenizer("wordpiece", f"{vocab_size}|{lowercase}|{extra}", texts, build, cache)


def _words_from_encoding(text: str, enc) -> tuple[list[str], list[list[int]]]:
    """(words, token ids per word) of an encoding: a word is the join of its WordPiece
    tokens (``##`` removed), i.e. the normalised word; an [UNK] word is the lower-cased
    source text under its offsets."""
    words: list[str] = []
    ids: list[list[int]] = []
    last = None
    for tid, tok, wid, (a, b) in zip(enc.ids, enc.tokens, enc.word_ids, enc.offsets):
        if wid is None:
            continue
        piece = text[a:b].lower() if tok == "[UNK]" else tok.removeprefix("##")
        if wid != last:
            words.append(piece)
            ids.append([tid])
            last = wid
        else:
            words[-1] += piece
            ids[-1].append(tid)
    return words, ids


def words_of(tokenizer, text: str) -> list[str]:
    """The tokenizer's words of ``text`` (normalised, pre-tokenised: punctuation apart)."""
    return _words_from_encoding(text, tokenizer.encode(text, add_special_tokens=False))[0]


def encode_words(tokenizer, docs: Sequence[str]) -> list[tuple[list[str], list[list[int]]]]:
    """Each document as (words, token ids per word), encoded in one batched call."""
    encodings = tokenizer.encode_batch(list(docs), add_special_tokens=False)
    return [_words_from_encoding(t, e) for t, e in zip(docs, encodings)]


@dataclass
class Chunk:
    """One training sequence ``[CLS] tokens [SEP]`` made of whole words.

    ``word_spans[k] = (start, end)``: token positions of the chunk's k-th word (position 0
    is [CLS]); ``words[k]`` its normalised string; ``doc`` the index of its document.
    """

    input_ids: np.ndarray  # (T,) int64
    word_spans: list[tuple[int, int]]
    words: list[str]
    doc: int = 0
    extra: dict = field(default_factory=dict)  # per-chunk caches (e.g. n-gram matches)


def chunk_words(tokenizer, encoded: Sequence[tuple[list[str], list[list[int]]]], max_len: int = 128) -> list[Chunk]:
    """Pack each document's words greedily into chunks of at most ``max_len`` tokens
    including [CLS] and [SEP]; a word never straddles two chunks (a single word longer
    than ``max_len - 2`` tokens is truncated)."""
    if max_len < 4:
        raise ValueError(f"max_len must be >= 4, got {max_len}")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    room = max_len - 2
    chunks: list[Chunk] = []
    for d, (words, per_word) in enumerate(encoded):
        ids, spans, ws = [cls_id], [], []
        for word, toks in zip(words, per_word):
            toks = toks[:room]
            if len(ids) - 1 + len(toks) > room:
                chunks.append(Chunk(np.array(ids + [sep_id], dtype=np.int64), spans, ws, d))
                ids, spans, ws = [cls_id], [], []
            spans.append((len(ids), len(ids) + len(toks)))
            ws.append(word)
            ids.extend(toks)
        if spans:
            chunks.append(Chunk(np.array(ids + [sep_id], dtype=np.int64), spans, ws, d))
    return chunks


def encode_chunks(tokenizer, docs: Sequence[str], max_len: int = 128) -> list[Chunk]:
    """Tokenise documents and pack them into whole-word chunks (see :func:`chunk_words`)."""
    return chunk_words(tokenizer, encode_words(tokenizer, docs), max_len)


def pad_batch(sequences: Sequence[np.ndarray], pad_id: int = 0, fill: int | None = None) -> torch.Tensor:
    """(B, T_max) int64 tensor of right-padded sequences."""
    T = max(len(s) for s in sequences)
    out = np.full((len(sequences), T), pad_id if fill is None else fill, dtype=np.int64)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = s
    return torch.from_numpy(out)


# --------------------------------------------------------------------------------------
# A downstream task the embedded data supports
# --------------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def split_sentences(text: str, min_words: int = 6) -> list[str]:
    """Sentences of plain text (split after . ! ? before a capital); short ones dropped."""
    out = []
    for para in text.splitlines():
        out.extend(s.strip() for s in _SENTENCE_END.split(para) if len(s.split()) >= min_words)
    return out


def sentence_classification_data(
    docs: Sequence[Article], seed: int, per_doc: int = 40, test_frac: float = 0.3, min_words: int = 6
) -> tuple[list[str], list[int], list[str], list[int]]:
    """"Which document does this sentence come from?": up to ``per_doc`` sentences of each
    document (label = its index in ``docs``), split into (train_x, train_y, test_x, test_y)
    per document with ``seed``. Documents with fewer than 4 sentences are left out."""
    rng = np.random.default_rng(seed)
    tr_x, tr_y, te_x, te_y = [], [], [], []
    for label, doc in enumerate(docs):
        sents = split_sentences(doc.text, min_words)
        if len(sents) < 4:
            continue
        pick = rng.permutation(len(sents))[:per_doc]
        n_test = max(1, round(test_frac * len(pick)))
        for j, i in enumerate(pick):
            (te_x if j < n_test else tr_x).append(sents[i])
            (te_y if j < n_test else tr_y).append(label)
    if not tr_x:
        raise ValueError("no document has 4 or more sentences; cannot build the classification task")
    return tr_x, tr_y, te_x, te_y


# --------------------------------------------------------------------------------------
# DataModule
# --------------------------------------------------------------------------------------
class MLMDataModule(L.LightningDataModule):
    """Chunks of a corpus for masked-LM pretraining.

    ``collate_fn(list[Chunk]) -> dict of tensors`` is where a masking scheme comes in
    (see ``lit_modules.pmi_masking.MaskingCollator``); the DataModule knows no masking.
    The tokenizer is trained on the training split only.
    """

    def __init__(
        self,
        corpus: str = "gensim_wiki",
        data_dir: str | None = None,
        seed: int = 0,
        vocab_size: int = 8000,
        max_len: int = 128,
        batch_size: int = 32,
        val_frac: float = 0.1,
        test_frac: float = 0.1,
        collate_fn: Callable[[list[Chunk]], dict] | None = None,
    ) -> None:
        super().__init__()
        self.corpus_name, self.data_dir, self.seed = corpus, data_dir, seed
        self.vocab_size, self.max_len, self.batch_size = vocab_size, max_len, batch_size
        self.val_frac, self.test_frac = val_frac, test_frac
        self.collate_fn = collate_fn
        self.corpus: TextCorpus | None = None
        self.tokenizer = None
        self.chunks: dict[str, list[Chunk]] = {}

    def prepare_data(self) -> None:
        """Fail within seconds when a real corpus is missing (the CLI checks this before any unit starts)."""
        if self.corpus_name != "gensim_wiki":
            corpus_files(self.corpus_name, self.data_dir)

    def prepare(self) -> "MLMDataModule":
        """Load, split, train the tokenizer, chunk every split (idempotent). The chunks are
        cached on disk by the tokenizer's and the split's content, for the next process."""
        if self.corpus is not None:
            return self
        self.corpus = load_corpus(self.corpus_name, self.data_dir, self.seed, self.val_frac, self.test_frac)
        self.tokenizer = train_wordpiece([a.text for a in self.corpus.train], self.vocab_size)
        key = hashlib.sha256(self.tokenizer.to_str().encode())
        for split in ("train", "validation", "test"):
            for a in self.corpus.split(split):
                key.update(f"{split}|{a.title}|{len(a.text)}".encode())
        key.update(f"{self.max_len}|{CLEANER_VERSION}".encode())
        path = cache_dir() / f"chunks-{key.hexdigest()[:16]}.json"
        if path.exists():  # JSON, not pickle: a cache file must not be able to run code
            saved = json.loads(path.read_text())
            self.chunks = {split: [Chunk(np.asarray(c["ids"], dtype=np.int64), [tuple(s) for s in c["spans"]], c["words"], c["doc"])
                                   for c in chunks] for split, chunks in saved["chunks"].items()}
            self._train_words = saved["train_words"]
            return self
        for split in ("train", "validation", "test"):
            encoded = encode_words(self.tokenizer, [a.text for a in self.corpus.split(split)])
            self.chunks[split] = chunk_words(self.tokenizer, encoded, self.max_len)
            if split == "train":
                self._train_words = [words for words, _ in encoded]
        saved = {"chunks": {split: [{"ids": c.input_ids.tolist(), "spans": c.word_spans, "words": c.words, "doc": c.doc}
                                    for c in chunks] for split, chunks in self.chunks.items()},
                 "train_words": self._train_words}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(saved))
        os.replace(tmp, path)
        return self

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def train_words(self) -> list[list[str]]:
        """The training split as the tokenizer's word lists, one per document."""
        self.prepare()
        return self._train_words

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.collate_fn is None:
            raise ValueError("MLMDataModule needs a collate_fn (a masker) before making loaders")
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.chunks[split], batch_size=self.batch_size, shuffle=shuffle, collate_fn=self.collate_fn, generator=gen)

    def train_dataloader(self) -> DataLoader:
        self.prepare()
        return self._loader("train", shuffle=True)
