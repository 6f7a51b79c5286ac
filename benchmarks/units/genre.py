"""GENRE vs a dual encoder and BM25 (paper 6): what a unit runs. The declaration is ``benchmarks/specs/genre.py``.

Every variant is scored on the same test mentions (a seeded subsample of at most
``eval_max_mentions``) against the same KB: accuracy@1 overall, on mentions whose entity
was seen in training and on unseen ones, on the non-trivial mentions (not an exact string
match of their title), recall@k, index memory and latency per mention. GENRE and its
unconstrained ablation share one trained model per seed (cached in the run's artifacts).
With ``pretrain_steps`` > 0 GENRE's BART starts from text-infilling pre-training and both
dual-encoder towers from masked-LM pre-training, on the same training-split texts and KB
titles (``lit_modules/genre/pretrain.py``), cached per seed under ``$ICLRBENCH_CACHE``. With a
``checkpoint`` (a pre-trained BART, the paper's starting point) both start from it instead.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.train import count_parameters, make_trainer
from benchmarks.unit import Measurement, UnitContext, is_rank_zero
from datamodules.corpora import CLEANER_VERSION, cache_dir
from datamodules.entities import (END_ENT, ENTITY_DATA_VERSION, START_ENT, EntityDataModule, Mention, alias_table,
                                  mark_mention, subsample, trivial_prediction)
from lit_modules.genre import DualEncoderModule, GenreModule, Trie, bm25_index, bm25_search, generate_titles, title_index
from lit_modules.genre.models import bm25_index_bytes, faiss_index_bytes, pad_batch
from lit_modules.genre.pretrain import (InfillingCollate, LossTrace, MaskedLMCollate, MaskedLMModule, chunks,
                                        init_dual_encoder, pretrain_loader)

ARCH_KEYS = ("d_model", "layers", "heads", "ffn_dim", "max_positions", "dropout", "pre_norm")
# what a pre-training depends on besides the architecture, the seed and the texts (see pretrained)
PRETRAIN_KEYS = ("pretrain_steps", "pretrain_lr", "pretrain_warmup", "pretrain_batch_size", "mask_ratio", "poisson_lambda",
                 "mlm_prob", "max_source_len", "weight_decay", "grad_clip")
PRETRAIN_VERSION = 1  # bump when lit_modules.genre.pretrain's corruptions or models change: invalidates cached weights
MB = 2**20


# ------------------------------------------------------------------------------ datasets
def entities(config: dict, data_dir: str | None, seed: int, name: str = "gensim_wiki") -> EntityDataModule:
    return EntityDataModule(name=name, data_dir=data_dir, seed=seed, context_words=config["context_words"],
                            max_source_len=config["max_source_len"], vocab_size=config["vocab_size"],
                            lowercase=config["lowercase"], batch_size=config["batch_size"],
                            max_train_mentions=config["max_train_mentions"], source_order=config["source_order"],
                            title_pairs=config["title_pairs"], tokenizer_name=config["checkpoint"])


# ------------------------------------------------------------------------------ caching
@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached(path: Path, compute: Callable[[], Any]) -> Any:
    """``torch.load(path)`` if present, else ``compute()`` saved atomically (one writer at a time)."""
    with _locked(path):
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=True)
        value = compute()
        if is_rank_zero():
            tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
            torch.save(value, tmp)
            os.replace(tmp, path)
        return value


def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------ training
def _fit(ctx: UnitContext, module, dm: EntityDataModule, steps: int, name: str) -> float:
    trainer = make_trainer(ctx, log_name=name, max_steps=steps, limit_val_batches=0, gradient_clip_val=ctx.config["grad_clip"])
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=dm.train_dataloader(ctx.seed))
    return time.perf_counter() - start


def full_params(config: dict, variant: str = "") -> int:
    """Parameters of GENRE's seq2seq model for ``config`` (its ``vocab_size``; the trained BPE may have fewer tokens
    on a small corpus), built on the meta device. A ``checkpoint`` is counted by its architecture (its config from
    Hugging Face's local cache or folder), the two mention markers included."""
    if config.get("checkpoint"):
        from transformers import AutoConfig, AutoModelForSeq2SeqLM

        arch = AutoConfig.from_pretrained(config["checkpoint"], local_files_only=True)
        arch.vocab_size += 2
        with torch.device("meta"):
            model = AutoModelForSeq2SeqLM.from_config(arch)
        if variant == "dual_encoder":  # two encoders over one shared embedding
            return 2 * count_parameters(model.get_encoder()) - count_parameters(model.get_input_embeddings())
        return count_parameters(model)
    with torch.device("meta"):
        if variant == "dual_encoder":
            return count_parameters(DualEncoderModule(vocab_size=config["vocab_size"], pool=config["de_pool"],
                                                      **{k: config[k] for k in ARCH_KEYS}))
        return count_parameters(GenreModule(vocab_size=config["vocab_size"], **{k: config[k] for k in ARCH_KEYS}))


# ------------------------------------------------------------------------------ pre-training (issue 27)
OBJECTIVES = {"infill": "genre", "mlm": "dual_encoder"}  # objective -> the model it pre-trains


def pretraining_texts(dm: EntityDataModule, length: int) -> list[list[int]]:
    """Token ids of the pre-training texts: the training split's text (``dm.pretraining_texts()``: never a held-out
    article) cut into pieces of ``length`` tokens, then every KB title (the system's known entity set) alone."""
    encoded = dm.tokenizer.encode_batch(dm.pretraining_texts(), add_special_tokens=False)
    corpus = [c for e in encoded for c in chunks(e.ids, length)]
    titles = [s[:-1] for s in dm.title_ids]  # without </s>
    return [t for t in corpus + titles if t]


def pretrain_key(ctx: UnitContext, dm: EntityDataModule, objective: str) -> str:
    """A content hash of everything a pre-training depends on: its settings, the architecture, the tokenizer (itself a
    hash of the training texts and the KB), the data's source and versions, the code's version and the seed."""
    cfg = ctx.config
    tokenizer = hashlib.sha1(dm.tokenizer.to_str().encode()).hexdigest()
    return _key(objective, {k: cfg[k] for k in (*PRETRAIN_KEYS, *ARCH_KEYS)}, dm.name, str(dm.data_dir), tokenizer,
                ENTITY_DATA_VERSION, CLEANER_VERSION, PRETRAIN_VERSION, ctx.seed)


def pretrain(ctx: UnitContext, dm: EntityDataModule, objective: str) -> dict:
    """One pre-training run: ``infill`` (GENRE's BART, text infilling) or ``mlm`` (one dual-encoder tower, masked-LM),
    the same texts, steps, batch size and learning-rate schedule. Returns the weights (the whole seq2seq; the encoder,
    embedding included) with the wall seconds, the final loss (mean of the last 10 % of steps) and the parameters."""
    cfg = ctx.config
    vocab = dm.tokenizer.get_vocab_size()
    steps, seed = cfg["pretrain_steps"], ctx.seed
    texts = pretraining_texts(dm, cfg["max_source_len"])
    opt = dict(lr=cfg["pretrain_lr"], weight_decay=cfg["weight_decay"], warmup_steps=cfg["pretrain_warmup"], max_steps=steps)
    torch.manual_seed(seed)
    if objective == "infill":  # BART pre-trains with plain cross-entropy
        module = GenreModule(vocab_size=vocab, label_smoothing=0.0, **opt, **{k: cfg[k] for k in ARCH_KEYS})
        collate = InfillingCollate(cfg["mask_ratio"], cfg["poisson_lambda"], seed)
    elif objective == "mlm":
        module = MaskedLMModule(vocab_size=vocab, **opt, **{k: cfg[k] for k in ARCH_KEYS})
        collate = MaskedLMCollate(cfg["mlm_prob"], vocab, seed)
    else:
        raise ValueError(f"unknown pre-training objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    trace = LossTrace()
    trainer = make_trainer(ctx, callbacks=[trace], log_name=f"{OBJECTIVES[objective]}_pretrain", max_steps=steps,
                           limit_val_batches=0, gradient_clip_val=cfg["grad_clip"])
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=pretrain_loader(texts, collate, cfg["pretrain_batch_size"], seed))
    seconds = time.perf_counter() - start
    state = module.state_dict() if objective == "infill" else module.encoder_state()
    return {"state": state, "pretrain_s": seconds, "loss": trace.final(), "params": count_parameters(module),
            "texts": len(texts)}


def pretrained(ctx: UnitContext, dm: EntityDataModule, objective: str) -> dict | None:
    """The pre-trained weights for this seed (None when ``pretrain_steps`` is 0), cached under the tokenizers' cache
    (``$ICLRBENCH_CACHE/genre-pretrain``) by :func:`pretrain_key`: paid once per seed and settings, across variants,
    tuning points and runs. A fast dev run pre-trains its two steps without the cache."""
    if ctx.config["pretrain_steps"] <= 0 or ctx.config["checkpoint"]:  # a checkpoint is pre-trained already
        return None
    if ctx.fast_dev_run:
        return pretrain(ctx, dm, objective)
    path = cache_dir() / "genre-pretrain" / f"{objective}-{pretrain_key(ctx, dm, objective)}-seed{ctx.seed}.pt"
    return cached(path, lambda: pretrain(ctx, dm, objective))


def pretrain_rows(saved: dict | None) -> list[Measurement]:
    if saved is None:
        return []
    return [Measurement("pretrain_s", float(saved["pretrain_s"])), Measurement("pretrain_loss", float(saved["loss"])),
            Measurement("pretrain_params", float(saved["params"]))]


def trained_genre(ctx: UnitContext, dm: EntityDataModule) -> tuple[GenreModule, float, dict | None]:
    """GENRE's model for this seed: trained once per run, shared by ``genre`` and ``genre_unconstrained``, from the
    denoising pre-trained BART when ``pretrain_steps`` > 0."""
    cfg = ctx.config
    hp = dict(vocab_size=dm.tokenizer.get_vocab_size(), label_smoothing=cfg["label_smoothing"], lr=cfg["lr"],
              weight_decay=cfg["weight_decay"], warmup_steps=cfg["warmup_steps"], max_steps=cfg["max_steps"],
              checkpoint=cfg["checkpoint"], **{k: cfg[k] for k in ARCH_KEYS})
    pre = pretrained(ctx, dm, "infill")
    start = pretrain_key(ctx, dm, "infill") if pre is not None else None
    key = _key(hp, dm.name, cfg["context_words"], cfg["max_source_len"], cfg["lowercase"], cfg["batch_size"],
               cfg["grad_clip"], cfg["source_order"], ctx.seed, *([start] if start else []))
    path = Path(ctx.artifacts_dir) / "cache" / f"genre-{key}-seed{ctx.seed}.pt"

    def train() -> dict:
        torch.manual_seed(ctx.seed)
        module = GenreModule(**hp)
        if pre is not None:
            module.load_state_dict(pre["state"])
        seconds = _fit(ctx, module, dm, cfg["max_steps"], "genre")
        return {"state": module.state_dict(), "train_s": seconds}

    saved = cached(path, train)
    module = GenreModule(**hp)
    module.load_state_dict(saved["state"])
    return module.eval(), float(saved["train_s"]), pre


def trained_dual_encoder(ctx: UnitContext, dm: EntityDataModule) -> tuple[DualEncoderModule, float, dict | None]:
    """The dual encoder for this seed, both towers from the masked-LM pre-trained encoder when ``pretrain_steps`` > 0."""
    cfg = ctx.config
    pre = pretrained(ctx, dm, "mlm")
    torch.manual_seed(ctx.seed)
    module = DualEncoderModule(vocab_size=dm.tokenizer.get_vocab_size(), lr=cfg["de_lr"], weight_decay=cfg["weight_decay"],
                               warmup_steps=cfg["warmup_steps"], max_steps=cfg["de_max_steps"], pool=cfg["de_pool"],
                               checkpoint=cfg["checkpoint"],
                               span_ids=(dm.tokenizer.token_to_id(START_ENT), dm.tokenizer.token_to_id(END_ENT)),
                               **{k: cfg[k] for k in ARCH_KEYS})
    if pre is not None:
        init_dual_encoder(module, pre["state"])
    seconds = _fit(ctx, module, dm, cfg["de_max_steps"], "dual_encoder")
    return module.eval(), seconds, pre


# ------------------------------------------------------------------------------ scoring
def canonical_titles(title_ids) -> np.ndarray:
    """[E] for each KB index, the first index whose title has the same token sequence (itself when distinct)."""
    first: dict[tuple[int, ...], int] = {}
    return np.array([first.setdefault(tuple(s), i) for i, s in enumerate(title_ids)], dtype=np.int64)


def accuracy_rows(preds: list[list[int]], test: list[Mention], dm: EntityDataModule, k: int) -> list[Measurement]:
    """acc@1 overall / seen / unseen / non-trivial and recall@k of ranked KB indices (-1: not a KB title).

    Titles whose token sequences are equal (60 of the embedded KB's differ from another only in case, and the
    tokenizer lower-cases) are one entity for scoring: no model can tell them apart, so predicting either is right."""
    canon = canonical_titles(dm.title_ids)
    gold = np.array([canon[dm.kb_index[m.entity]] for m in test])
    preds = [[int(canon[i]) if i >= 0 else -1 for i in p] for p in preds]
    top1 = np.array([p[0] if p else -1 for p in preds])
    hit = top1 == gold
    in_k = np.array([g in p[:k] for g, p in zip(gold, preds)])
    seen_set = dm.data.seen_entities()
    seen = np.array([m.entity in seen_set for m in test])
    hard = ~np.array([m.is_exact for m in test])
    rows = [Measurement("acc_at_1", float(hit.mean())), Measurement(f"recall_at_k@k={k}", float(in_k.mean()))]
    for name, subset in (("acc_at_1_seen", seen), ("acc_at_1_unseen", ~seen), ("acc_at_1_nontrivial", hard),
                         ("acc_at_1_exact", ~hard)):
        if subset.any():  # an empty subset (a tiny smoke split) gives no row rather than a NaN
            rows.append(Measurement(name, float(hit[subset].mean())))
    return rows


def data_rows(test: list[Mention], dm: EntityDataModule) -> list[Measurement]:
    """The test set's make-up and the string-match baselines every model has to beat."""
    kb_lower: dict[str, str] = {}
    for t in dm.data.kb:
        kb_lower.setdefault(t.lower(), t)
    aliases = alias_table(dm.data.train)
    seen = dm.data.seen_entities()
    exact = sum(m.is_exact for m in test)
    return [
        Measurement("test_mentions", len(test)),
        Measurement("trivial_mentions", exact),
        Measurement("trivial_fraction", exact / max(1, len(test))),
        Measurement("seen_fraction", sum(m.entity in seen for m in test) / max(1, len(test))),
        Measurement("kb_size", len(dm.data.kb)),
        Measurement("trivial_acc", float(np.mean([trivial_prediction(m, kb_lower) == m.entity for m in test]))),
        Measurement("alias_acc", float(np.mean([trivial_prediction(m, kb_lower, aliases) == m.entity for m in test]))),
    ]


def _genre_predictions(module: GenreModule, dm: EntityDataModule, test: list[Mention], k: int, batch: int,
                       trie: Trie | None, max_new_tokens: int) -> tuple[list[list[int]], float, float]:
    """(ranked KB indices per mention, -1 for a non-title; share of valid top-1 outputs; seconds)."""
    seq_to_kb = {tuple(s): i for i, s in enumerate(dm.title_ids)}
    sources = dm.encode_sources(test)
    preds: list[list[int]] = []
    start = time.perf_counter()
    for i in range(0, len(sources), batch):
        ids, mask = pad_batch(sources[i : i + batch])
        for beams in generate_titles(module.model, ids, mask, k, max_new_tokens, trie):
            preds.append([seq_to_kb.get(b, -1) for b in beams])
    seconds = time.perf_counter() - start
    valid = float(np.mean([p[0] >= 0 for p in preds])) if preds else float("nan")
    return preds, valid, seconds


def on_split(rows: list[Measurement], split: str) -> list[Measurement]:
    """Rows measured on the validation split get their own names (``acc_at_1@split=validation``): a validation
    number is never read as a test one."""
    if split == "test":
        return rows
    return [Measurement(f"{r.metric}{',' if '@' in r.metric else '@'}split={split}", r.value) for r in rows]


# ------------------------------------------------------------------------------ units
def run(ctx: UnitContext) -> list[Measurement]:
    cfg = ctx.config
    dm = ctx.datamodule()
    dm.setup()
    split = cfg["eval_split"]
    if split not in ("test", "validation"):
        raise ValueError(f"eval_split must be 'test' or 'validation'; got {split!r}")
    # tuning (`iclrbench tune genre`) scores the validation split; the verdict reads the test split
    test = subsample(dm.data.test if split == "test" else dm.data.validation, cfg["eval_max_mentions"], ctx.seed)
    k, out = cfg["num_beams"], on_split(data_rows(test, dm), split)
    model_rows: list[Measurement] = []
    if ctx.variant in ("genre", "genre_unconstrained"):
        module, train_s, pre = trained_genre(ctx, dm)
        start = time.perf_counter()
        trie = Trie(dm.title_ids)
        build_s = time.perf_counter() - start
        constrained = ctx.variant == "genre"
        preds, valid, seconds = _genre_predictions(module, dm, test, k, cfg["eval_batch_size"], trie if constrained else None,
                                                   trie.max_length)
        index_mb = trie.nbytes / MB if constrained else 0.0
        params = count_parameters(module)
        model_rows += [Measurement("valid_output_rate", valid)]
        if constrained:
            model_rows += [Measurement("trie_build_s", build_s), Measurement("trie_nodes", trie.num_nodes)]
    elif ctx.variant == "dual_encoder":
        module, train_s, pre = trained_dual_encoder(ctx, dm)
        start = time.perf_counter()
        with torch.inference_mode():
            index = title_index(module, dm.title_ids)
            sources = dm.encode_sources(test)
            preds = []
            for i in range(0, len(sources), cfg["eval_batch_size"]):
                q = module.encode_mentions(*pad_batch(sources[i : i + cfg["eval_batch_size"]])).float().numpy()
                preds += index.search(np.ascontiguousarray(q), k)[1].tolist()
        seconds = time.perf_counter() - start  # includes embedding the KB: an index a user has to build
        index_mb, params = faiss_index_bytes(index) / MB, count_parameters(module)
    elif ctx.variant == "bm25":
        train_s, params, pre = 0.0, 0, None
        start = time.perf_counter()
        retriever = bm25_index(dm.data.kb)
        queries = [mark_mention(m, cfg["bm25_context_words"]).replace("[START_ENT] ", "").replace(" [END_ENT]", "") for m in test]
        preds = bm25_search(retriever, queries, min(k, len(dm.data.kb))).tolist()
        seconds = time.perf_counter() - start
        index_mb = bm25_index_bytes(retriever) / MB
    else:
        raise ValueError(f"unknown genre variant {ctx.variant!r}; known: genre, genre_unconstrained, dual_encoder, bm25")
    out += on_split(accuracy_rows(preds, test, dm, k), split) + model_rows + pretrain_rows(pre)
    out += [
        Measurement("index_mb", index_mb),
        Measurement("model_mb", 4 * params / MB),  # float32
        Measurement("params", params),
        Measurement("train_time_s", train_s),
        Measurement("latency_ms", 1e3 * seconds / max(1, len(test))),
    ]
    return out


def trie_scaling(ctx: UnitContext) -> list[Measurement]:
    """Trie build time for ``trie_sizes`` synthetic titles: KB titles' token sequences with
    their words shuffled into new names (the real length and token distribution), deduplicated."""
    cfg = ctx.config
    dm = ctx.datamodule()
    dm.setup()
    rng = np.random.default_rng(ctx.seed)
    lengths = np.array([len(s) - 1 for s in dm.title_ids])
    pool = np.concatenate([np.asarray(s[:-1]) for s in dm.title_ids])
    out = []
    for n in cfg["trie_sizes"]:
        lens = rng.choice(lengths, size=int(n))
        flat = rng.choice(pool, size=int(lens.sum())).tolist()
        cuts = np.concatenate([[0], np.cumsum(lens)]).tolist()
        seqs = [flat[a:b] + [2] for a, b in zip(cuts[:-1], cuts[1:])]
        start = time.perf_counter()
        trie = Trie(seqs)
        seconds = time.perf_counter() - start
        out += [Measurement("trie_build_s_vs_titles", seconds, step=float(n), variant="genre"),
                Measurement("trie_mb_vs_titles", trie.nbytes / MB, step=float(n), variant="genre")]
    return out
