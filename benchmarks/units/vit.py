"""ViT vs CNN (paper 1): what a unit runs. The declaration is ``benchmarks/specs/vit.py``."""

from __future__ import annotations

import time

import torch

from benchmarks.train import StepTimer, count_parameters, eval_throughput, lightning_overhead, make_trainer
from benchmarks.unit import Measurement, UnitContext
from datamodules.images import ImageDataModule
from lit_modules.vit import ImageClassifier

MODEL_KEYS = (
    "arch", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
    "resnet_width", "resnet_layers", "lr", "weight_decay", "warmup_steps", "max_steps",
)


def images(config: dict, data_dir: str | None, seed: int, name: str = "digits") -> ImageDataModule:
    return ImageDataModule(
        name=name, data_dir=data_dir, img_size=config["img_size"], batch_size=config["batch_size"],
        data_fraction=config.get("data_fraction", 1.0), augment_pad=config["augment_pad"], seed=seed,
    )


def build_module(config: dict, dm: ImageDataModule) -> ImageClassifier:
    kwargs = {k: config[k] for k in MODEL_KEYS}
    kwargs["resnet_layers"] = tuple(kwargs["resnet_layers"])
    return ImageClassifier(in_chans=dm.in_chans, num_classes=dm.num_classes, **kwargs)


def full_params(config: dict, variant: str = "") -> int:
    """Parameters of the variant's model for ``config`` on CIFAR-10 (3 channels, 10 classes), built on the meta device."""
    kwargs = {k: config[k] for k in MODEL_KEYS}
    kwargs["resnet_layers"] = tuple(kwargs["resnet_layers"])
    with torch.device("meta"):
        return count_parameters(ImageClassifier(in_chans=3, num_classes=10, **kwargs))


def run(ctx: UnitContext) -> list[Measurement]:
    """Train the variant once per data fraction (same step budget each); test each."""
    cfg = ctx.config
    out: list[Measurement] = []
    fractions = sorted(cfg["data_fractions"])
    for fraction in fractions:
        torch.manual_seed(ctx.seed)  # same initial weights at every fraction
        dm = ctx.datamodule(data_fraction=fraction)
        dm.setup("fit")
        module = build_module(cfg, dm)
        timer = StepTimer()
        validation = (
            dict(val_check_interval=cfg["val_every"], check_val_every_n_epoch=None) if cfg["val_every"] else dict(limit_val_batches=0)
        )
        trainer = make_trainer(ctx, callbacks=[timer], log_name=f"data_fraction={fraction}", max_steps=cfg["max_steps"], **validation)
        start = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        fit_s = time.perf_counter() - start
        (test,) = trainer.test(module, datamodule=dm, verbose=False)
        out.append(Measurement("top1_vs_data", test["test/top1"], step=fraction))
        if fraction == fractions[-1]:
            steps = sorted(timer.step_times[5:]) or [fit_s / max(1, cfg["max_steps"])]
            median_step = steps[len(steps) // 2]
            batch = next(iter(dm.test_dataloader()))[0]
            out += [
                Measurement("top1", test["test/top1"]),
                Measurement("test_examples", test["test/count"]),
                Measurement("params", count_parameters(module)),
                Measurement("train_throughput", cfg["batch_size"] / median_step),
                Measurement("step_time_ms", 1e3 * median_step),
                Measurement("eval_throughput", eval_throughput(module.net, batch)),
            ]
    return out


def harness_overhead(ctx: UnitContext) -> list[Measurement]:
    """A training step through Lightning vs a plain PyTorch loop, ViT variant, same batches."""
    cfg = ctx.config
    dm = ctx.datamodule()
    dm.setup("fit")
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(dm.x["train"], dm.y["train"]), batch_size=cfg["batch_size"], shuffle=False
    )

    def factory() -> ImageClassifier:
        torch.manual_seed(ctx.seed)
        return build_module(cfg, dm)

    steps = cfg["overhead_steps"]
    ratios = lightning_overhead(factory, loader, ctx, steps=steps, warmup=min(5, steps // 3))
    return [Measurement(name, value) for name, value in ratios.items()]

