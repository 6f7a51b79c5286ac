"""fedopt: what a unit runs (run, extras, dataset factories). The declaration, verdict and
the description of the benchmark are in ``benchmarks/specs/fedopt.py``."""

from __future__ import annotations

import statistics

import lightning as L
import torch

from benchmarks.train import dev_step
from benchmarks.unit import Measurement, UnitContext
from datamodules.federated import FederatedDataModule
from lit_modules.fedopt import ENGINES, OPTIMIZERS, FedClassifier, FedConfig, FederatedSimulation, History, rounds_to_target

ARCH_FOR = {"digits": "mlp", "emnist": "cnn", "cifar100": "resnet18gn"}


def _table(values: dict[str, float]) -> dict[str, float]:
    return {name: float(values[name]) for name in OPTIMIZERS}


# Per dataset and optimizer. emnist / cifar100: google-research/federated optimization/README,
# "Best hyperparameters" (EMNIST CR, CIFAR-100 rows; the table gives log10 values).
SERVER_LRS = {
    "digits": _table({"fedavg": 3.0, "fedavgm": 1.0, "fedadam": 0.1, "fedyogi": 0.1, "fedadagrad": 0.3}),
    "emnist": _table({"fedavg": 1.0, "fedavgm": 10**-0.5, "fedadam": 10**-2.5, "fedyogi": 10**-2.5, "fedadagrad": 0.1}),
    "cifar100": _table({"fedavg": 10**0.5, "fedavgm": 1.0, "fedadam": 1.0, "fedyogi": 1.0, "fedadagrad": 0.1}),
}
CLIENT_LRS = {
    "digits": _table(dict.fromkeys(OPTIMIZERS, 0.1)),
    "emnist": _table({**dict.fromkeys(OPTIMIZERS, 10**-1.5), "fedavg": 0.1}),
    "cifar100": _table({**dict.fromkeys(OPTIMIZERS, 10**-1.5), "fedavg": 0.1, "fedadagrad": 0.1}),
}
TAUS = {  # the adaptivity tau ("epsilon" in the reference code); 1e-3 is the paper's default
    "digits": _table(dict.fromkeys(OPTIMIZERS, 1e-3)),
    "emnist": _table({**dict.fromkeys(OPTIMIZERS, 1e-4), "fedadagrad": 1e-2}),
    "cifar100": _table({**dict.fromkeys(OPTIMIZERS, 0.1), "fedadagrad": 1e-2}),
}


# ------------------------------------------------------------------------------ building
def federated(config: dict, data_dir: str | None, seed: int, name: str = "digits") -> FederatedDataModule:
    """The clients do not depend on the training seed: ``partition_seed`` fixes them."""
    return FederatedDataModule(
        name=name, data_dir=data_dir, num_clients=config["num_clients"], alpha=config["alpha"],
        min_client_size=config["min_client_size"], partition_seed=config["partition_seed"],
        emnist_split=config["emnist_split"],
    )


def full_params(config: dict, variant: str = "") -> int:
    """Parameters of the EMNIST model (``arch`` auto: the CNN) for ``config``: 1x28x28 inputs, 62 classes."""
    arch = config["arch"] if config["arch"] != "auto" else ARCH_FOR["emnist"]
    module = FedClassifier(arch, (1, 28, 28), 62, config["hidden"], 0.1)
    return sum(p.numel() for p in module.parameters())


def hyper(config: dict, dataset: str, optimizer: str) -> tuple[float, float, float]:
    """(server lr, client lr, tau) for ``optimizer``: a scalar config value wins over the table."""
    def pick(key: str, table: dict) -> float:
        if config[key] is not None:
            return float(config[key])
        return float(table.get(dataset, table["digits"])[optimizer])

    return pick("server_lr", SERVER_LRS), pick("client_lr", CLIENT_LRS), pick("tau", TAUS)


def fed_config(config: dict, dataset: str, optimizer: str, seed: int, server_lr: float | None = None) -> FedConfig:
    s_lr, c_lr, tau = hyper(config, dataset, optimizer)
    return FedConfig(
        optimizer=optimizer, server_lr=s_lr if server_lr is None else server_lr, beta1=config["beta1"],
        beta2=config["beta2"], tau=tau,
        v_init=config["v_init"], client_lr=c_lr, local_epochs=config["local_epochs"], batch_size=config["batch_size"],
        clients_per_round=config["clients_per_round"], rounds=config["rounds"], weighting=config["weighting"], seed=seed,
    )


def build(ctx: UnitContext, dm: FederatedDataModule, fed: FedConfig) -> FedClassifier:
    cfg = ctx.config
    torch.manual_seed(fed.seed)  # the same initial global model for every optimizer
    arch = cfg["arch"] if cfg["arch"] != "auto" else ARCH_FOR[dm.hparams.name]
    return FedClassifier(arch, dm.in_shape, dm.num_classes, cfg["hidden"], fed.client_lr)


def _prepare(ctx: UnitContext) -> FederatedDataModule:
    if ctx.config["engine"] not in ENGINES:
        raise ValueError(f"unknown engine {ctx.config['engine']!r}; known: {', '.join(ENGINES)}")
    if ctx.config["cpu_threads"] > 0:
        torch.set_num_threads(ctx.config["cpu_threads"])  # tiny per-client batches: 1 thread is fastest
    dm = ctx.datamodule()
    dm.prepare_data()
    dm.setup()
    return dm


def train(
    ctx: UnitContext, dm: FederatedDataModule, fed: FedConfig, split: str
) -> tuple[History, FederatedSimulation | None, FedClassifier]:
    """Federated training with the configured engine; the module ends as the final global model."""
    module = build(ctx, dm, fed)
    if ctx.config["engine"] == "flower":
        from lit_modules.fedopt_flower import run_flower  # needs the optional flwr[simulation]

        return run_flower(dm, module, fed, eval_split=split, client_cpus=ctx.config["flower_client_cpus"]), None, module
    fabric = L.Fabric(accelerator=ctx.accelerator, devices=1, precision=ctx.precision)  # clients run one at a time
    sim = FederatedSimulation(dm, module, fed, fabric)
    if ctx.fast_dev_run:  # the fast dev run's step is a round: clients_per_round clients' local epochs and the server step
        run_round = sim.run_round

        def measured_round(rnd: int):
            with dev_step(module, "federated round", batch=fed.batch_size):
                return run_round(rnd)

        sim.run_round = measured_round
    return sim.fit(eval_split=split, eval_every=ctx.config["eval_every"]), sim, module


def tail_mean(hist: History, last: int) -> float:
    """Accuracy averaged over the last ``last`` evaluations (the paper: last 100 rounds)."""
    return statistics.fmean(hist.acc[-last:])


# ------------------------------------------------------------------------------- measure
def run(ctx: UnitContext) -> list[Measurement]:
    cfg = ctx.config
    dm = _prepare(ctx)
    fed = fed_config(cfg, dm.hparams.name, cfg["optimizer"], ctx.seed)
    hist, sim, module = train(ctx, dm, fed, "test")
    out = [Measurement("acc_vs_round", a, step=r) for r, a in zip(hist.rounds, hist.acc)]
    reached = rounds_to_target(hist, cfg["target_acc"])
    censored = reached if reached is not None else cfg["rounds"] + 1
    n_params = sum(p.numel() for p in module.parameters())
    mb_round = 2 * fed.clients_per_round * n_params * 4 / 1e6  # float32 model down + update up
    out += [
        Measurement("acc", tail_mean(hist, cfg["avg_last"])),
        Measurement("final_acc", hist.acc[-1]),
        Measurement("test_loss", hist.loss[-1]),
        Measurement("rounds_to_target", censored),
        Measurement("reached_target", float(reached is not None)),
        Measurement("mb_to_target", censored * mb_round),
        Measurement("mb_per_round", mb_round),
        Measurement("params", n_params),
        Measurement("server_lr", fed.server_lr),
        Measurement("client_lr", fed.client_lr),
    ]
    out.append(Measurement("round_ms", 1e3 * statistics.median(hist.round_s)))
    if sim is not None:  # the split needs the clients' own times: simulation engine only
        server = [r - c for r, c in zip(hist.round_s, hist.client_s)]
        out += [
            Measurement("client_ms_per_round", 1e3 * statistics.median(hist.client_s)),
            Measurement("server_overhead_ms", 1e3 * statistics.median(server)),
            Measurement("server_overhead_frac", sum(server) / sum(hist.round_s)),
        ]
    return out


def lr_grid(ctx: UnitContext) -> list[Measurement]:
    """Every optimizer at each multiple of its chosen server lr; validation accuracy."""
    cfg = ctx.config
    dm = _prepare(ctx)
    out = []
    for name in OPTIMIZERS:
        chosen = hyper(cfg, dm.hparams.name, name)[0]
        scores = {}
        for mult in cfg["lr_grid"]:
            lr = chosen * mult
            hist, _, _ = train(ctx, dm, fed_config(cfg, dm.hparams.name, name, ctx.seed, server_lr=lr), "val")
            scores[lr] = tail_mean(hist, cfg["avg_last"])
            out.append(Measurement("grid_val_acc", scores[lr], step=lr, variant=name))
        best = max(scores, key=scores.get)
        out += [
            Measurement("grid_best_lr", best, variant=name),
            Measurement("grid_chosen_lr", chosen, variant=name),
            Measurement("grid_chosen_is_best", float(scores.get(chosen, -1) >= scores[best] - 1e-12), variant=name),
        ]
    return out
