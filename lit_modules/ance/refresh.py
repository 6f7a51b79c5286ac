"""ANCE's asynchronous index refresh as a Lightning callback.

Every ``every`` training steps (from ``start`` on) the callback takes a snapshot of the
encoder (a copy of its weights at that step) and hands it to a background thread, the
paper's "Inferencer": it encodes the corpus (or its ``passage_ids`` part: at quick the
training articles' passages) and the training queries, rebuilds the
faiss index, and draws each training query's pool of hard negatives from its top
``depth`` passages (:func:`~lit_modules.ance.negatives.sample_candidates`). Training
("Trainer") goes on meanwhile with the newest finished pool; until the first one is
ready it uses ``fallback`` (BM25 negatives: the paper's warm-up). With ``synchronous=True``
(the ablation) training waits for each refresh, so every pool is used from its snapshot's
step on.

The refresh lag of a refresh is the number of training steps between its snapshot and the
first step that uses it (0 when synchronous); the staleness of a step is its distance to
the snapshot behind the negatives it trains on. Torch releases the GIL in its kernels and
faiss runs with one OpenMP thread, so the background thread runs on another core when
there is one.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass

import lightning as L
import torch

from lit_modules.ance.model import encode
from lit_modules.ance.negatives import ANCE_DEPTH, TableNegatives, build_index, sample_candidates, search


@dataclass
class Refresh:
    """One finished refresh: the snapshot's step, its index and negative pool, timings."""

    snapshot_step: int
    index: object  # faiss.IndexFlatIP over the corpus embeddings of the snapshot
    passage_emb: torch.Tensor  # [P, D]
    query_emb: torch.Tensor  # [Q, D]
    pool: torch.Tensor  # [Q, pool] negative passage ids
    seconds: float
    adopted_step: int | None = None


class AnnRefresh(L.Callback):
    """Asynchronous (or synchronous) ANN refresh; also the module's negative source."""

    def __init__(self, passage_tokens: torch.Tensor, query_tokens: torch.Tensor, positive_ids: torch.Tensor,
                 every: int = 50, start: int = 0, pool: int = 20, depth: int = ANCE_DEPTH, synchronous: bool = False,
                 fallback=None, seed: int = 0, encode_batch: int = 256, passage_ids: torch.Tensor | None = None) -> None:
        if every < 1 or start < 0 or pool < 1:
            raise ValueError(f"every >= 1, start >= 0 and pool >= 1 expected; got every={every}, start={start}, pool={pool}")
        self.passage_tokens, self.query_tokens, self.positive_ids = passage_tokens, query_tokens, positive_ids
        self.every, self.start, self.pool_size, self.depth = every, start, pool, depth
        self.synchronous, self.fallback, self.seed, self.encode_batch = synchronous, fallback, seed, encode_batch
        # the passages indexed for negatives (None: all); ids in pools are always corpus ids
        self.passage_ids = None if passage_ids is None else torch.as_tensor(passage_ids, dtype=torch.long)
        self.current: Refresh | None = None
        self.history: list[Refresh] = []
        self.staleness: list[int] = []  # per training step on ANN negatives
        self.fallback_steps = 0
        self._sampler: TableNegatives | None = None
        self._pending: Refresh | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._step = 0
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ the Inferencer
    def refresh_now(self, encoder: torch.nn.Module, step: int) -> Refresh:
        """Encode corpus and training queries with ``encoder``, rebuild the index, draw the
        negative pools: one refresh, in the calling thread."""
        import faiss

        faiss.omp_set_num_threads(1)
        started = time.perf_counter()
        tokens = self.passage_tokens if self.passage_ids is None else self.passage_tokens[self.passage_ids]
        p_emb = encode(encoder, tokens, self.encode_batch)
        q_emb = encode(encoder, self.query_tokens, self.encode_batch)
        index = build_index(p_emb)
        depth = min(self.depth, len(p_emb))
        candidates, _ = search(index, q_emb, depth)  # [Q, depth] rows of p_emb
        if self.passage_ids is not None:
            candidates = torch.where(candidates >= 0, self.passage_ids[candidates.clamp_min(0)], candidates)
        gen = torch.Generator().manual_seed(self.seed * 100_003 + step)
        pool = sample_candidates(candidates, self.positive_ids, min(self.pool_size, depth - 1), gen)
        return Refresh(step, index, p_emb, q_emb, pool, time.perf_counter() - started)

    def _work(self, snapshot: torch.nn.Module, step: int) -> None:
        try:
            result = self.refresh_now(snapshot, step)
            with self._lock:
                self._pending = result
        except BaseException as exc:  # noqa: BLE001 — re-raised in the training thread
            self._error = exc

    def launch(self, encoder: torch.nn.Module, step: int) -> None:
        """Start a refresh from a snapshot of ``encoder`` taken now (waits for a refresh
        still running: at most one at a time, as the paper's single Inferencer)."""
        self.wait()
        snapshot = copy.deepcopy(encoder).eval()
        if self.synchronous:
            self._pending = self.refresh_now(snapshot, step)
            return
        self._thread = threading.Thread(target=self._work, args=(snapshot, step), name=f"ance-refresh-{step}", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"the ANN refresh failed: {error!r}") from error

    def adopt(self, step: int) -> None:
        """Make the newest finished refresh current (if there is a newer one)."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.adopted_step = step
            self.current = pending
            self.history.append(pending)
            self._sampler = TableNegatives(pending.pool, seed=self.seed * 7919 + pending.snapshot_step)

    # ------------------------------------------------------------------ Lightning hooks
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._error is not None:
            self.wait()
        step = trainer.global_step
        self._step = step
        last = trainer.max_steps - 1 if trainer.max_steps and trainer.max_steps > 0 else None
        if step >= self.start and (step - self.start) % self.every == 0 and (last is None or step < last):
            self.launch(pl_module.encoder, step)
        self.adopt(step)

    def on_train_end(self, trainer, pl_module) -> None:
        self.wait()

    # ------------------------------------------------------------------ negative source
    def sample(self, query_idx: torch.Tensor, n: int) -> torch.Tensor:
        if self._sampler is None:
            if self.fallback is None:
                raise RuntimeError("no ANN index is ready and no fallback negative source was given")
            self.fallback_steps += 1
            return self.fallback.sample(query_idx, n)
        self.staleness.append(self._step - self.current.snapshot_step)
        return self._sampler.sample(query_idx, n)

    def stats(self) -> dict[str, float]:
        """Refresh count, mean lag (steps snapshot → first use), mean staleness, mean refresh seconds."""
        used = [r for r in self.history if r.adopted_step is not None]
        mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        return {
            "refreshes": float(len(used)),
            "refresh_lag": mean([r.adopted_step - r.snapshot_step for r in used]),
            "index_staleness": mean(self.staleness),
            "refresh_s": mean([r.seconds for r in used]),
            "fallback_steps": float(self.fallback_steps),
        }
