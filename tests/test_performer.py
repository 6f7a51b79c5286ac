"""Performer (FAVOR+): estimator properties, exactness checks, redraw, data, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from datamodules.images import DatasetNotFoundError
from datamodules.sequences import (
    END,
    LISTOPS_VOCAB,
    OPERATORS,
    SequenceDataModule,
    evaluate_tokens,
    generate_listops,
    generate_tree,
    read_lra_listops,
    tree_tokens,
)
from lit_modules.performer import (
    MultiHeadAttention,
    SequenceClassifier,
    SequenceEncoder,
    favor_attention,
    orthogonal_gaussian_matrix,
    positive_random_features,
    softmax_attention,
    trig_random_features,
)

X = torch.tensor([[0.5, -0.3, 0.2, 0.4]])
Y = torch.tensor([[0.1, 0.6, -0.2, 0.3]])


def qkv(b=1, h=2, length=48, d=16, std=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, length, d, generator=g) * s for s in (std, std, 1.0))


# ------------------------------------------------------------------ estimator properties
@pytest.mark.parametrize("orthogonal", [False, True])
def test_positive_features_are_unbiased_for_exp_dot(orthogonal):
    # One projection with many rows = many independent draws of one feature (orthogonal rows
    # are marginally Gaussian too), so phi(x)ᵀphi(y) is a Monte Carlo mean with a known error.
    w = orthogonal_gaussian_matrix(200_000, 4, orthogonal, generator=torch.Generator().manual_seed(1))
    products = (positive_random_features(X, w) * positive_random_features(Y, w)).squeeze(0) * w.shape[0]
    estimate, stderr = products.mean(), products.std() / w.shape[0] ** 0.5
    exact = torch.exp(X @ Y.T).squeeze()
    assert abs(estimate - exact) < 4 * stderr
    assert stderr < 0.01 * exact  # tight enough that a missing -|x|²/2 (a factor e^0.39) would fail


def test_trig_features_are_unbiased_for_exp_dot():
    w = orthogonal_gaussian_matrix(200_000, 4, orthogonal=False, generator=torch.Generator().manual_seed(2))
    fx, fy = trig_random_features(X, w), trig_random_features(Y, w)
    m = w.shape[0]
    products = (fx[0, :m] * fy[0, :m] + fx[0, m:] * fy[0, m:]) * m  # sin·sin + cos·cos per feature
    estimate, stderr = products.mean(), products.std() / m**0.5
    exact = torch.exp(X @ Y.T).squeeze()
    assert abs(estimate - exact) < 4 * stderr
    assert stderr < 0.01 * exact


def test_orthogonal_features_give_lower_attention_mse_than_iid():
    q, k, v = qkv(h=1, length=64, std=0.3, seed=3)
    exact = softmax_attention(q, k, v)
    g = torch.Generator().manual_seed(4)

    def mse(orthogonal: bool) -> float:
        errors = [(favor_attention(q, k, v, orthogonal_gaussian_matrix(16, 16, orthogonal, generator=g)) - exact).square().mean()
                  for _ in range(200)]
        return float(torch.stack(errors).mean())

    assert mse(True) < 0.9 * mse(False)


def test_orthogonal_matrix_has_orthogonal_blocks_and_gaussian_norms():
    w = orthogonal_gaussian_matrix(2000 * 8 + 3, 8, generator=torch.Generator().manual_seed(5))
    assert w.shape == (16003, 8)
    unit = w / w.norm(dim=1, keepdim=True)
    block = unit[8:16]
    torch.testing.assert_close(block @ block.T, torch.eye(8), atol=1e-5, rtol=0)
    assert abs(float(w.square().sum(1).mean()) - 8) < 0.2  # E|w|² = D for w ~ N(0, I_D)
    iid = orthogonal_gaussian_matrix(8, 8, orthogonal=False, generator=torch.Generator().manual_seed(6))
    iid_unit = iid / iid.norm(dim=1, keepdim=True)
    assert (iid_unit @ iid_unit.T - torch.eye(8)).abs().max() > 0.05


# ----------------------------------------------------------------- FAVOR+ vs exact attention
@pytest.mark.parametrize("causal", [False, True])
def test_favor_matches_softmax_with_many_features_on_small_norms(causal):
    q, k, v = qkv(std=0.5, seed=7)
    exact = softmax_attention(q, k, v, causal)
    w = orthogonal_gaussian_matrix(8192, 16, generator=torch.Generator().manual_seed(8))
    approx = favor_attention(q, k, v, w, causal)
    # 1/D instead of 1/sqrt(D) as temperature: the error a wrong scaling would make
    wrong = softmax_attention(q * 16**-0.25, k * 16**-0.25, v, causal)
    err, wrong_err = (approx - exact).square().mean(), (wrong - exact).square().mean()
    assert err < 1e-4
    assert err < wrong_err / 20


def test_reference_check_causal_ones():
    # google-research/performer fast_attention_test: causal, D = 1, all-ones q and k,
    # V = [1, 0, 0]: position t averages the first t values -> [1, 1/2, 1/3].
    ones = torch.ones(1, 1, 3, 1)
    v = torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 3, 1)
    w = orthogonal_gaussian_matrix(1024, 1, generator=torch.Generator().manual_seed(9))
    for chunk in (1, 2, 64):  # across and within chunk boundaries
        out = favor_attention(ones, ones, v, w, causal=True, chunk_size=chunk).flatten()
        torch.testing.assert_close(out, torch.tensor([1.0, 1 / 2, 1 / 3]), atol=0.02, rtol=0)


def test_causal_favor_does_not_depend_on_chunk_size_or_future():
    q, k, v = qkv(length=37, seed=10)
    w = orthogonal_gaussian_matrix(32, 16, generator=torch.Generator().manual_seed(11))
    reference = favor_attention(q, k, v, w, causal=True, chunk_size=1)
    for chunk in (5, 16, 100):
        torch.testing.assert_close(favor_attention(q, k, v, w, causal=True, chunk_size=chunk), reference, atol=1e-5, rtol=1e-4)
    v_future = v.clone()
    v_future[:, :, 20:] += 5.0
    torch.testing.assert_close(favor_attention(q, k, v_future, w, causal=True)[:, :, :20], reference[:, :, :20], atol=1e-5, rtol=1e-4)


def test_favor_equals_explicit_formula_with_stabilisers():
    # phi(Q)[phi(K)ᵀV] / phi(Q)[phi(K)ᵀ1] written out with the public feature map,
    # the reference's stabilisers (row for queries, global for keys) and eps.
    q, k, v = qkv(std=1.0, seed=12)
    w = orthogonal_gaussian_matrix(64, 16, generator=torch.Generator().manual_seed(13))
    s = 16**-0.25
    pq = positive_random_features(q * s, w, "row", eps=1e-3)
    pk = positive_random_features(k * s, w, "global", eps=1e-3)
    expected = (pq @ (pk.transpose(-2, -1) @ v)) / (pq @ pk.sum(-2, keepdim=True).transpose(-2, -1))
    torch.testing.assert_close(favor_attention(q, k, v, w, eps=1e-3), expected, atol=1e-5, rtol=1e-4)
    lower = torch.ones(48, 48).tril()
    expected_causal = ((pq @ pk.transpose(-2, -1)) * lower) @ v / ((pq @ pk.transpose(-2, -1)) * lower).sum(-1, keepdim=True)
    torch.testing.assert_close(favor_attention(q, k, v, w, causal=True, eps=1e-3), expected_causal, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attend", ["softmax", "favor"])
def test_padded_keys_are_ignored(attend):
    q, k, v = qkv(b=1, length=20, seed=14)
    mask = torch.zeros(1, 20, dtype=torch.bool)
    mask[:, :12] = True
    w = orthogonal_gaussian_matrix(32, 16, generator=torch.Generator().manual_seed(15))
    fn = softmax_attention if attend == "softmax" else (lambda q, k, v, causal=False, mask=None: favor_attention(q, k, v, w, causal, mask=mask))
    full = fn(q, k, v, mask=mask)
    short = fn(q[:, :, :12], k[:, :, :12], v[:, :, :12])
    torch.testing.assert_close(full[:, :, :12], short, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------ redraw
def test_redraw_only_at_interval_and_never_in_eval():
    torch.manual_seed(16)
    net = SequenceEncoder(vocab_size=16, num_classes=10, max_len=12, attention="favor", d_model=16, n_heads=2,
                          n_layers=2, d_ff=16, nb_features=8, redraw_interval=3)
    tokens = torch.randint(1, 16, (2, 12))
    snapshot = lambda: [b.attn.projection.clone() for b in net.blocks]  # noqa: E731
    initial = snapshot()
    net.train()
    for _ in range(3):  # calls 0, 1, 2: no redraw
        net(tokens)
    assert all(torch.equal(a, b) for a, b in zip(initial, snapshot()))
    net(tokens)  # call 3: redraw
    after_redraw = snapshot()
    assert all(not torch.equal(a, b) for a, b in zip(initial, after_redraw))
    assert not torch.equal(after_redraw[0], after_redraw[1])  # each layer its own draw
    net.eval()
    for _ in range(10):
        net(tokens)
    assert all(torch.equal(a, b) for a, b in zip(after_redraw, snapshot()))
    net.train()
    net(tokens), net(tokens)  # calls 4, 5
    assert all(torch.equal(a, b) for a, b in zip(after_redraw, snapshot()))
    net(tokens)  # call 6
    assert all(not torch.equal(a, b) for a, b in zip(after_redraw, snapshot()))


def test_softmax_and_favor_variants_differ_only_in_attention():
    torch.manual_seed(17)
    a = SequenceClassifier(16, 10, 32, attention="softmax", d_model=16, n_heads=2, n_layers=1)
    b = SequenceClassifier(16, 10, 32, attention="favor", d_model=16, n_heads=2, n_layers=1)
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    tokens = torch.randint(1, 16, (3, 32))
    loss = torch.nn.functional.cross_entropy(b(tokens, tokens != 0), torch.tensor([1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in b.parameters())


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_value_errors_naming_the_problem():
    q, k, v = qkv(length=8)
    w = orthogonal_gaussian_matrix(8, 16)
    with pytest.raises(ValueError, match=r"q \(1, 2, 8, 16\), k \(1, 2, 8, 8\)"):
        favor_attention(q, k[..., :8], v, w)
    with pytest.raises(ValueError, match="k and v must share the length"):
        softmax_attention(q, k, v[:, :, :5])
    with pytest.raises(ValueError, match="batch and heads"):
        favor_attention(q, k[:, :1], v[:, :1], w)
    with pytest.raises(ValueError, match="m must be an integer >= 1; got 0"):
        orthogonal_gaussian_matrix(0, 16)
    with pytest.raises(ValueError, match="unknown kernel 'relu'; allowed: positive, trig"):
        favor_attention(q, k, v, w, kernel="relu")
    with pytest.raises(ValueError, match="projection must be"):
        favor_attention(q, k, v, w[:, :4])
    with pytest.raises(ValueError, match="unknown attention 'linear'; allowed: softmax, favor"):
        MultiHeadAttention(16, 2, attention="linear")
    with pytest.raises(ValueError, match="unknown sequence dataset 'imdb'"):
        SequenceDataModule(name="imdb")


# -------------------------------------------------------------------------------- ListOps
def lra_to_value(t):
    """LRA's ``to_value`` (lra_benchmarks/data/listops.py), the independent oracle."""
    if not isinstance(t, tuple):
        return t
    left, right = lra_to_value(t[0]), lra_to_value(t[1])
    if left in OPERATORS:
        return (left, [right])
    if right == END:
        op, args = left
        return {"[MIN": min, "[MAX": max, "[MED": lambda a: int(np.median(a)), "[SM": lambda a: int(np.sum(a) % 10)}[op](args)
    return (left[0], left[1] + [right])


def test_listops_values_by_hand():
    assert evaluate_tokens("[MAX 2 9 [MIN 4 7 ] 0 ]".split()) == 9
    assert evaluate_tokens("[MED 1 2 3 4 ]".split()) == 2  # int(median 2.5)
    assert evaluate_tokens("[SM 5 6 [MIN 7 8 ] ]".split()) == 8  # 18 mod 10
    assert evaluate_tokens("( ( [MIN 3 ) 1 ) ]".split()) == 1  # LRA's parentheses are ignored
    with pytest.raises(ValueError, match="unknown ListOps token"):
        evaluate_tokens(["[MAX", "12", "]"])


def test_listops_generator_follows_lra_procedure():
    import random

    rng = random.Random(18)
    for _ in range(200):
        tree, length = generate_tree(rng, 1, 6, 5)
        tokens = tree_tokens(tree)
        assert len(tokens) == length
        assert evaluate_tokens(tokens) == lra_to_value(tree)
    examples = generate_listops(50, seed=3, min_length=20, max_length=80, max_depth=6, max_args=5)
    assert examples == generate_listops(50, seed=3, min_length=20, max_length=80, max_depth=6, max_args=5)
    assert len({tuple(t) for t, _ in examples}) == 50
    assert all(20 < len(t) < 80 and 0 <= y <= 9 for t, y in examples)


def test_listops_lra_tsv_is_read_from_data_dir(tmp_path):
    folder = tmp_path / "listops"
    folder.mkdir()
    rows = "Source\tTarget\n( ( ( [MAX 2 ) 9 ) ] )\t9\n( ( ( [SM 5 ) 6 ) ] )\t1\n"
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_text(rows)
    assert read_lra_listops(folder / "basic_train.tsv") == [(["[MAX", "2", "9", "]"], 9), (["[SM", "5", "6", "]"], 1)]
    dm = SequenceDataModule(name="listops_lra", data_dir=str(tmp_path), max_length=6, batch_size=2)
    dm.setup()
    tokens, mask, labels = next(iter(dm.train_dataloader()))
    assert tokens.shape == (2, 6) and mask.sum().item() == 8 and sorted(labels.tolist()) == [1, 9]
    assert tokens[mask].max() < len(LISTOPS_VOCAB)
    with pytest.raises(DatasetNotFoundError, match="basic_train.tsv"):
        SequenceDataModule(name="listops_lra", data_dir=str(tmp_path / "nowhere")).setup()


# ----------------------------------------------------------------------- pixel sequences
def test_digits_as_pixel_sequences():
    dm = SequenceDataModule(name="digits_pixels", side=32)
    dm.setup()
    tokens, mask, labels = dm.data["train"]
    assert tokens.shape[1] == 1024 and mask.all() and tokens.min() >= 0 and tokens.max() <= 255
    assert sum(len(dm.data[s][2]) for s in ("train", "val", "test")) == 1797
    assert dm.vocab_size == 256 and dm.num_classes == 10 and dm.max_len == 1024


def test_cifar10_pixels_read_from_fixture(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batches[name]))
    dm = SequenceDataModule(name="cifar10_pixels", data_dir=str(tmp_path), side=32, val_frac=0.1)
    dm.setup()
    assert dm.data["train"][0].shape == (18, 1024) and dm.data["val"][0].shape == (2, 1024)
    tokens, _, labels = dm.data["test"]
    grey = torch.from_numpy(batches["test_batch"]["data"]).view(4, 3, 1024).float().mean(1)  # row-major grey levels
    assert (tokens - grey).abs().max() <= 0.5 + 1e-3 and labels.tolist() == [0, 1, 2, 3]


# -------------------------------------------------------------------------- scaling sweep
def test_scaling_sweep_records_limits_as_values():
    from benchmarks.registry import get_benchmark
    from benchmarks.units.performer import OVER_TIME, scaling
    from benchmarks.unit import UnitContext

    cfg = get_benchmark("performer").config("smoke", overrides={"sweep_lengths": [32, 64, 128], "sweep_time_limit_s": 1e-9})
    rows = scaling(UnitContext("performer", "scaling", 0, "smoke", "listops", cfg))
    over = [r for r in rows if r.metric == "over_limit@L=32"]
    assert {r.variant for r in over} >= {"softmax", "favor"} and all(r.value == OVER_TIME for r in over)
    # past the limit nothing is run, except the goal length the speed ratios are defined at
    assert {r.step for r in rows if r.metric == "fwd_bwd_ms"} == {cfg["goal_length"]} == {128}
    assert any(r.metric.startswith(f"speedup_vs_softmax@L={cfg['goal_length']},threads=") for r in rows)


def test_verdict_needs_a_crossover_and_non_inferior_accuracy_over_paired_seeds():
    import pandas as pd

    from benchmarks.specs.performer import claim_verdict

    def rows(favor_offsets, scaling_metric: str, floor: float = 0.17) -> pd.DataFrame:
        soft = [0.30, 0.34, 0.32, 0.36, 0.31]  # seeds differ; the favor - softmax pairs are what counts
        out = [dict(variant="softmax", seed=s, metric="accuracy", value=a, step=None) for s, a in enumerate(soft)]
        out += [dict(variant="favor", seed=s, metric="accuracy", value=a + o, step=None)
                for s, (a, o) in enumerate(zip(soft, favor_offsets))]
        out += [dict(variant="softmax", seed=s, metric="trivial_floor", value=floor, step=None) for s in range(len(soft))]
        out.append(dict(variant="scaling", seed=0, metric=scaling_metric,
                        value=1024.0 if scaling_metric == "crossover_length" else 1.0, step=None))
        return pd.DataFrame(out)

    small_loss = [-0.01, -0.005, -0.012, 0.0, -0.008]
    assert claim_verdict(rows(small_loss, "crossover_length")).status == "holds"
    big_loss = [-0.08, -0.09, -0.07, -0.1, -0.085]
    assert claim_verdict(rows(big_loss, "crossover_length")).status == "does not hold"
    noisy = [-0.1, 0.06, -0.08, 0.05, -0.02]  # mean -0.018 within the margin, but the interval crosses -0.03
    assert claim_verdict(rows(noisy, "crossover_length")).status == "inconclusive"
    assert claim_verdict(rows(small_loss, "crossover_length_not_found")).status == "does not hold"
    assert claim_verdict(rows(small_loss, "params")).status == "inconclusive"
    at_floor = claim_verdict(rows(small_loss, "crossover_length", floor=0.32))  # softmax no better than the floor
    assert at_floor.status == "inconclusive" and "majority-class floor" in at_floor.evidence
    assert "90% paired t, n = 5" in claim_verdict(rows(small_loss, "crossover_length")).evidence
