"""RIMs vs an LSTM of matched size: out-of-distribution generalisation (paper 4).

The declaration and the verdict; what a unit runs is ``benchmarks/units/rims.py``.
Not checked on a GPU: the ``full`` preset (MNIST from ``--data-dir``, the paper's sizes).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from benchmarks.registry import (Benchmark, FastDev, Metric, PaperNumber, PaperParams, PaperRef, Task, Variant, Verdict, lazy,
                                 register_benchmark)
from benchmarks.verdict import Comparison, gate, judge, judge_values, make_verdict, per_seed, seed_stats

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

UNITS = "benchmarks.units.rims"
# Competence (issue 27), declared before the run: a task counts only when both models reach this in-distribution
# accuracy (mean over seeds), what a trained model does on it: copying is solved exactly by the paper's models; on the
# 8x8 digits a logistic regression reaches about 0.93 (reported beside as reference_acc@digits)
COMPETENT = {"digits": 0.85, "copying": 0.95}
TASKS = {  # task: (ID accuracy, OOD accuracy, trivial floor)
    "digits": ("acc_id", "acc_ood", "trivial_floor@digits_acc"),
    "copying": ("copy_acc_id", "copy_acc_ood", "trivial_floor@copy_acc"),
}

# -------------------------------------------------------------------------------- verdict
# Declared before the run, per task: the claim (a smaller OOD drop, rims vs the matched LSTM, paired by seed, the drop
# averaged over every out-of-distribution setting: each larger resolution, each longer gap) and the guard beside it
# (the OOD accuracy itself: a smaller drop that comes from a lower ID accuracy is no better). Each setting's drop is
# reported beside, so the evidence says where RIMs is ahead and where not.
MIN_DROP_GAIN = 0.02  # 2 points of accuracy; the paper's OOD gaps over its LSTM are 5.5-21 points (Table 1, right)
OOD_MARGIN = 0.02  # rims' OOD accuracy may be below the lstm's by at most this (the same scale as MIN_DROP_GAIN)
DROP = {task: Comparison(
    "rims", "lstm", f"ood_drop@{task}", "better", delta=MIN_DROP_GAIN, higher_is_better=False,
    label=f"rims vs lstm, OOD drop ({task})",
    source="2 accuracy points: below the paper's smallest OOD accuracy gap over the LSTM (5.5 points, 16x16: "
           "90.0 vs 84.5, Table 1 right) and "
           "about one sampling error of a test accuracy near 0.5 on the 358 quick test digits (0.026)")
    for task in TASKS}
OOD = {task: Comparison(
    "rims", "lstm", ood, "noninferior", margin=OOD_MARGIN, label=f"rims vs lstm, OOD accuracy ({task})",
    source="the smallest drop gain counted, on the OOD accuracy: a smaller drop must not come with a lower OOD accuracy")
    for task, (_, ood, _) in TASKS.items()}


def competent(df: pd.DataFrame, task: str, id_metric: str, floor_metric: str) -> tuple[bool, str]:
    """Both variants' in-distribution accuracy (mean over seeds) at least COMPETENT[task]; the text shows them beside
    the trivial floor and (digits) the logistic-regression reference."""
    floor = seed_stats(df, "rims", floor_metric)[0]
    if math.isnan(floor):  # no rims floor rows
        floor = seed_stats(df, "lstm", floor_metric)[0]
    ids = {v: per_seed(df, v, id_metric) for v in ("rims", "lstm")}
    shown = ", ".join(f"{v} " + "/".join(f"{x:.3f}" for _, x in sorted(xs.items())) for v, xs in ids.items())
    reference = seed_stats(df, "lstm", f"reference_acc@{task}")[0]
    text = (f"ID accuracy {shown} (needed {COMPETENT[task]}), trivial floor {floor:.3f}"
            + (f", logistic regression {reference:.3f}" if not math.isnan(reference) else ""))
    ok = all(xs and sum(xs.values()) / len(xs) >= COMPETENT[task] for xs in ids.values())
    return ok, text


def settings(df: pd.DataFrame, task: str) -> list[tuple[str, str, float | None]]:
    """The OOD settings the rows measure: (label, metric, step) of each larger resolution / longer gap."""
    if task == "digits":
        sides = sorted({int(m.split("=", 1)[1]) for m in df["metric"].astype(str) if m.startswith("acc@side=")})
        return [(f"side {n}", f"acc@side={n}", None) for n in sides[1:]]
    gaps = sorted({float(x) for x in df.loc[df["metric"] == "copy_acc_vs_gap", "step"].dropna()})
    return [(f"gap {g:g}", "copy_acc_vs_gap", g) for g in gaps[1:]]


def setting_lines(df: pd.DataFrame, task: str, id_metric: str) -> list:
    """rims vs lstm on the drop at each OOD setting (reported, not deciding)."""
    lines = []
    for label, metric, step in settings(df, task):
        drops = {v: {s: ids[s] - x for s, x in per_seed(df, v, metric, step).items() if s in ids}
                 for v in ("rims", "lstm") for ids in [per_seed(df, v, id_metric)]}
        c = replace(DROP[task], metric=f"drop at {label}", label=f"rims vs lstm, drop at {label} ({task}, reported)")
        lines.append(judge_values(c, drops["rims"], drops["lstm"]))
    return lines


def task_status(drop, ood) -> str:
    """better: a smaller drop (holds) whose OOD accuracy is not shown lower; worse: the drop gain is shown below the
    smallest gain counted, or the OOD accuracy is shown lower by more than the margin; else inconclusive."""
    if drop.status == "does not hold" or ood.status == "does not hold":
        return "does not hold"
    return "holds" if drop.status == "holds" else "inconclusive"


def claim_verdict(df: pd.DataFrame) -> Verdict:
    judgements, statuses, notes = [], [], []
    for task, (id_metric, _, floor_metric) in TASKS.items():
        drop, ood = judge(df, DROP[task]), judge(df, OOD[task])
        ok, text = competent(df, task, id_metric, floor_metric)
        if not ok:
            why = f"{task} not learned: a variant's mean ID accuracy is below {COMPETENT[task]}"
            drop, ood = gate(drop, False, why), gate(ood, False, why)
        status = task_status(drop, ood)
        lines = setting_lines(df, task, id_metric)
        ahead = [j.comparison.metric[len("drop at "):] for j in lines if j.estimate.effect > 0]
        behind = [j.comparison.metric[len("drop at "):] for j in lines if j.estimate.effect <= 0]
        k_all = seed_stats(df, "rims_k_all", f"ood_drop@{task}")[0]
        k_all = f"OOD drop {k_all:.3f}" if math.isfinite(k_all) else "not run on this task"
        notes.append(f"{task}: {text}; rims' drop smaller at {', '.join(ahead) or 'no setting'}, not at "
                     f"{', '.join(behind) or 'any other'}; rims_k_all {k_all} (ablation, not judged) → "
                     + (f"{status}" if ok else "not counted"))
        judgements += [drop, ood, *lines]
        statuses.append(status)
    if "holds" in statuses and "does not hold" not in statuses:
        verdict = "holds"
    elif "does not hold" in statuses and "holds" not in statuses:
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    return make_verdict(verdict, judgements, "; ".join(notes))


@register_benchmark
def rims() -> Benchmark:
    return Benchmark(
        name="rims",
        paper=PaperRef(title="Recurrent Independent Mechanisms", arxiv="1909.10893", code="https://github.com/anirudh9119/RIMs"),
        claim=(
            "A recurrent model of k-of-n sparsely active, independent mechanisms that communicate through attention "
            "generalises out of distribution better than an LSTM of matched size: trained on one sequence length "
            "(image resolution, copying gap), it degrades less on longer ones."
        ),
        verdict_rule=(
            "per task (digits: accuracy at the training resolution minus the mean over the larger test resolutions; "
            "copying: per-symbol accuracy at the training gap minus the mean over the longer test gaps), paired by seed: rims' OOD "
            f"drop is smaller than the lstm's (95 % paired t-interval of lstm − rims above 0, smallest gain counted "
            f"{MIN_DROP_GAIN}) and its OOD accuracy is not shown lower by more than {OOD_MARGIN} (90 % interval, a "
            "non-inferiority test) → better on that task; the drop gain's interval wholly below "
            f"{MIN_DROP_GAIN}, or rims' OOD accuracy shown lower by more than {OOD_MARGIN} → worse; else inconclusive. "
            f"A task counts only if both variants' in-distribution accuracy (mean over seeds) reaches {COMPETENT['digits']} "
            f"(digits) or {COMPETENT['copying']} (copying). Each setting's drop is reported beside. Holds if rims is better on at least one counted task and worse on none; does not hold if "
            "worse on at least one and better on none; else (mixed, undecided, nothing learned) inconclusive"
        ),
        variants=[
            Variant("rims", "method", {"core": "rims"}, "RIMCell, k of n units active per step (LSTM units)"),
            Variant("lstm", "baseline", {"core": "lstm"}, "nn.LSTM sized to the RIM model's parameter count"),
            # quick: copying only (where the claim holds; digits' 1,500 steps are 85 % of a unit: about 260 s saved)
            Variant("rims_k_all", "method", {"core": "rims", "all_active": True},
                    "ablation: k = n, every unit active every step (modularity without sparsity)", seeds={"quick": 1},
                    presets={"quick": {"tasks": ["copying"]}}),
        ],
        datasets={"digits": lazy(f"{UNITS}:digits"), "mnist": lazy(f"{UNITS}:mnist")},
        # quick (= defaults; issue 27): the native 8x8 digits (5 grey levels), tested at the upscales 9, 11, 14 (the
        # paper trains at 14x14 and tests at 16, 19, 24: ratios 1.14, 1.36, 1.71); copying 3 symbols, gap 5 -> 20, 40.
        # Step budgets for competence in distribution, measured on held-out data before any judged run (seed 0, lr
        # 3e-3 both): digits on the 180 validation digits, lstm 0.87 at 750 steps, 0.90 at 1,500; rims 0.84-0.85 at
        # 1,000-2,000 steps (training loss 0.03: it overfits 1,257 digits), with dropout 0.1 (the paper's, as in full)
        # 0.85-0.87 at 1,000-1,500; 17 grey levels rims 0.74-0.80, binarised rims 0.74-0.80 at 1,250. Copying on 1,000
        # fresh sequences at the training gap: rims 0.993, lstm 1.000 at 1,000 steps; rims with dropout 0.1 0.913, so
        # copying keeps dropout 0 (copy_dropout). Before (6x6 training, 200 / 250 steps) rims 0.68 and lstm 0.78 on
        # digits, 0.65 / 0.52 on copying: judged before they could do their task
        defaults=dict(
            tasks=["digits", "copying"], core="rims", all_active=False, embed_dim=16, hidden_size=16, num_units=6, k=4, cell="lstm",
            input_key_size=32, num_comm_heads=4, comm_key_size=16, dropout=0.1, copy_dropout=0.0,
            lr=3e-3, copy_lr=3e-3, weight_decay=0.0, warmup_steps=10, grad_clip=1.0, batch_size=64,
            max_steps=1500, train_side=8, test_sides=[8, 9, 11, 14], levels=5, num_train=0,
            copy_length=3, copy_train_gap=5, copy_test_gaps=[5, 20, 40], copy_steps=1000, copy_num_train=4096,
        ),
        presets={
            "smoke": dict(hidden_size=8, num_units=4, k=2, input_key_size=8, num_comm_heads=2, comm_key_size=4,
                          max_steps=3, warmup_steps=1, train_side=4, test_sides=[4, 6], copy_length=2,
                          copy_train_gap=2, copy_test_gaps=[2, 4], copy_steps=3, copy_num_train=128),
            "quick": {},
            # Appendix D.1/D.3 and Table 3: 6 RIMs of 100 units (600 in all), k = 4; input keys 64; 4 communication
            # heads of 32; Adam at 1e-4 (MNIST) and 1e-3 (copying); train 14x14, test 16/19/24; copy 10 symbols,
            # gap 50 -> 200. Step budgets: about 100 epochs of 60k MNIST digits at batch 64.
            "full": dict(embed_dim=64, hidden_size=100, num_units=6, k=4, input_key_size=64, num_comm_heads=4,
                         comm_key_size=32, dropout=0.1, copy_dropout=0.1, lr=1e-4, copy_lr=1e-3, warmup_steps=500, max_steps=90000,
                         train_side=14, test_sides=[14, 16, 19, 24], levels=2, copy_length=10, copy_train_gap=50,
                         copy_test_gaps=[50, 200], copy_steps=30000, copy_num_train=50000),
        },
        metrics=[
            Metric("acc_ood", True, primary=True, tolerance=0.05,
                   description="test accuracy averaged over the larger test resolutions (sequential digits)"),
            Metric("acc_id", True, tolerance=0.03, description="test accuracy at the training resolution"),
            Metric("acc", True, tolerance=0.05, description="test accuracy at one resolution (acc@side=N)"),
            Metric("acc_vs_resolution", True, curve=True, tolerance=0.05, x_label="test resolution (side, pixels)",
                   description="test accuracy per resolution; trained at the smallest"),
            Metric("ood_drop", False, tolerance=0.5,
                   description="ID accuracy minus OOD accuracy (the mean over larger resolutions / longer gaps)"),
            Metric("copy_ce_id", False, tolerance=0.2, description="copying: cross-entropy of the copied symbols at the training gap"),
            Metric("copy_ce_ood", False, tolerance=0.2, description="copying: cross-entropy at the longest test gap"),
            Metric("copy_acc_id", True, tolerance=0.05, description="copying: per-symbol accuracy at the training gap"),
            Metric("copy_acc_ood", True, tolerance=0.05, description="copying: per-symbol accuracy, mean over the longer test gaps"),
            Metric("copy_ce_vs_gap", False, curve=True, x_label="gap (blanks between the symbols and the marker)",
                   description="copying cross-entropy per gap; trained at the smallest"),
            Metric("copy_acc_vs_gap", True, curve=True, x_label="gap (blanks between the symbols and the marker)",
                   description="copying per-symbol accuracy per gap"),
            Metric("unit_activity", True, kind="info", curve=True, x_label="input position (pixel, training resolution)",
                   description="fraction of test digits in which the unit is active at each pixel (RIM variants)"),
            Metric("params", False, kind="info", description="trainable parameters (@digits, @copying)"),
            Metric("reference_acc", True, kind="info",
                   description="digits: a logistic regression on the same training pixels, at the training resolution"),
            Metric("trivial_floor", True, kind="info",
                   description="what a model without memory scores: majority-class accuracy, uniform-over-8-symbols CE and accuracy"),
            Metric("steps_per_s", True, kind="efficiency", tolerance=0.25, description="training steps per second (median step)"),
        ],
        run=lazy(f"{UNITS}:run"),
        verdict=claim_verdict,
        # quick seeds: 3, the fewest the verdicts' intervals accept (issue 27), since training to competence costs
        # 7.5x the digit steps at 1.8x the pixels; the k = n ablation (reported, not judged) 1 seed
        seeds={"quick": 3},
        tasks={"full": {"mnist": Task()}},  # the paper's sequential MNIST (IDX files), trained at 14x14
        # fast dev run: two batches per stage of both tasks (digits, copying), a copying training set of 256 sequences;
        # the preset's batch of 64 fits a CPU
        fast_dev=FastDev(config=dict(copy_num_train=256), batch_keys=("batch_size",)),
        paper_architecture="RIMs: 6 LSTM units of 100 (600 in all), k = 4 active, input keys 64, 4 communication heads "
                           "of 32 (Appendix D.1/D.3); LSTM h = 600; rims_k_all: k = 6",
        paper_params=[PaperParams(v, None, "none published: arXiv 1909.10893 gives unit counts and sizes (Table 1, "
                                  "Appendix D), not parameter counts") for v in ("rims", "lstm", "rims_k_all")],
        param_count=lazy(f"{UNITS}:full_params"),
        paper_numbers=[
            # target: Table 1 (right), sequential MNIST trained at 14x14, mean of 3 trials; per resolution
            # (acc@side=N), as our runs report them beside the acc_vs_resolution curve. Our full preset is this RIM
            # (6 units of 100, k=4) and its k = n row; its matched LSTM has 596 units, the paper's LSTM row 600.
            PaperNumber("rims", "mnist", "acc@side=16", 0.900, "arXiv 1909.10893 Table 1 (right), RIMs kT=6 kA=4 h=600, 16x16", scope="target"),
            PaperNumber("rims", "mnist", "acc@side=19", 0.734, "arXiv 1909.10893 Table 1 (right), RIMs kT=6 kA=4 h=600, 19x19", scope="target"),
            PaperNumber("rims", "mnist", "acc@side=24", 0.381, "arXiv 1909.10893 Table 1 (right), RIMs kT=6 kA=4 h=600, 24x24", scope="target"),
            PaperNumber("rims_k_all", "mnist", "acc@side=16", 0.855, "arXiv 1909.10893 Table 1 (right), RIMs kT=6 kA=6 h=600, 16x16", scope="target"),
            PaperNumber("rims_k_all", "mnist", "acc@side=19", 0.562, "arXiv 1909.10893 Table 1 (right), RIMs kT=6 kA=6 h=600, 19x19", scope="target"),
            PaperNumber("rims_k_all", "mnist", "acc@side=24", 0.309, "arXiv 1909.10893 Table 1 (right), RIMs kT=6 kA=6 h=600, 24x24", scope="target"),
            # (the table's LSTM h=300 row, 86.8/42.3/25.2, is a smaller model than ours)
            PaperNumber("lstm", "mnist", "acc@side=16", 0.845, "arXiv 1909.10893 Table 1 (right), LSTM h=600, 16x16", scope="target"),
            PaperNumber("lstm", "mnist", "acc@side=19", 0.522, "arXiv 1909.10893 Table 1 (right), LSTM h=600, 19x19", scope="target"),
            PaperNumber("lstm", "mnist", "acc@side=24", 0.219, "arXiv 1909.10893 Table 1 (right), LSTM h=600, 24x24", scope="target"),
            # context: Table 1 (left), copying, train gap 50, test gap 200, CE of the last 10 steps (Table 4's caption):
            # the same setting as our full preset, but the copying task is generated inside every unit rather than
            # being a --dataset, so no run row carries the dataset name "copying"
            PaperNumber("rims", "copying", "copy_ce_id", 0.00, "arXiv 1909.10893 Table 1 (left), RIMs kT=6 kA=4 h=600, Train(50); context: the copying task is not a --dataset of ours", scope="context"),
            PaperNumber("rims", "copying", "copy_ce_ood", 0.00, "arXiv 1909.10893 Table 1 (left), RIMs kT=6 kA=4 h=600, Test(200); context: the copying task is not a --dataset of ours", scope="context"),
            PaperNumber("lstm", "copying", "copy_ce_id", 0.00, "arXiv 1909.10893 Table 1 (left), LSTM h=600, Train(50); context: the copying task is not a --dataset of ours", scope="context"),
            PaperNumber("lstm", "copying", "copy_ce_ood", 3.56, "arXiv 1909.10893 Table 1 (left), LSTM h=600, Test(200); context: the copying task is not a --dataset of ours", scope="context"),
            # context: Table 4 (appendix), "no input attention and full communication", kT=kA=6 h=600
            PaperNumber("rims_k_all", "copying", "copy_ce_ood", 0.7, "arXiv 1909.10893 Table 4, RIMs kT=6 kA=6 h=600, Test 200; context: that ablation also drops input attention, ours keeps it", scope="context"),
        ],
    )
