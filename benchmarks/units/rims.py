"""RIMs vs LSTM (paper 4): what a unit runs. The declaration is ``benchmarks/specs/rims.py``.

One unit trains its variant twice, on the two tasks of the paper's Table 1: sequential
digits (train at one resolution, test at larger ones) and copying (train at one gap, test
at longer ones). Both variants get the same embedding, head, optimizer, step budget and
gradient clipping; the LSTM is sized to the RIM model's parameter count.
"""

from __future__ import annotations

import math
import time

import torch

from benchmarks.train import StepTimer, count_parameters, make_trainer
from benchmarks.unit import Measurement, UnitContext
from datamodules.digit_sequences import CopyingDataModule, DigitSequenceDataModule
from lit_modules.rims import RecurrentModel

ARCH_KEYS = ("embed_dim", "hidden_size", "num_units", "cell", "input_key_size", "num_comm_heads", "comm_key_size", "dropout")


def digits(config: dict, data_dir: str | None, seed: int, name: str = "digits") -> DigitSequenceDataModule:
    return DigitSequenceDataModule(
        name=name, data_dir=data_dir, train_side=config["train_side"], test_sides=tuple(config["test_sides"]), levels=config["levels"],
        batch_size=config["batch_size"], num_train=config["num_train"], seed=seed,
    )


def mnist(config: dict, data_dir: str | None, seed: int) -> DigitSequenceDataModule:
    return digits(config, data_dir, seed, name="mnist")


def build_module(cfg: dict, task: str, vocab_size: int, num_outputs: int, lr: float, max_steps: int) -> RecurrentModel:
    k = cfg["num_units"] if cfg["all_active"] else cfg["k"]
    if task == "copy":  # copying has its own dropout (quick: 0; dropout 0.1 held rims at 0.91 on copying)
        cfg = {**cfg, "dropout": cfg["copy_dropout"]}
    return RecurrentModel(
        vocab_size=vocab_size, num_outputs=num_outputs, task=task, core=cfg["core"], k=k, lr=lr,
        weight_decay=cfg["weight_decay"], warmup_steps=cfg["warmup_steps"], max_steps=max_steps,
        **{key: cfg[key] for key in ARCH_KEYS},
    )


def full_params(config: dict, variant: str = "") -> int:
    """Parameters of the variant's sequential-digits model for ``config`` (``levels`` input symbols, 10 classes)."""
    return count_parameters(build_module(config, "classify", config["levels"], 10, config["lr"], config["max_steps"]).net)


def _fit(ctx: UnitContext, module: RecurrentModel, loader, max_steps: int) -> float:
    """Train for ``max_steps``; return the median step time (s)."""
    timer = StepTimer()
    trainer = make_trainer(ctx, callbacks=[timer], max_steps=max_steps, limit_val_batches=0,
                           gradient_clip_val=ctx.config["grad_clip"])
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    steps = sorted(timer.step_times[3:]) or [(time.perf_counter() - start) / max(1, max_steps)]
    return steps[len(steps) // 2]


def _test(ctx: UnitContext, module: RecurrentModel, loaders: dict) -> dict:
    """{name: {"test/acc": ..., "test/loss": ...}}: one Trainer, one ``test`` per loader."""
    trainer = make_trainer(ctx, enable_progress_bar=False)
    return {name: trainer.test(module, dataloaders=loader, verbose=False)[0] for name, loader in loaders.items()}


def _activity(module: RecurrentModel, loader) -> torch.Tensor | None:
    """Fraction of examples in which each unit is active, per input position: [L, U]."""
    if module.hparams.core != "rims":
        return None
    module.eval()
    with torch.inference_mode():
        counts = [(module.net(tokens)[1].float().sum(0), len(tokens)) for tokens, _ in loader]
    return sum(c for c, _ in counts) / sum(n for _, n in counts)


def _plot_activity(path, maps: dict[int, torch.Tensor], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(maps), 1, figsize=(8, 1.4 + 1.1 * len(maps)), dpi=100, squeeze=False,
                             layout="constrained")
    for ax, (side, act) in zip(axes[:, 0], maps.items()):
        im = ax.imshow(act.T.numpy(), aspect="auto", vmin=0, vmax=1, cmap="Greys", interpolation="nearest")
        ax.set_ylabel("unit")
        ax.set_title(f"{side}x{side}: fraction of test digits with the unit active, by pixel position", fontsize=8)
    axes[-1, 0].set_xlabel("input position (pixel, row-major)")
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.8)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path)
    plt.close(fig)


def logistic_reference(dm, side: int) -> float:
    """A simple reference for the in-distribution accuracy: multinomial logistic regression (scikit-learn) on the same
    training digits, as the same pixel tokens at the training resolution, scored on the same test digits."""
    from sklearn.linear_model import LogisticRegression

    train, test = dm.sequences("train", side).tensors, dm.sequences("test", side).tensors
    model = LogisticRegression(max_iter=2000).fit(train[0].float().numpy(), train[1].numpy())
    return float(model.score(test[0].float().numpy(), test[1].numpy()))


def run(ctx: UnitContext) -> list[Measurement]:
    """Sequential digits at several resolutions, then the copying task at several gaps (the tasks of
    ``tasks``)."""
    cfg = ctx.config
    out: list[Measurement] = []
    unknown = set(cfg["tasks"]) - {"digits", "copying"}
    if unknown or not cfg["tasks"]:
        raise ValueError(f"tasks: expected a non-empty subset of ['digits', 'copying'], got {cfg['tasks']!r}")
    if "digits" in cfg["tasks"]:  # --- sequential digits, resolution shift
        out += _digits(ctx)
    if "copying" in cfg["tasks"]:  # --- copying, gap shift
        out += _copying(ctx)
    return out


def _digits(ctx: UnitContext) -> list[Measurement]:
    cfg, out = ctx.config, []
    dm = ctx.datamodule()
    dm.setup("fit")
    torch.manual_seed(ctx.seed)
    module = build_module(cfg, "classify", dm.vocab_size, dm.num_classes, cfg["lr"], cfg["max_steps"])
    step_s = _fit(ctx, module, dm.train_dataloader(), cfg["max_steps"])
    train_side = cfg["train_side"]
    sides = sorted(set(cfg["test_sides"]) | {train_side})
    accs = {side: r["test/acc"] for side, r in _test(ctx, module, {s: dm.test_dataloader(s) for s in sides}).items()}
    ood = [a for side, a in accs.items() if side != train_side]
    acc_id, acc_ood = accs[train_side], (sum(ood) / len(ood) if ood else math.nan)
    majority = torch.bincount(dm.images["test"][1]).max().item() / len(dm.images["test"][1])
    reference = logistic_reference(dm, train_side)
    out += [Measurement("acc_vs_resolution", a, step=side) for side, a in sorted(accs.items())]
    out += [Measurement(f"acc@side={side}", a) for side, a in sorted(accs.items())]
    out += [
        Measurement("acc_id", acc_id),
        Measurement("acc_ood", acc_ood),
        Measurement("ood_drop@digits", acc_id - acc_ood),
        Measurement("params@digits", count_parameters(module.net)),
        Measurement("steps_per_s@digits", 1 / step_s),
        Measurement("trivial_floor@digits_acc", majority),
        Measurement("reference_acc@digits", reference),
    ]
    maps = {}
    for side in sorted({train_side, max(accs)}):
        act = _activity(module, dm.test_dataloader(side))
        if act is not None:
            maps[side] = act
    if maps:
        act = maps[train_side]
        out += [Measurement(f"unit_activity@unit={u}", float(v), step=pos) for u in range(act.shape[1]) for pos, v in enumerate(act[:, u].tolist())]
        _plot_activity(ctx.artifact(f"unit_activity_{ctx.variant}_seed{ctx.seed}.png"), maps,
                       f"rims benchmark, variant {ctx.variant}, seed {ctx.seed}: k={module.hparams.k} of {module.hparams.num_units} units")
    return out


def _copying(ctx: UnitContext) -> list[Measurement]:
    cfg, out = ctx.config, []
    copy_dm = CopyingDataModule(copy_length=cfg["copy_length"], train_gap=cfg["copy_train_gap"],
                                test_gaps=tuple(cfg["copy_test_gaps"]), num_train=cfg["copy_num_train"],
                                batch_size=cfg["batch_size"], seed=ctx.seed)
    torch.manual_seed(ctx.seed)
    module = build_module(cfg, "copy", copy_dm.vocab_size, copy_dm.num_classes, cfg["copy_lr"], cfg["copy_steps"])
    step_s = _fit(ctx, module, copy_dm.train_dataloader(), cfg["copy_steps"])
    gaps = sorted(set(cfg["copy_test_gaps"]) | {cfg["copy_train_gap"]})
    results = _test(ctx, module, {gap: copy_dm.test_dataloader(gap) for gap in gaps})
    id_gap, ood_gap = cfg["copy_train_gap"], gaps[-1]
    longer = [results[g]["test/acc"] for g in gaps if g > id_gap]  # every longer gap, as digits uses every larger side
    ood_acc = sum(longer) / len(longer) if longer else math.nan
    out += [Measurement("copy_ce_vs_gap", r["test/loss"], step=gap) for gap, r in results.items()]
    out += [Measurement("copy_acc_vs_gap", r["test/acc"], step=gap) for gap, r in results.items()]
    out += [
        Measurement("copy_ce_id", results[id_gap]["test/loss"]),
        Measurement("copy_ce_ood", results[ood_gap]["test/loss"]),
        Measurement("copy_acc_id", results[id_gap]["test/acc"]),
        Measurement("copy_acc_ood", ood_acc),
        Measurement("ood_drop@copying", results[id_gap]["test/acc"] - ood_acc),
        Measurement("params@copying", count_parameters(module.net)),
        Measurement("steps_per_s@copying", 1 / step_s),
        Measurement("trivial_floor@copy_ce", math.log(8)),  # uniform over the 8 symbols
        Measurement("trivial_floor@copy_acc", 1 / 8),
    ]
    return out
