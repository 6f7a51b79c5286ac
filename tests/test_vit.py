"""ViT vs CNN: the model's shapes and init, the image data, and the benchmark end to end."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from datamodules.images import DatasetNotFoundError, ImageDataModule, load_cifar10, split_indices, subsample
from datamodules.standin import write_cifar10
from lit_modules.vit import ImageClassifier, num_tokens

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(embed_dim=32, depth=2, num_heads=4, resnet_width=8, resnet_layers=(1, 1, 1, 1))


def test_token_count_is_patches_plus_class_token():
    assert num_tokens(16, 4) == 17
    model = ImageClassifier("vit", img_size=16, patch_size=4, **SMALL)
    tokens = model.net.forward_features(torch.zeros(2, 1, 16, 16))
    assert tokens.shape == (2, (16 // 4) * (16 // 4) + 1, 32)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        num_tokens(16, 5)


def test_zero_initialised_head_gives_initial_loss_ln_c():
    torch.manual_seed(0)
    model = ImageClassifier("vit", num_classes=10, **SMALL)
    assert torch.count_nonzero(model.net.head.weight) == 0
    x, y = torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32,))
    assert F.cross_entropy(model(x), y).item() == pytest.approx(math.log(10), abs=1e-6)


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_every_parameter_receives_a_gradient(arch):
    torch.manual_seed(0)
    model = ImageClassifier(arch, **SMALL)
    # zero inits (the ViT head, ResNet's last BN of each block) block gradients at step 0;
    # move them off zero as the first optimizer step would
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim and not torch.any(p != 0):
                p.normal_(std=0.01)
    F.cross_entropy(model(torch.randn(8, 1, 16, 16)), torch.arange(8)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_default_variants_have_similar_parameter_counts():
    vit, cnn = ImageClassifier("vit"), ImageClassifier("resnet", resnet_width=16, resnet_layers=(2, 2, 2, 2))
    n_vit, n_cnn = (sum(p.numel() for p in m.parameters()) for m in (vit, cnn))
    assert 0.75 < n_vit / n_cnn < 1.33


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="unknown arch 'mlp'; known: vit, resnet"):
        ImageClassifier("mlp")


# ------------------------------------------------------------------------------ data
def test_digits_split_is_seeded_disjoint_and_even():
    tr, va, te = split_indices(1797, seed=3)
    assert len(set(tr) | set(va) | set(te)) == 1797 and len(te) % 2 == 0 and len(va) % 2 == 0
    assert all((a == b).all() for a, b in zip((tr, va, te), split_indices(1797, seed=3)))
    assert not (split_indices(1797, seed=4)[2] == te).all()


def test_data_fraction_is_stratified_and_nested_in_the_training_split():
    y = np.repeat(np.arange(10), 100)
    idx = np.arange(1000)
    part = subsample(idx, y, 0.1, seed=0)
    assert len(part) == 100 and (np.bincount(y[part]) == 10).all()
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        subsample(idx, y, 0.0, seed=0)


def test_digits_datamodule_normalises_with_training_statistics():
    dm = ImageDataModule("digits", img_size=16, seed=0)
    dm.setup("fit")
    assert dm.x["train"].shape[1:] == (1, 16, 16)
    assert dm.x["train"].mean().abs() < 1e-4 and (dm.x["train"].std() - 1).abs() < 1e-3
    assert len(dm.y["train"]) + len(dm.y["val"]) + len(dm.y["test"]) == 1797


def _write_cifar(folder: Path, n: int = 20) -> None:
    """Tiny files in the real CIFAR-10 python-pickle format, written by the stand-in data's writer."""
    write_cifar10(folder.parent, n_per_batch=n, n_test=n)


def test_cifar10_loader_reads_the_python_pickle_format(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    data = load_cifar10(tmp_path, download=False)
    assert data["train"][0].shape == (100, 3, 32, 32) and data["test"][0].dtype == np.uint8
    dm = ImageDataModule("cifar10", data_dir=str(tmp_path), img_size=16, val_frac=0.2)
    dm.setup("fit")
    assert dm.x["train"].shape == (80, 3, 16, 16) and len(dm.y["test"]) == 20


def test_cifar10_pickle_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_cifar10(tmp_path, download=False)


def test_cifar10_missing_names_the_files_and_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data_batch_1.*cifar-10-batches-py"):
        load_cifar10(tmp_path, download=False)


# ------------------------------------------------------------------------------ benchmark
def test_vit_smoke_units_train_and_report_every_metric():
    from benchmarks.registry import get_benchmark
    from benchmarks.unit import execute

    bench = get_benchmark("vit")
    results = {}
    for variant in ("vit", "resnet"):
        ctx = dict(benchmark="vit", name=variant, seed=0, preset="smoke", dataset="digits",
                   config=bench.config("smoke", variant), accelerator="cpu", quiet=True)
        results[variant] = execute({"kind": "variant", "context": ctx})
        if variant == "vit":
            again = execute({"kind": "variant", "context": ctx})
        metrics = {r["metric"] for r in results[variant]["rows"]}
        assert {"top1", "top1_vs_data", "params", "train_throughput", "eval_throughput", "test_examples"} <= metrics
    top1 = [r["value"] for r in results["vit"]["rows"] if r["metric"].startswith("top1")]
    assert top1 == [r["value"] for r in again["rows"] if r["metric"].startswith("top1")]  # deterministic on CPU
    count = next(r["value"] for r in results["vit"]["rows"] if r["metric"] == "test_examples")
    assert count == len(split_indices(1797, 0)[2])


@pytest.mark.slow
def test_two_process_ddp_run_evaluates_the_whole_test_set_as_one_process_does(tmp_path):
    """Untrained (max_steps=0), so both runs test the same weights and only the evaluation can
    differ: a 2-process top1 that counted rank 0's half of the test set, or an example twice,
    would not equal the 1-process top1 (k/179 of one half is also some k'/358)."""
    from benchmarks.results import read_rows

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ICLRBENCH_PLUGINS", None)

    def run(devices: int) -> pd.DataFrame:
        out_dir = tmp_path / f"devices{devices}"
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.cli", "run", "vit", "--preset", "smoke", "--variant", "resnet", "--no-extras",
             "--accelerator", "cpu", "--devices", str(devices), "--strategy", "ddp" if devices > 1 else "auto",
             "--out", str(out_dir), "--quiet", "--set", "data_fractions=[1.0]", "--set", "max_steps=0"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
        )
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        return read_rows(next(out_dir.iterdir()) / "summary.csv")

    one, two = run(1), run(2)
    assert (two["devices"] == "2").all() and (two["strategy"] == "ddp").all()
    m1, m2 = one.set_index("metric")["value"], two.set_index("metric")["value"]
    n_test = len(split_indices(1797, 0)[2])
    assert m1["test_examples"] == m2["test_examples"] == n_test  # both halves counted, none twice
    assert 0 < m1["top1"] < 1
    assert m2["top1"] == pytest.approx(m1["top1"], abs=1e-9)


def test_one_module_trains_through_lightning_cli(tmp_path):
    from benchmarks.cli import main

    code = main(["fit", "--model", "lit_modules.vit.ImageClassifier", "--data", "datamodules.images.ImageDataModule",
                 "--model.embed_dim", "16", "--model.depth", "1", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
                 "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
                 "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
                 "--trainer.log_every_n_steps", "1", "--trainer.enable_checkpointing", "false",
                 "--trainer.default_root_dir", str(tmp_path)])
    assert code == 0
    (metrics,) = tmp_path.glob("lightning_logs/version_*/metrics.csv")
    losses = pd.read_csv(metrics)["train/loss"].dropna()
    assert len(losses) == 2 and losses.map(math.isfinite).all()  # two steps trained and logged


def _vit_rows(small_gaps, full_gaps):
    """resnet / vit top1_vs_data at fractions 0.1 and 1.0, per seed; gaps = resnet - vit."""
    out = []
    for s, (g0, g1) in enumerate(zip(small_gaps, full_gaps)):
        base0, base1 = 0.8 + 0.02 * s, 0.95 - 0.01 * s  # seeds differ; the pairs carry the claim
        out += [("resnet", s, 0.1, base0 + g0), ("vit", s, 0.1, base0), ("resnet", s, 1.0, base1 + g1), ("vit", s, 1.0, base1)]
    return pd.DataFrame([dict(variant=v, seed=s, metric="top1_vs_data", step=f, value=x) for v, s, f, x in out])


@pytest.mark.parametrize("small, full, expected", [
    ([0.15, 0.18, 0.16, 0.17, 0.15], [0.03, 0.05, 0.04, 0.03, 0.04], "holds"),
    ([-0.05, -0.04, -0.06, -0.05, -0.04], [0.0, 0.01, 0.0, 0.01, 0.0], "does not hold"),  # the ViT wins on little data
    ([0.10, 0.12, 0.11, 0.10, 0.11], [0.15, 0.16, 0.14, 0.15, 0.16], "does not hold"),  # the gap grows
    ([0.18, -0.02], [0.05, 0.04], "inconclusive"),  # two noisy seeds
])
def test_verdict_judges_the_small_data_gap_and_its_shrinking_on_paired_seeds(small, full, expected):
    from benchmarks.specs.vit import claim_verdict

    verdict = claim_verdict(_vit_rows(small, full))
    assert verdict.status == expected
    assert [j.comparison.name for j in verdict.judgements] == ["CNN vs ViT at the smallest fraction", "CNN − ViT gap shrinks with data"]
    assert verdict.judgements[0].estimate.n == len(small)
