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

import math
from typing import TYPE_CHECKING

from benchmarks.registry import Benchmark, Metric, PaperRef, Variant, Verdict, lazy, register_benchmark
from benchmarks.verdict import band, seed_stats

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

UNITS = "benchmarks.units.fedopt"
OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")  # = lit_modules.fedopt.OPTIMIZERS (tested)
ADAPTIVE = ("fedadam", "fedyogi", "fedadagrad")


# ------------------------------------------------------------------------------- verdict
def claim_verdict(df: pd.DataFrame) -> Verdict:
    """Best adaptive optimizer vs FedAvg (must win) and vs FedAvgM (must not lose)."""
    stats = {v: seed_stats(df, v, "acc") for v in OPTIMIZERS}
    rounds = {v: seed_stats(df, v, "rounds_to_target")[0] for v in OPTIMIZERS}
    have = [v for v in ADAPTIVE if stats[v][2] > 0]
    if not have or stats["fedavg"][2] == 0 or stats["fedavgm"][2] == 0:
        return Verdict("inconclusive", "missing acc rows for some optimizer")
    best = max(have, key=lambda v: stats[v][0])
    (a, sa, _), (b, sb, _), (c, sc, _) = stats[best], stats["fedavg"], stats["fedavgm"]
    w_b, w_c = band(sa, sb), band(sa, sc)
    listing = ", ".join(
        f"{v} {stats[v][0]:.3f}±{stats[v][1]:.3f} (target in {rounds[v]:.0f} rounds)" for v in OPTIMIZERS if stats[v][2]
    )
    evidence = (
        f"test acc (mean of last rounds) {listing}; best adaptive {best}: {a - b:+.3f} vs fedavg (band ±{w_b:.3f}), "
        f"{a - c:+.3f} vs fedavgm (band ±{w_c:.3f})"
    )
    if any(math.isnan(x) for x in (a, b, c)):
        return Verdict("inconclusive", evidence)
    if a - b > w_b and a - c > -w_c:
        return Verdict("holds", evidence)
    if a - b < -w_b or a - c < -w_c:
        return Verdict("does not hold", evidence)
    return Verdict("inconclusive", evidence)


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
            "take the adaptive optimizer with the best mean test accuracy (averaged over the last avg_last "
            "rounds); holds if it beats FedAvg by more than the band (2 pooled std over seeds, at least 0.01) "
            "and is not below FedAvgM by more than the band; does not hold if it loses to either by more than "
            "the band; else inconclusive"
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
