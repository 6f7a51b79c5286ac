"""performer: what a unit runs (run, extras, dataset factories). The declaration, verdict and
the description of the benchmark are in ``benchmarks/specs/performer.py``."""

from __future__ import annotations

import ctypes
import math
import statistics
import time
from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F

from benchmarks.train import StepTimer, count_parameters, eval_throughput, make_trainer
from benchmarks.unit import Measurement, UnitContext
from datamodules.sequences import SequenceDataModule
from lit_modules.performer import SequenceClassifier, favor_attention, orthogonal_gaussian_matrix, softmax_attention

MODEL_KEYS = (
    "attention", "d_model", "n_heads", "n_layers", "d_ff", "dropout", "nb_features", "kernel", "orthogonal",
    "redraw_interval", "lr", "weight_decay", "warmup_steps", "max_steps",
)
DATA_KEYS = ("batch_size", "eval_batch_size", "num_train", "num_val", "num_test", "min_length", "max_length", "max_depth", "max_args", "side")
OVER_TIME, OVER_MEMORY, OUT_OF_MEMORY = 1.0, 2.0, 3.0  # codes of the over_limit metric


def sequences(config: dict, data_dir: str | None, seed: int, name: str = "listops") -> SequenceDataModule:
    return SequenceDataModule(name=name, data_dir=data_dir, seed=seed, **{k: config[k] for k in DATA_KEYS})


def build_module(config: dict, dm: SequenceDataModule) -> SequenceClassifier:
    return SequenceClassifier(dm.vocab_size, dm.num_classes, dm.max_len, **{k: config[k] for k in MODEL_KEYS})


def full_params(config: dict, variant: str = "") -> int:
    """Parameters of the variant's model for ``config`` on LRA ListOps (its 16-token vocabulary, 10 classes, the
    config's max_length); about 20M, built on the CPU (its constructor draws a seed, which the meta device refuses)."""
    from datamodules.sequences import LISTOPS_CLASSES, LISTOPS_VOCAB

    module = SequenceClassifier(len(LISTOPS_VOCAB), LISTOPS_CLASSES, config["max_length"], **{k: config[k] for k in MODEL_KEYS})
    return count_parameters(module)


class ValCurve(L.Callback):
    """Validation accuracy after each validation run, keyed by the training step."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and "val/accuracy" in trainer.callback_metrics:
            self.points.append((trainer.global_step, float(trainer.callback_metrics["val/accuracy"])))


def run(ctx: UnitContext) -> list[Measurement]:
    """Train one variant (softmax or FAVOR+ attention) with one seed; test it."""
    cfg = ctx.config
    dm = ctx.datamodule()
    dm.setup("fit")
    module = build_module(cfg, dm)
    timer, curve = StepTimer(), ValCurve()
    validation = (
        dict(val_check_interval=cfg["val_every"], check_val_every_n_epoch=None) if cfg["val_every"] else dict(limit_val_batches=0)
    )
    trainer = make_trainer(ctx, callbacks=[timer, curve], log_name="train", max_steps=cfg["max_steps"], **validation)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    fit_s = time.perf_counter() - start
    (test,) = trainer.test(module, datamodule=dm, verbose=False)
    steps = sorted(timer.step_times[5:]) or [fit_s / max(1, cfg["max_steps"])]
    median_step = steps[len(steps) // 2]
    tokens, mask, _ = next(iter(dm.test_dataloader()))
    y_train, y_test = dm.data["train"][-1], dm.data["test"][-1]
    majority = int(torch.bincount(y_train).argmax())  # the trivial floor: always the training set's commonest class
    out = [
        Measurement("accuracy", test["test/accuracy"]),
        Measurement("trivial_floor", float((y_test == majority).float().mean())),
        Measurement("test_examples", test["test/count"]),
        Measurement("params", count_parameters(module)),
        Measurement("sequence_length", tokens.shape[1]),
        Measurement("step_time_ms", 1e3 * median_step),
        Measurement("train_throughput", cfg["batch_size"] / median_step),
        Measurement("eval_throughput", eval_throughput(_Masked(module.net, mask), tokens)),
    ]
    out += [Measurement("val_accuracy", acc, step=step) for step, acc in curve.points]
    return out


class _Masked(torch.nn.Module):
    """``net(tokens, mask)`` as a one-argument module, for ``eval_throughput``."""

    def __init__(self, net: torch.nn.Module, mask: torch.Tensor) -> None:
        super().__init__()
        self.net, self.mask = net, mask

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens, self.mask)


# --------------------------------------------------------------------------- estimator error
def estimator_error(ctx: UnitContext) -> list[Measurement]:
    """MSE of FAVOR+'s attention output vs exact softmax attention, against M.

    q, k ~ N(0, σ² I) for each σ in ``est_qk_stds`` (the error grows like exp(|q|² + |k|²),
    so a small σ and a LayerNorm-like σ = 1 are two regimes), v ~ N(0, I), [1, 1, L, D];
    for every M the MSE is averaged over ``est_draws`` projections, the same seeded draws
    for each feature kind. One curve metric per σ: ``attn_mse@qk_std=σ``. The x is the
    number of projections M, as in the paper's figures: trig features have 2M entries.
    """
    cfg = ctx.config
    length, d = cfg["est_length"], cfg["est_head_dim"]
    out = []
    for std in cfg["est_qk_stds"]:
        gen = torch.Generator().manual_seed(ctx.seed)
        q, k = (torch.randn(1, 1, length, d, generator=gen) * std for _ in range(2))
        v = torch.randn(1, 1, length, d, generator=gen)
        exact = softmax_attention(q, k, v)
        for kernel in ("positive", "trig"):
            for orthogonal in (True, False):
                label = f"{kernel}-{'orthogonal' if orthogonal else 'iid'}"
                for m in cfg["est_features"]:
                    draws = torch.Generator().manual_seed(ctx.seed * 7919 + m)
                    errors = []
                    for _ in range(cfg["est_draws"]):
                        w = orthogonal_gaussian_matrix(m, d, orthogonal, generator=draws)
                        with torch.no_grad():
                            errors.append(float((favor_attention(q, k, v, w, kernel=kernel) - exact).square().mean()))
                    out.append(Measurement(f"attn_mse@qk_std={std:g}", statistics.fmean(errors), step=m, variant=label))
    return out


# ----------------------------------------------------------------------------- scaling sweep
def _rss_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return math.nan


class PeakMemory:
    """Peak memory added while the block runs, in MiB.

    CUDA: the allocator's peak. CPU: the process's resident high-water mark (VmHWM, reset
    through /proc/self/clear_refs) minus the resident size before, after returning freed
    heap memory to the OS (glibc ``malloc_trim``) so that reused memory is counted.
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.mb = device, math.nan

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _rss_mb("VmRSS")
        except OSError:  # not Linux: no reset, no number
            self.base = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        elif self.base is not None:
            self.mb = _rss_mb("VmHWM") - self.base


def _implementations(cfg: dict, d: int, device: torch.device) -> dict[str, tuple[Callable, int]]:
    """name -> (attention(q, k, v), exponent of L in its cost, used to predict the next point)."""
    causal = cfg["sweep_causal"]
    w = orthogonal_gaussian_matrix(cfg["sweep_features"], d, device=device)
    impls: dict[str, tuple[Callable, int]] = {
        "softmax": (lambda q, k, v: softmax_attention(q, k, v, causal), 2),
        "favor": (lambda q, k, v: favor_attention(q, k, v, w, causal), 1),
        "softmax_sdpa": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal), 2),
    }
    try:
        from performer_pytorch import FastAttention
    except ImportError:  # optional benchmark extra: skipped, and said so in the rows
        return impls
    fast = FastAttention(dim_heads=d, nb_features=cfg["sweep_features"], causal=causal).to(device)
    impls["performer_pytorch"] = (fast, 1)
    return impls


def scaling(ctx: UnitContext) -> list[Measurement]:
    """Forward+backward time (median of repeats, round-robin over implementations) and peak
    memory of the attention alone, [B, H, L, D] inputs, against L."""
    cfg = ctx.config
    device = torch.device("cuda" if ctx.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu")
    b, h, d = cfg["sweep_batch"], cfg["sweep_heads"], cfg["sweep_head_dim"]
    limit_s, limit_mb = cfg["sweep_time_limit_s"], cfg["sweep_memory_limit_mb"]
    impls = _implementations(cfg, d, device)
    default_threads = torch.get_num_threads()
    threads = cfg["sweep_threads"] or default_threads
    torch.set_num_threads(threads)
    out = [
        Measurement("sweep_time_limit_s", limit_s), Measurement("sweep_memory_limit_mb", limit_mb),
        Measurement("sweep_threads", threads),
    ]
    if "performer_pytorch" not in impls:
        out.append(Measurement("performer_pytorch_missing", 1.0))
    last: dict[str, tuple[int, float, float]] = {}  # name -> (L, seconds, MiB) at its last point
    stopped: dict[str, float] = {}  # name -> why it stopped (an over_limit code)
    times: dict[tuple[str, int], float] = {}
    mems: dict[tuple[str, int], float] = {}
    goal = cfg["goal_length"]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for length in sorted(cfg["sweep_lengths"]):
        gen = torch.Generator(device=device).manual_seed(ctx.seed + length)
        q, k, v = (torch.randn(b, h, length, d, generator=gen, device=device).requires_grad_() for _ in range(3))
        live: list[str] = []
        for name, (fn, power) in impls.items():
            # The goal length is measured even past the time limit (it is the point the
            # performance goal names); the memory budget always applies.
            exempt = length == goal
            if name in stopped and not (exempt and stopped[name] == OVER_TIME):
                continue
            if name in last:  # predict this point from the previous one; skip what cannot fit
                l0, t0, m0 = last[name]
                growth = (length / l0) ** power
                code = OVER_MEMORY if m0 * growth > limit_mb else OVER_TIME if t0 * growth > limit_s and not exempt else None
                if code is not None:
                    out.append(Measurement(f"over_limit@L={length}", code, variant=name))
                    stopped[name] = code
                    continue
            try:
                with PeakMemory(device) as peak:  # the first call is the untimed warm-up
                    start = time.perf_counter()
                    fn(q, k, v).sum().backward()
                    sync()
                    first = time.perf_counter() - start
            except (torch.OutOfMemoryError, MemoryError):
                out.append(Measurement(f"over_limit@L={length}", OUT_OF_MEMORY, variant=name))
                stopped[name] = OUT_OF_MEMORY
                continue
            q.grad = k.grad = v.grad = None
            mems[name, length] = peak.mb
            if first > limit_s:
                out.append(Measurement(f"over_limit@L={length}", OVER_TIME, variant=name))
                stopped[name] = OVER_TIME
                if not exempt:
                    continue
            elif exempt:
                stopped.pop(name, None)  # within the limit at the goal length after all
            live.append(name)
        samples: dict[str, list[float]] = {name: [] for name in live}
        for _ in range(cfg["sweep_repeats"]):  # round-robin, so that load changes hit all alike
            for name in live:
                start = time.perf_counter()
                impls[name][0](q, k, v).sum().backward()
                sync()
                samples[name].append(time.perf_counter() - start)
                q.grad = k.grad = v.grad = None
        for name in live:
            times[name, length] = statistics.median(samples[name])
            last[name] = (length, times[name, length], mems[name, length])
            out.append(Measurement("fwd_bwd_ms", 1e3 * times[name, length], step=length, variant=name))
            out.append(Measurement("fwd_bwd_peak_mb", mems[name, length], step=length, variant=name))
    out += _crossovers(times, mems, sorted(cfg["sweep_lengths"]))
    for other in ("softmax", "softmax_sdpa", "performer_pytorch"):
        if ("favor", goal) in times and (other, goal) in times:
            out.append(Measurement(f"speedup_vs_{other}@L={goal},threads={threads}", times[other, goal] / times["favor", goal]))
    # The goal length again with other CPU thread counts (softmax_sdpa left out: slow on CPU).
    for n_threads in [t for t in cfg["goal_threads"] if t != threads and device.type == "cpu"]:
        torch.set_num_threads(n_threads)
        gen = torch.Generator().manual_seed(ctx.seed + goal)
        q, k, v = (torch.randn(b, h, goal, d, generator=gen).requires_grad_() for _ in range(3))
        names = [n for n in impls if n != "softmax_sdpa" and (n, goal) in times]  # what fitted in the sweep
        samples: dict[str, list[float]] = {n: [] for n in names}
        for repeat in range(cfg["sweep_repeats"] + 1):  # the first round is the warm-up
            for name in names:
                start = time.perf_counter()
                impls[name][0](q, k, v).sum().backward()
                if repeat:
                    samples[name].append(time.perf_counter() - start)
                q.grad = k.grad = v.grad = None
        med = {n: statistics.median(x) for n, x in samples.items()}
        for name in names:
            out.append(Measurement(f"goal_fwd_bwd_ms@L={goal},threads={n_threads}", 1e3 * med[name], variant=name))
            if name != "favor" and "favor" in med:
                out.append(Measurement(f"speedup_vs_{name}@L={goal},threads={n_threads}", med[name] / med["favor"]))
    torch.set_num_threads(default_threads)
    return out


def _crossovers(times: dict, mems: dict, lengths: list[int]) -> list[Measurement]:
    """The shortest swept L from which FAVOR+ stays faster (smaller) than softmax; when
    softmax stopped first (over a limit), FAVOR+ counts as faster there."""
    out = []
    for metric, table in (("crossover_length", times), ("memory_crossover_length", mems)):
        wins = []
        for length in lengths:
            favor, soft = table.get(("favor", length)), table.get(("softmax", length))
            if favor is None:
                continue
            wins.append((length, soft is None or favor < soft))
        crossing = next((l for i, (l, _) in enumerate(wins) if all(w for _, w in wins[i:])), None)
        if crossing is not None:
            out.append(Measurement(metric, crossing))
        else:
            out.append(Measurement(f"{metric}_not_found", 1.0))
    return out
