"""ViT vs a CNN of similar size, across training-set fractions (paper 1).

The declaration and the verdict; what a unit runs is ``benchmarks/units/vit.py``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from benchmarks.registry import (Benchmark, FastDev, Metric, PaperNumber, PaperParams, PaperRef, Task, Variant, Verdict, lazy,
                                 register_benchmark)
from benchmarks.verdict import Comparison, combine, judge, judge_values, make_verdict, per_seed, seed_stats

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

UNITS = "benchmarks.units.vit"


# Declared before the run (quick/full data_fractions start at 0.1 and end at 1.0; the verdict reads the smallest
# and the largest fraction the run has).
CNN_WINS_SMALL = Comparison(
    "resnet", "vit", "top1_vs_data", "better", delta=0.01, label="CNN vs ViT at the smallest fraction",
    source="one point of top-1, below which a 'win' is not worth stating (360 test digits: one standard error is "
           "about 0.015 at 90 % accuracy)")
GAP_SHRINKS = Comparison(
    "gap at the smallest fraction", "gap at the full set", "cnn_minus_vit", "better", delta=0.01,
    label="CNN − ViT gap shrinks with data", source="the same one point, on the per-seed change of the gap")


def claim_verdict(df: pd.DataFrame) -> Verdict:
    fractions = sorted(df.loc[df["metric"] == "top1_vs_data", "step"].dropna().astype(float).unique())
    if len(fractions) < 2:
        return Verdict("inconclusive", "top1_vs_data at fewer than two data fractions")
    f0, f1 = fractions[0], fractions[-1]
    small = judge(df, replace(CNN_WINS_SMALL, step=f0))
    gaps = {}
    for f in (f0, f1):
        cnn, vit = per_seed(df, "resnet", "top1_vs_data", f), per_seed(df, "vit", "top1_vs_data", f)
        gaps[f] = {s: cnn[s] - vit[s] for s in sorted(set(cnn) & set(vit))}
    shrinks = judge_values(replace(GAP_SHRINKS, method=f"gap at {f0:.0%}", baseline=f"gap at {f1:.0%}"), gaps[f0], gaps[f1])
    at_full = {v: seed_stats(df, v, "top1_vs_data", f1)[0] for v in ("resnet", "vit")}
    evidence = f"at {f1:.0%} of the data: resnet {at_full['resnet']:.3f}, vit {at_full['vit']:.3f}"
    return make_verdict(combine([small, shrinks]), [small, shrinks], evidence)


@register_benchmark
def vit() -> Benchmark:
    return Benchmark(
        name="vit",
        paper=PaperRef(
            title="An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
            arxiv="2010.11929",
            code="https://github.com/google-research/vision_transformer",
        ),
        claim=(
            "A ViT lacks the CNN's inductive biases, so with little training data a CNN of similar size "
            "wins and the ViT's deficit shrinks as the training set grows (the paper's data-scale argument, "
            "tested here far below the paper's 14M-300M images)."
        ),
        verdict_rule=(
            "declared before the run, both paired by seed (same data subset and order): (1) CNN − ViT top-1 at the "
            "smallest data fraction, 95 % t-interval; (2) the per-seed change of that gap from the smallest to the "
            "full training set (gap at the smallest − gap at the full set). Each holds if its interval's lower end is "
            "above 0, does not hold if its upper end is below 0.01 (one point of top-1, the smallest effect counted). "
            "The claim holds if both hold, does not hold if either does not, else inconclusive"
        ),
        variants=[
            Variant("vit", "method", {"arch": "vit"}, "timm VisionTransformer, patch 4, dim 128, depth 6"),
            Variant("resnet", "baseline", {"arch": "resnet"}, "timm ResNet-18 layout, width 16, 3x3 stem"),
        ],
        datasets={
            "digits": lazy(f"{UNITS}:images"),
            "cifar10": lazy(f"{UNITS}:images", name="cifar10"),
        },
        defaults=dict(
            arch="vit", img_size=16, patch_size=4, embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0,
            resnet_width=16, resnet_layers=[2, 2, 2, 2], lr=1e-3, weight_decay=0.05, warmup_steps=20,
            # No augmentation by default, for both variants alike: with a random 2-pixel shift the ViT
            # stays near 0.71 top-1 after 200 steps (undertrained) while the CNN reaches 0.98.
            max_steps=200, batch_size=64, augment_pad=0, data_fractions=[0.1, 0.3, 1.0], val_every=0,
            overhead_steps=30,
        ),
        presets={
            "smoke": dict(embed_dim=32, depth=2, resnet_width=8, resnet_layers=[1, 1, 1, 1], max_steps=8,
                          warmup_steps=2, data_fractions=[0.3, 1.0], overhead_steps=12),
            "quick": {},
            "full": dict(img_size=32, patch_size=4, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0,
                         resnet_width=64, max_steps=30000, warmup_steps=1000, batch_size=128, augment_pad=4,
                         data_fractions=[0.1, 0.3, 1.0], val_every=1000),
        },
        metrics=[
            Metric("top1", True, primary=True, tolerance=0.02, description="test top-1 accuracy, full training split"),
            Metric("top1_vs_data", True, curve=True, tolerance=0.03, x_label="fraction of the training split", logx=True,
                   description="test top-1 after the same step budget on a class-stratified fraction of the data"),
            Metric("params", False, kind="info", description="trainable parameters"),
            Metric("test_examples", True, kind="info", description="test examples counted over all processes"),
            Metric("train_throughput", True, kind="efficiency", tolerance=0.25, description="training images/s (median step)"),
            Metric("step_time_ms", False, kind="efficiency", tolerance=0.25, description="median training step, ms"),
            Metric("eval_throughput", True, kind="efficiency", tolerance=0.25, description="inference images/s"),
            Metric("lightning_step_ms", False, kind="efficiency", tolerance=0.25, description="median step through Trainer.fit"),
            Metric("plain_step_ms", False, kind="efficiency", tolerance=0.25, description="median step of a plain PyTorch loop"),
            Metric("lightning_overhead", False, kind="efficiency", tolerance=0.1,
                   description="Lightning step time / plain loop step time (goal: at most 1.10)"),
        ],
        run=lazy(f"{UNITS}:run"),
        extras={"harness_overhead": lazy(f"{UNITS}:harness_overhead")},
        verdict=claim_verdict,
        alone=("harness_overhead",),  # timings: runs with no other unit beside it
        # quick seeds, sized by a power estimate from the 2-seed cpu-quick.csv of commit 2ef76d5, within the quick budget:
        # the two comparisons need about 3 and 4 paired seeds at the stored spread (80 % power); 99 s of unit time per
        # seed on the reference machine (Intel Xeon, about 1.7x faster than the AMD EPYC the suite was last timed on)
        seeds={"quick": 4},
        tasks={"full": {"cifar10": Task()}},  # the paper-scale configuration is for 32x32 CIFAR-10, not 8x8 digits
        # fast dev run: two batches per stage at the first data fraction (the sweep's first point), three overhead steps;
        # on a CPU the batch is capped at 8 (ViT-S at batch 16 took 14 s a step on 2 shared cores)
        fast_dev=FastDev(config=dict(data_fractions=[0.1], overhead_steps=3), batch_keys=("batch_size",), cpu_batch=8),
        paper_architecture="ViT-S/4 (dim 384, depth 12, 6 heads, MLP 1536) on 32x32 inputs vs ResNet-18 (CIFAR stem)",
        paper_params=[
            PaperParams("vit", 22_000_000, "DeiT (arXiv 2012.12877) Table 1, DeiT-S: 22M (ViT-S; the ViT paper's Table 1 "
                        "lists only Base/Large/Huge)", tolerance=0.05,
                        note="DeiT-S has a 1000-class head, 16x16 patches and 197 tokens; ours has 10 classes, 4x4 "
                             "patches and 65 tokens: 0.7M fewer"),
            PaperParams("resnet", 11_689_512, "torchvision resnet18 (ImageNet weights' model card: 11,689,512)",
                        tolerance=0.05, note="a 10-class head and a 3x3 stem instead of 1000 classes and 7x7: 0.52M fewer"),
        ],
        param_count=lazy(f"{UNITS}:full_params"),
        paper_numbers=[
            # All context: Table 2's models are ViT-L/16 pre-trained on ImageNet-21k and BiT-L (ResNet152x4)
            # pre-trained on JFT-300M, fine-tuned at high resolution; ours train from scratch on 32x32 CIFAR-10
            # with a 21M-parameter ViT, so no `full` run should be expected to approach them. Confirmed against
            # Table 2 as restated cell for cell (with its ± and TPU-core-days) by several independent public notes
            # on the paper; the PDF itself was not read. Appendix Table 5 (ViT-B/16 pre-trained on ImageNet-1k /
            # 21k / JFT-300M), the better context for the data-scale claim, was not found in any stored copy, so
            # it is not transcribed here.
            PaperNumber("vit", "cifar10", "top1", 0.9915,
                        "arXiv 2010.11929 Table 2, column Ours-I21k (ViT-L/16), row CIFAR-10; "
                        "context: ImageNet-21k pre-training and a 300M-parameter ViT-L/16, ours trains from scratch",
                        scope="context"),
            PaperNumber("vit", "imagenet", "top1", 0.8530,
                        "arXiv 2010.11929 Table 2, column Ours-I21k (ViT-L/16), row ImageNet; "
                        "context: not one of our datasets, ImageNet-21k pre-training", scope="context"),
            PaperNumber("resnet", "cifar10", "top1", 0.9937,
                        "arXiv 2010.11929 Table 2, column BiT-L (ResNet152x4), row CIFAR-10; "
                        "context: JFT-300M pre-training and a ResNet152x4, ours is a small ResNet from scratch",
                        scope="context"),
            PaperNumber("resnet", "imagenet", "top1", 0.8754,
                        "arXiv 2010.11929 Table 2, column BiT-L (ResNet152x4), row ImageNet; "
                        "context: not one of our datasets, JFT-300M pre-training", scope="context"),
        ],
    )
