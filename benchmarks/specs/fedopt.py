"""Adaptive federated optimization: FedAdam / FedYogi / FedAdagrad vs FedAvg / FedAvgM (paper 9).

``run`` trains one server optimizer with one seed: the same classifier, clients, client
SGD, local epochs and client sampling for every variant; only the server update (and its
tuned learning rate) differs. Test accuracy is measured on the server after every round.
Extra ``lr_grid`` trains every optimizer at each multiple of its chosen server learning
rate (validation split, seed 0), so the report shows the grid and whether the chosen
value is still the best. ``engine=flower`` runs the same clients through Flower's
Simulation Engine (optional extra ``flwr[simulation]==1.41.0``).

Learning rates: the ``digits`` server learning rates were picked on a half-decade grid at
the quick settings (validation split, seeds 0-2, client lr 0.1; mean accuracy of the last
5 of 30 rounds): fedavg 1 / 3 / 10 -> .875 / .921 / .129, fedavgm .3 / 1 / 3 -> .890 /
.920 / .919, fedadam .01 / .03 / .1 / .3 -> .906 / .926 / .938 / .830, fedyogi the same
lrs -> .904 / .926 / .940 / .821, fedadagrad .1 / .3 / 1 -> .923 / .940 / .937. FedAvg's
server lr is tuned too, as in the reference code (its README lists 10^0.5 for CIFAR-100);
the ``lr_grid`` extra re-measures the classic lr = 1 point every run (multiplier 1/3).
``emnist`` / ``cifar100`` values are the best ones the paper's reference code lists
(google-research/federated, optimization/README "Best hyperparameters", EMNIST CR and
CIFAR-100 rows, log10 values).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from benchmarks.registry import Benchmark, FastDev, Metric, PaperParams, PaperRef, Task, Variant, Verdict, lazy, register_benchmark
from benchmarks.verdict import Comparison, combine, floor_separation, gate, judge, make_verdict, per_seed, seed_stats

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

UNITS = "benchmarks.units.fedopt"
OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")  # = lit_modules.fedopt.OPTIMIZERS (tested)
ADAPTIVE = ("fedadam", "fedyogi", "fedadagrad")


# ------------------------------------------------------------------------------- verdict
# Declared before the run: one method (FedAdam, the paper's headline optimizer) against each baseline. FedYogi and
# FedAdagrad are reported beside it, not picked afterwards as "the best adaptive optimizer".
ADAM_VS_AVG = Comparison(
    "fedadam", "fedavg", "acc", "better", delta=0.0, label="FedAdam vs FedAvg",
    source="any gain counts: the claim is 'a higher accuracy in the same rounds'")
ADAM_VS_AVGM = Comparison(
    "fedadam", "fedavgm", "acc", "noninferior", margin=0.02, label="FedAdam vs FedAvgM",
    source="'at least on par': not more than 2 points of test accuracy below, about one standard error of "
           "accuracy on the 360 test digits (0.016)")
CHANCE = {"digits": 0.1, "emnist": 1 / 62, "cifar100": 0.01}  # a uniform guess over the classes: the trivial floor


def claim_verdict(df: pd.DataFrame) -> Verdict:
    """FedAdam vs FedAvg (better) and vs FedAvgM (non-inferior), both paired by seed."""
    better = judge(df, ADAM_VS_AVG)
    on_par = judge(df, ADAM_VS_AVGM)
    dataset = str(df["dataset"].iloc[0]) if "dataset" in df.columns and len(df) else "digits"
    chance = CHANCE.get(dataset, 0.0)
    avgm = per_seed(df, "fedavgm", "acc")
    ok, why = floor_separation(avgm, [chance] * max(2, len(avgm)), ADAM_VS_AVGM.margin)
    on_par = gate(on_par, ok, f"FedAvgM vs chance ({chance:.3g}): {why}")
    listing = ", ".join(
        f"{v} {seed_stats(df, v, 'acc')[0]:.3f}±{seed_stats(df, v, 'acc')[1]:.3f} (target in "
        f"{seed_stats(df, v, 'rounds_to_target')[0]:.0f} rounds)" for v in OPTIMIZERS if seed_stats(df, v, "acc")[2])
    others = [judge(df, replace(ADAM_VS_AVG, method=v, label=f"{v} vs fedavg")) for v in ("fedyogi", "fedadagrad")]
    evidence = (f"test acc (mean of the last rounds, mean±std over seeds): {listing}; the other adaptive optimizers, "
                "reported, not judged: " + "; ".join(f"{j.comparison.name} {j.estimate.text('+.3f')}" for j in others))
    return make_verdict(combine([better, on_par]), [better, on_par], evidence)


@register_benchmark
def fedopt() -> Benchmark:
    return Benchmark(
        name="fedopt",
        paper=PaperRef(
            title="Adaptive Federated Optimization",
            arxiv="2003.00295",
            code="https://github.com/google-research/federated/tree/master/optimization",
        ),
        claim=(
            "With client learning rates and server learning rates tuned per method, an adaptive server "
            "optimizer (FedAdam, FedYogi or FedAdagrad) reaches a higher accuracy on non-IID clients than "
            "FedAvg in the same number of rounds, and is at least on par with FedAvgM."
        ),
        verdict_rule=(
            "declared before the run: FedAdam against FedAvg and against FedAvgM on test accuracy (mean of the last "
            "avg_last rounds), paired by seed (same clients, split and initial model). FedAdam vs FedAvg: 95 % t-interval "
            "of the difference, holds if its lower end is above 0, does not hold if its upper end is below 0. FedAdam "
            "vs FedAvgM, non-inferiority with margin 0.02: holds if the 90 % interval's lower end is above −0.02, does "
            "not hold if its upper end is below −0.02 (and only once FedAvgM's accuracy is above chance by more than "
            "the margin). The claim holds if both hold, does not hold if either does not, else inconclusive. FedYogi "
            "and FedAdagrad are reported beside, not picked"
        ),
        variants=[
            Variant("fedavg", "baseline", {"optimizer": "fedavg"}, "server SGD, x + η Δ (McMahan et al.)"),
            Variant("fedavgm", "baseline", {"optimizer": "fedavgm"}, "server heavy-ball momentum β1 = 0.9 (Hsu et al.)"),
            Variant("fedadam", "method", {"optimizer": "fedadam"}, "Algorithm 2, Adam second moment, no bias correction"),
            Variant("fedyogi", "method", {"optimizer": "fedyogi"}, "Algorithm 2, Yogi second moment"),
            Variant("fedadagrad", "method", {"optimizer": "fedadagrad"}, "Algorithm 2, Adagrad second moment"),
        ],
        datasets={
            "digits": lazy(f"{UNITS}:federated"),
            "emnist": lazy(f"{UNITS}:federated", name="emnist"),
            "cifar100": lazy(f"{UNITS}:federated", name="cifar100"),
        },
        defaults=dict(
            engine="simulation", optimizer="fedavg", server_lr=None, client_lr=None, tau=None, beta1=0.9, beta2=0.99,
            v_init="zero", local_epochs=1, batch_size=20, num_clients=20, clients_per_round=10, alpha=0.3,
            min_client_size=2, partition_seed=0, emnist_split="byclass", rounds=30, weighting="num_examples",
            arch="auto", hidden=64, target_acc=0.9, avg_last=5, eval_every=1, lr_grid=[1 / 3, 1.0, 3.0],
            cpu_threads=1, flower_client_cpus=1.0,
        ),
        presets={
            "smoke": dict(rounds=3, num_clients=6, clients_per_round=3, avg_last=1, target_acc=0.5, lr_grid=[1.0]),
            "quick": {},
            # EMNIST CR as in the reference code's README: 10 clients/round, batch 20, 1 epoch, 1,500 rounds,
            # Keras' beta2 = 0.999; the paper's 3,400 writers are approximated by 3,400 Dirichlet clients.
            "full": dict(rounds=1500, num_clients=3400, alpha=0.3, beta2=0.999, target_acc=0.8, avg_last=10,
                         eval_every=10, lr_grid=[10**-0.5, 1.0, 10**0.5], cpu_threads=0),
        },
        metrics=[
            Metric("acc", True, primary=True, tolerance=0.02,
                   description="test accuracy of the global model, mean over the last avg_last evaluated rounds"),
            Metric("acc_vs_round", True, curve=True, tolerance=0.05, x_label="round", description="test accuracy per round"),
            Metric("final_acc", True, tolerance=0.03, description="test accuracy after the last round"),
            Metric("test_loss", False, tolerance=0.1, description="test cross-entropy after the last round"),
            Metric("rounds_to_target", False, tolerance=0.2,
                   description="first round with test accuracy >= target_acc; rounds + 1 = not reached"),
            Metric("reached_target", True, tolerance=0.0, description="1 if target_acc was reached within the rounds"),
            Metric("mb_to_target", False, tolerance=0.2,
                   description="MB sent (model down + update up, float32) until target_acc; censored like rounds_to_target"),
            Metric("mb_per_round", False, kind="info", description="MB communicated per round"),
            Metric("params", False, kind="info", description="model parameters"),
            Metric("server_lr", False, kind="info", description="server learning rate used"),
            Metric("client_lr", False, kind="info", description="client learning rate used"),
            Metric("round_ms", False, kind="efficiency", tolerance=0.3,
                   description="median wall time of one round (engine=flower: through Ray, evaluation included)"),
            Metric("client_ms_per_round", False, kind="efficiency", tolerance=0.3,
                   description="median time the sampled clients' local training takes per round"),
            Metric("server_overhead_ms", False, kind="efficiency", tolerance=0.5,
                   description="median per-round time beyond the clients' compute (sampling, aggregation, server step)"),
            Metric("server_overhead_frac", False, kind="efficiency", tolerance=0.5,
                   description="share of the round time spent outside the clients' compute"),
            Metric("grid_val_acc", True, curve=True, logx=True, x_label="server learning rate", tolerance=0.05,
                   description="validation accuracy (mean of last rounds) per server lr of the grid, seed 0"),
            Metric("grid_best_lr", False, kind="info", description="server lr with the best grid_val_acc"),
            Metric("grid_chosen_lr", False, kind="info", description="server lr the variants use"),
            Metric("grid_chosen_is_best", True, kind="info", description="1 if the chosen lr is the grid's best"),
        ],
        run=lazy(f"{UNITS}:run"),
        extras={"lr_grid": lazy(f"{UNITS}:lr_grid")},
        verdict=claim_verdict,
        tasks={"full": {"emnist": Task()}},  # EMNIST CR: 3,400 clients (the paper's writer count), the CNN below
        # fast dev run: two rounds (each a round of clients_per_round clients' local epochs, evaluated), the lr grid's
        # first point; the client batch of 20 fits anywhere
        fast_dev=FastDev(config=dict(rounds=2, eval_every=1, avg_last=1, lr_grid=[10**-0.5]), batch_keys=("batch_size",)),
        paper_architecture="EMNIST CR CNN of the reference code: conv 3x3 32, conv 3x3 64, max-pool 2, dropout 0.25, "
                           "dense 128, dropout 0.5, dense 62",
        paper_params=[PaperParams(v, 1_206_590, "google-research/federated, the EMNIST CR model "
                                  "(create_conv_dropout_model); the count is the sum over its layer list: "
                                  "320 + 18,496 + 1,179,776 + 7,998", tolerance=0.0)
                      for v in ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")],
        param_count=lazy(f"{UNITS}:full_params"),
        # quick seeds, sized by a power estimate from the 2-seed cpu-quick.csv of commit 2ef76d5, within the quick budget:
        # FedAdam vs FedAvg needs about 6 paired seeds at the stored spread (+0.014, sd 0.009); 25 s per seed. The 6-seed
        # run of commit 214083a (+0.014 [-0.001, +0.029]) said about 11; a seed of the five variants costs about 7 s
        # of unit time there (2-core AMD EPYC), so quick runs 12 (issue 27's budget note: the cheapest claim to decide)
        seeds={"quick": 12},
        # No paper numbers: Table 2 of arXiv 2003.00295 (validation accuracy over the last 100 rounds) could not
        # be read from any stored copy, and the one restatement found disagrees with the transcription this
        # spec used to carry (which columns hold CIFAR-100's 52.5 / 52.4), so those rows were removed (issue 18).
        # When they come back they are context: the paper's EMNIST CR uses the natural per-writer split and its
        # CIFAR-100 the Pachinko split, ours Dirichlet splits.
        paper_numbers=[],
        paper_numbers_note=("Table 2 of arXiv 2003.00295 could not be read from a stored copy, and the one restatement "
                            "found disagrees with an earlier transcription; when they come back they are context "
                            "(the paper's EMNIST natural and CIFAR-100 Pachinko splits, ours Dirichlet)"),
    )
