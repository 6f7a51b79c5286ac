"""RIMs: the cell's k-of-n selection, frozen inactive units, independent per-unit weights,
the closed-form input attention against the paper's explicit one, the data, the benchmark."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.digit_sequences import (
    BLANK, MARKER, CopyingDataModule, DigitSequenceDataModule, copying_task, load_mnist, pixel_sequences, read_idx,
)
from datamodules.images import DatasetNotFoundError
from lit_modules.rims import (
    RecurrentModel, RecurrentNet, RIMCell, input_attention, lstm_blocks, lstm_param_count, matched_lstm_hidden, select_active,
)

B, I, H, U, K = 5, 7, 8, 6, 4


def _cell(cell: str = "lstm", k: int = K, seed: int = 0) -> RIMCell:
    torch.manual_seed(seed)
    return RIMCell(I, H, U, k, cell=cell, input_key_size=16, num_comm_heads=2, comm_key_size=4)


def _state(cell: str = "lstm", seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x, h = torch.randn(B, I, generator=g), torch.randn(B, U, H, generator=g)
    return x, h, (torch.randn(B, U, H, generator=g) if cell == "lstm" else None)


# ------------------------------------------------------------------------------ the cell
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_exactly_k_units_are_active_per_row(cell):
    x, h, c = _state(cell)
    _, _, active = _cell(cell)(x, h, c)
    assert active.dtype == torch.bool and active.shape == (B, U)
    assert (active.sum(1) == K).all()


def test_active_units_are_those_least_attending_to_the_null_input():
    null = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.3, 0.8, 0.05, 0.7]])
    assert select_active(null, 2).tolist() == [[False, True, False, True], [True, False, True, False]]
    m = _cell()
    x, h, c = _state()
    kx = m.key(x).unsqueeze(1)
    keys = torch.cat([torch.zeros_like(kx), kx], 1)
    values = torch.cat([torch.zeros(B, 1, 4 * H), m.value(x).unsqueeze(1)], 1)
    _, null_attention = input_attention(torch.einsum("buh,uhd->bud", h, m.w_query), keys, values)
    _, _, active = m(x, h, c)
    for b in range(B):
        assert set(torch.argsort(null_attention[b])[:K].tolist()) == set(active[b].nonzero().flatten().tolist())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_inactive_units_keep_h_and_c_bit_for_bit(cell):
    x, h, c = _state(cell)
    h_new, c_new, active = _cell(cell)(x, h, c)
    off = ~active
    assert torch.equal(h_new[off], h[off])
    if cell == "lstm":
        assert torch.equal(c_new[off], c[off])
    assert not torch.allclose(h_new[active], h[active])  # the active ones did move


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_loss_on_inactive_units_new_state_gives_every_parameter_zero_gradient(cell):
    m = _cell(cell)
    x, h, c = _state(cell)
    h_new, c_new, active = m(x, h, c)
    loss = (h_new[~active] ** 2).sum() + (0 if c_new is None else (c_new[~active] ** 3).sum())
    grads = torch.autograd.grad(loss, list(m.parameters()), allow_unused=True, retain_graph=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
    # while a loss on the active units reaches the parameters
    grads = torch.autograd.grad((h_new[active] ** 2).sum(), list(m.parameters()), allow_unused=True)
    assert sum(int(g is not None and torch.count_nonzero(g) > 0) for g in grads) >= 5


def test_k_equal_to_num_units_activates_every_unit():
    x, h, c = _state()
    _, _, active = _cell(k=U)(x, h, c)
    assert active.all()


def test_per_unit_dynamics_are_independent_before_communication():
    m = _cell()
    g = torch.Generator().manual_seed(3)
    read, h, c = torch.randn(B, U, 4 * H, generator=g), torch.randn(B, U, H, generator=g), torch.randn(B, U, H, generator=g)
    h1, c1 = m.dynamics(read, h, c)
    i, j = 2, 4
    with torch.no_grad():
        m.w_x[i].add_(1.0)
        m.w_h[i].mul_(-3.0)
        m.b[i].add_(0.5)
    h2, c2 = m.dynamics(read, h, c)
    others = [u for u in range(U) if u != i]
    assert torch.equal(h1[:, others], h2[:, others]) and torch.equal(c1[:, others], c2[:, others])
    assert not torch.allclose(h1[:, i], h2[:, i])
    # and unit j's update does not read unit i's state
    h_moved = h.clone()
    h_moved[:, i] += 10.0
    assert torch.equal(m.dynamics(read, h_moved, c)[0][:, j], h2[:, j])


def test_block_lstm_matches_torch_lstm_cell_per_unit():
    torch.manual_seed(0)
    cells = [torch.nn.LSTMCell(I, H) for _ in range(3)]
    w_x = torch.stack([cl.weight_ih.T for cl in cells])
    w_h = torch.stack([cl.weight_hh.T for cl in cells])
    b = torch.stack([cl.bias_ih + cl.bias_hh for cl in cells])
    x, h, c = torch.randn(B, 3, I), torch.randn(B, 3, H), torch.randn(B, 3, H)
    h_new, c_new = lstm_blocks(x, h, c, w_x, w_h, b)
    for u, cl in enumerate(cells):
        hu, cu = cl(x[:, u], (h[:, u], c[:, u]))
        torch.testing.assert_close(h_new[:, u], hu)
        torch.testing.assert_close(c_new[:, u], cu)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fast_step_equals_the_papers_explicit_null_row_attention(cell):
    m = _cell(cell)
    x, h, c = _state(cell)
    fast, ref = m(x, h, c), m.reference_step(x, h, c)
    assert torch.equal(fast[2], ref[2])
    torch.testing.assert_close(fast[0], ref[0])
    if cell == "lstm":
        torch.testing.assert_close(fast[1], ref[1])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_sequence_model_equals_the_papers_step_applied_step_by_step(cell):
    """RecurrentNet's unit-major loop (fused query and recurrent maps, one bmm per map) against reference_step in
    the batch-major layout, output by output, with the head's unit-major order of h.flatten(1)."""
    torch.manual_seed(0)
    net = RecurrentNet(5, 10, "rims", embed_dim=I, hidden_size=H, num_units=U, k=K, cell=cell, input_key_size=16,
                       num_comm_heads=2, comm_key_size=4)
    tokens = torch.randint(0, 5, (B, 9))
    logits, active = net(tokens)
    h, c = net.cell.initial_state(B)
    want_logits, want_active = [], []
    for t in range(tokens.shape[1]):
        h, c, a = net.cell.reference_step(net.embed(tokens[:, t]), h, c)
        want_logits.append(net.head(h.flatten(1)))
        want_active.append(a)
    torch.testing.assert_close(logits, torch.stack(want_logits, 1))
    assert torch.equal(active, torch.stack(want_active, 1))


def test_communication_reaches_active_units_only_through_attention_over_all_units():
    m = _cell()
    x, h, c = _state()
    h_new, _, active = m(x, h, c)
    with torch.no_grad():
        m.w_co.zero_()  # no communication: active units are their own LSTM step
    h_solo, _, _ = m(x, h, c)
    assert not torch.allclose(h_new[active], h_solo[active])
    assert torch.equal(h_new[~active], h_solo[~active])


def test_bad_k_and_shapes_are_refused():
    with pytest.raises(ValueError, match=r"k must be in \[1, num_units=6\]; got k=7"):
        RIMCell(I, H, U, 7)
    with pytest.raises(ValueError, match="got k=0"):
        RIMCell(I, H, U, 0)
    m = _cell()
    x, h, c = _state()
    with pytest.raises(ValueError, match=r"x must be \[B, input_size=7\]; got \[5, 3\]"):
        m(x[:, :3], h, c)
    with pytest.raises(ValueError, match=r"h must be \[B, num_units, hidden_size\] = \[5, 6, 8\]; got \[5, 5, 8\]"):
        m(x, h[:, :5], c)
    with pytest.raises(ValueError, match="c must be"):
        m(x, h, None)
    with pytest.raises(ValueError, match="unknown cell 'rnn'"):
        RIMCell(I, H, U, K, cell="rnn")


# ---------------------------------------------------------------------------- the model
def test_lstm_baseline_is_matched_to_the_rim_parameter_count():
    rims = RecurrentModel(vocab_size=5, num_outputs=10, core="rims", hidden_size=16, num_units=6, k=4)
    lstm = RecurrentModel(vocab_size=5, num_outputs=10, core="lstm", hidden_size=16, num_units=6, k=4)
    n_rims, n_lstm = (sum(p.numel() for p in m.net.parameters()) for m in (rims, lstm))
    assert abs(n_lstm / n_rims - 1) < 0.10
    assert n_lstm == lstm_param_count(lstm.hparams.lstm_hidden, 5, 16, 10)
    assert matched_lstm_hidden(n_rims, 5, 16, 10) == lstm.hparams.lstm_hidden
    assert rims.net.embed.weight.shape == lstm.net.embed.weight.shape and rims.net.head.out_features == lstm.net.head.out_features


@pytest.mark.parametrize("core", ["rims", "lstm"])
def test_every_parameter_receives_a_gradient(core):
    torch.manual_seed(0)
    model = RecurrentModel(vocab_size=5, core=core, hidden_size=8, num_units=4, k=2, input_key_size=8, comm_key_size=4)
    tokens, y = torch.randint(0, 5, (6, 12)), torch.randint(0, 10, (6,))
    loss, _, _ = model._loss((tokens, y))
    loss.backward()
    missing = [n for n, p in model.net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_zero_pixel_is_not_the_null_input():
    model = RecurrentModel(vocab_size=2, core="rims", hidden_size=8, num_units=4, k=2, input_key_size=8, comm_key_size=4)
    kx, _ = model.net.cell.encode_inputs(model.net.embed(torch.zeros(1, dtype=torch.long)))
    assert torch.count_nonzero(kx) > 0  # a blank pixel has a key of its own; the null row's key is 0


# ------------------------------------------------------------------------------- data
def test_pixel_sequences_nearest_rescale_keeps_blocks_and_quantises():
    x = torch.zeros(1, 1, 2, 2)
    x[0, 0, 0, 0], x[0, 0, 1, 1] = 1.0, 0.6
    assert pixel_sequences(x, 4).view(4, 4).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert pixel_sequences(x, 2, levels=5).tolist() == [[4, 0, 0, 2]]
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        pixel_sequences(torch.zeros(2, 2), 4)


def test_digit_sequences_are_longer_at_larger_resolutions():
    dm = DigitSequenceDataModule(train_side=6, test_sides=(6, 10), levels=5)
    dm.setup()
    t6, _ = next(iter(dm.test_dataloader(6)))
    t10, y = next(iter(dm.test_dataloader(10)))
    assert t6.shape[1] == 36 and t10.shape[1] == 100 and t10.max() <= 4 and len(y) == len(t10)
    assert dm.vocab_size == 5


def test_copying_task_layout_and_targets():
    tokens, target = copying_task(4, copy_length=3, gap=5, seed=0)
    assert tokens.shape == (4, 11) and target.shape == (4, 3)
    assert torch.equal(tokens[:, :3], target) and ((target >= 1) & (target <= 8)).all()
    assert (tokens[:, 3:8] == BLANK).all() and (tokens[:, 8] == MARKER).all() and (tokens[:, 9:] == BLANK).all()
    assert torch.equal(copying_task(4, 3, 5, seed=0)[0], tokens)
    dm = CopyingDataModule(copy_length=3, train_gap=5, num_test=8)
    assert next(iter(dm.test_dataloader(40)))[0].shape == (8, 46)
    with pytest.raises(ValueError, match="copy_length >= 1"):
        copying_task(4, 0, 5, seed=0)


def _write_idx(path, array: np.ndarray, dtype_code: int = 0x08) -> None:
    header = bytes([0, 0, dtype_code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.astype(">u1" if dtype_code == 0x08 else ">i4").tobytes()
    (gzip.open if str(path).endswith(".gz") else open)(path, "wb").write(data)


def test_mnist_idx_loader_reads_plain_and_gzipped_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs, labels = rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 10, 6)
    _write_idx(raw / "train-images-idx3-ubyte.gz", imgs)
    _write_idx(raw / "train-labels-idx1-ubyte", labels)
    _write_idx(raw / "t10k-images-idx3-ubyte", imgs[:2])
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels[:2])
    assert (read_idx(raw / "train-images-idx3-ubyte.gz") == imgs).all()
    data = load_mnist(tmp_path)
    assert data["train"][0].shape == (6, 1, 28, 28) and data["test"][1].tolist() == labels[:2].tolist()
    assert data["train"][0].max() <= 1.0
    dm = DigitSequenceDataModule("mnist", data_dir=str(tmp_path), train_side=14, test_sides=(14, 24))
    dm.setup()
    assert next(iter(dm.test_dataloader(24)))[0].shape == (2, 576)


def test_bad_idx_and_missing_mnist_say_what_was_expected(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)


# ---------------------------------------------------------------------------- benchmark
def _rows(values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    rows = [dict(variant=v, seed=s, metric=m, value=x, step=math.nan) for (v, m), xs in values.items() for s, x in enumerate(xs)]
    return pd.DataFrame(rows)


def _wiggle(x: float, n: int, spread: float = 0.005) -> list[float]:
    return [x + spread * (-1) ** s for s in range(n)]


def _verdict_frame(r_drop, l_drop, r_ood, l_ood, task="digits", id_acc=None, other=None):
    """Rows of one task (``other``: the other task's (r_drop, l_drop, r_ood, l_ood) too)."""
    metrics = {"digits": ("ood_drop@digits", "acc_ood", "acc_id", "trivial_floor@digits_acc", 0.11),
               "copying": ("ood_drop@copying", "copy_acc_ood", "copy_acc_id", "trivial_floor@copy_acc", 0.125)}
    drop_m, ood_m, id_m, floor_m, floor = metrics[task]
    n = len(r_drop)
    base = {}
    for v, drop, ood in (("rims", r_drop, r_ood), ("lstm", l_drop, l_ood), ("rims_k_all", r_drop, r_ood)):
        base[(v, drop_m)] = drop
        base[(v, ood_m)] = ood
        base[(v, id_m)] = (id_acc or {}).get(v, [0.9 if task == "digits" else 0.97] * n)  # above the competence gates
        base[(v, floor_m)] = [floor] * n
    df = _rows(base)
    if other is not None:
        df = pd.concat([df, _verdict_frame(*other, task="copying" if task == "digits" else "digits")], ignore_index=True)
    return df


def test_verdict_per_task_paired_intervals_decide_the_drop():
    from benchmarks.specs.rims import MIN_DROP_GAIN, claim_verdict

    # 6 seeds, rims' drop 0.3 smaller and its OOD accuracy higher: holds
    v = claim_verdict(_verdict_frame(_wiggle(0.1, 6), _wiggle(0.4, 6, 0.01), _wiggle(0.7, 6), _wiggle(0.4, 6)))
    assert v.status == "holds"
    drop, ood = v.judgements[:2]
    assert drop.comparison.delta == MIN_DROP_GAIN and drop.estimate.n == 6 and drop.estimate.effect == pytest.approx(0.3)
    assert drop.estimate.low > 0 and ood.comparison.kind == "noninferior" and ood.status == "holds"
    assert "copying" in v.evidence and "not counted" in v.evidence  # no copying rows: not learned, not counted
    # the reverse: does not hold
    assert claim_verdict(_verdict_frame(_wiggle(0.4, 6), _wiggle(0.1, 6), _wiggle(0.4, 6), _wiggle(0.7, 6))).status == "does not hold"
    # equal drops, measured tightly: the gain's interval lies below the smallest gain counted -> does not hold
    assert claim_verdict(_verdict_frame(_wiggle(0.3, 8), _wiggle(0.3, 8, 0.004), _wiggle(0.5, 8), _wiggle(0.5, 8))).status == "does not hold"


def test_verdict_two_noisy_seeds_stay_inconclusive():
    from benchmarks.specs.rims import claim_verdict

    # means differ by 0.1 in rims' favour, but the per-seed differences (0.2, 0.0) scatter as much
    v = claim_verdict(_verdict_frame([0.1, 0.3], [0.3, 0.3], [0.6, 0.6], [0.6, 0.6]))
    assert v.status == "inconclusive"
    assert v.judgements[0].seeds_needed is not None and "seeds would decide it" in v.evidence
    # the same differences over 10 seeds decide it
    assert claim_verdict(_verdict_frame([0.1, 0.3] * 5, [0.3] * 10, [0.6] * 10, [0.6] * 10)).status == "holds"


def test_verdict_a_smaller_drop_with_a_lower_ood_accuracy_is_not_better():
    from benchmarks.specs.rims import claim_verdict

    v = claim_verdict(_verdict_frame(_wiggle(0.1, 4), _wiggle(0.4, 4), _wiggle(0.2, 4), _wiggle(0.4, 4, 0.01)))
    assert v.judgements[0].status == "holds" and v.judgements[1].status == "does not hold"
    assert v.status == "does not hold"
    # OOD accuracy lower by less than the margin, measured tightly: still better
    v = claim_verdict(_verdict_frame(_wiggle(0.1, 4), _wiggle(0.4, 4), _wiggle(0.395, 4), _wiggle(0.4, 4, 0.004)))
    assert v.status == "holds"


def test_verdict_a_task_counts_only_when_both_variants_are_competent_in_distribution():
    from benchmarks.specs.rims import COMPETENT, claim_verdict

    assert COMPETENT == {"digits": 0.85, "copying": 0.95}
    # the lstm's mean ID accuracy 0.80 (issue 27: 0.775 at quick), below the 0.85 gate: not counted, with the reason
    frame = _verdict_frame(_wiggle(0.1, 6), _wiggle(0.4, 6), _wiggle(0.7, 6), _wiggle(0.4, 6),
                           id_acc={"lstm": [0.8] * 6})
    v = claim_verdict(frame)
    assert v.status == "inconclusive" and "digits not learned" in v.evidence and "(needed 0.85)" in v.evidence
    assert all(j.status == "inconclusive" for j in v.judgements)
    assert v.judgements[0].estimate.low > 0  # the interval is kept, the decision is not made
    # copying at 0.94 per symbol: below its 0.95 gate
    copy = _verdict_frame(_wiggle(0.1, 6), _wiggle(0.4, 6), _wiggle(0.7, 6), _wiggle(0.4, 6), task="copying",
                          id_acc={"rims": [0.94] * 6})
    assert claim_verdict(copy).status == "inconclusive"


def test_verdict_reports_the_drop_at_every_ood_setting_and_where_rims_is_ahead():
    from benchmarks.specs.rims import claim_verdict

    frame = _verdict_frame(_wiggle(0.1, 6), _wiggle(0.4, 6), _wiggle(0.7, 6), _wiggle(0.4, 6))
    acc = {"rims": {6: 0.9, 7: 0.8, 8: 0.5}, "lstm": {6: 0.9, 7: 0.5, 8: 0.6}}  # rims ahead at 7, behind at 8
    extra = [dict(variant=v, seed=s, metric=f"acc@side={side}", value=a + 0.003 * (-1) ** s, step=math.nan)
             for v, by in acc.items() for side, a in by.items() for s in range(6)]
    v = claim_verdict(pd.concat([frame, pd.DataFrame(extra)], ignore_index=True))
    lines = [j for j in v.judgements if "(digits, reported)" in j.comparison.label]
    assert [j.comparison.metric for j in lines] == ["drop at side 7", "drop at side 8"]
    assert lines[0].estimate.effect == pytest.approx(0.3, abs=0.01) and lines[0].status == "holds"
    assert lines[1].estimate.effect == pytest.approx(-0.1, abs=0.01) and lines[1].status == "does not hold"
    assert "rims' drop smaller at side 7, not at side 8" in v.evidence
    assert v.status == "holds"  # the mean drop over the settings decides, the lines are beside it


def test_verdict_mixed_tasks_are_inconclusive():
    from benchmarks.specs.rims import claim_verdict

    better = (_wiggle(0.1, 6), _wiggle(0.4, 6), _wiggle(0.7, 6), _wiggle(0.4, 6))
    worse = (_wiggle(0.4, 6), _wiggle(0.1, 6), _wiggle(0.4, 6), _wiggle(0.7, 6))
    undecided = ([0.1, 0.35] * 3, [0.3] * 6, [0.6] * 6, [0.6] * 6)
    assert claim_verdict(_verdict_frame(*better, other=worse)).status == "inconclusive"
    assert claim_verdict(_verdict_frame(*better, other=undecided)).status == "holds"  # better on one, worse on none
    assert claim_verdict(_verdict_frame(*worse, other=undecided)).status == "does not hold"


def test_rims_smoke_unit_reports_the_declared_metrics(tmp_path):
    from benchmarks.registry import get_benchmark
    from benchmarks.unit import execute

    bench = get_benchmark("rims")
    ctx = dict(benchmark="rims", name="rims", seed=0, preset="smoke", dataset="digits",
               config=bench.config("smoke", "rims"), accelerator="cpu", quiet=True, artifacts_dir=str(tmp_path))
    rows = execute({"kind": "variant", "context": ctx})["rows"]
    metrics = {r["metric"] for r in rows}
    assert {"acc_id", "acc_ood", "ood_drop@digits", "ood_drop@copying", "copy_ce_id", "copy_ce_ood",
            "params@digits", "unit_activity@unit=0", "acc@side=6"} <= metrics
    activity = [r for r in rows if r["metric"].startswith("unit_activity")]
    per_position = pd.DataFrame(activity).groupby("step")["value"].sum()
    assert np.allclose(per_position, 2)  # smoke: k = 2 of 4 units active at every position
    assert list(tmp_path.glob("unit_activity_rims_seed0.png"))


def test_a_unit_runs_only_the_tasks_it_is_given_and_refuses_unknown_ones(tmp_path):
    from benchmarks.registry import get_benchmark
    from benchmarks.unit import execute

    bench = get_benchmark("rims")
    assert bench.config("quick", "rims_k_all")["tasks"] == ["copying"]  # the quick ablation: copying only
    assert bench.config("quick", "rims")["tasks"] == ["digits", "copying"]
    ctx = dict(benchmark="rims", name="rims_k_all", seed=0, preset="smoke", dataset="digits", accelerator="cpu",
               quiet=True, artifacts_dir=str(tmp_path), config=dict(bench.config("smoke", "rims_k_all"), tasks=["copying"]))
    metrics = {r["metric"] for r in execute({"kind": "variant", "context": ctx})["rows"]}
    assert "ood_drop@copying" in metrics and not any(m.endswith("@digits") or m == "acc_id" for m in metrics)
    ctx["config"] = dict(ctx["config"], tasks=["digits", "mnist"])
    with pytest.raises(ValueError, match=r"expected a non-empty subset of \['digits', 'copying'\], got \['digits', 'mnist'\]"):
        execute({"kind": "variant", "context": ctx})


def test_the_rim_model_trains_through_lightning_cli(tmp_path):
    from benchmarks.cli import main

    code = main(["fit", "--model", "lit_modules.rims.RecurrentModel", "--data",
                 "datamodules.digit_sequences.DigitSequenceDataModule", "--model.hidden_size", "8", "--trainer.max_steps", "3",
                 "--trainer.limit_val_batches", "1", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
                 "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
                 "--trainer.log_every_n_steps", "1", "--trainer.enable_checkpointing", "false",
                 "--trainer.default_root_dir", str(tmp_path)])
    assert code == 0
    (metrics,) = tmp_path.glob("lightning_logs/version_*/metrics.csv")
    losses = pd.read_csv(metrics).filter(like="loss").iloc[:, 0].dropna()
    assert len(losses) >= 3 and losses.map(math.isfinite).all()
