"""FedOpt's clients and server through Flower's Simulation Engine (optional extra).

The same federated training as :class:`lit_modules.fedopt.FederatedSimulation`, run as a
Flower ``ClientApp`` / ``ServerApp`` pair on Flower 1.41.0's Ray backend, so that the
benchmark scales out through the field's federated engine (DESIGN.md, "Scale-out"). The
server strategy steps :class:`lit_modules.fedopt.ServerOpt` (the paper's Algorithm 2), not
Flower's own FedAdam/FedYogi, which add a bias correction (see ``lit_modules/fedopt.py``).
A test checks that both engines give the same parameters.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from lit_modules.fedopt import (
    FedClassifier, FedConfig, History, LocalSGD, aggregate, client_generator, evaluate, get_params,
    sample_clients, set_params,
)

_FLOWER_CACHE: dict[str, tuple] = {}  # per process (a Ray actor): data and client trainer


def _flower_client_state(data_hparams: dict, model_hparams: dict):
    key = repr((sorted(data_hparams.items()), sorted(model_hparams.items())))
    if key not in _FLOWER_CACHE:
        from datamodules.federated import FederatedDataModule

        torch.set_num_threads(1)  # one CPU per virtual client (client_resources below)
        data = FederatedDataModule(**data_hparams)
        data.setup()
        _FLOWER_CACHE[key] = (data, LocalSGD(FedClassifier(**model_hparams)))
    return _FLOWER_CACHE[key]


def run_flower(data, module: FedClassifier, cfg: FedConfig, eval_split: str = "test", client_cpus: float = 1.0) -> History:
    """Run the same federated training through Flower's Simulation Engine (Ray backend).

    Clients are a Flower ``ClientApp`` (one virtual SuperNode per data partition) that
    runs :class:`LocalSGD`; the server is a ``ServerApp`` whose strategy samples the
    same clients as :class:`FederatedSimulation` and steps this file's
    :class:`ServerOpt` (not Flower's FedAdam/FedYogi, which add a bias correction).
    ``module`` ends with the final global parameters. Needs ``flwr[simulation]==1.41.0``.
    """
    try:
        from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
        from flwr.clientapp import ClientApp
        from flwr.serverapp import Grid, ServerApp
        from flwr.serverapp.strategy import FedAvg
        from flwr.simulation import run_simulation
    except ImportError as exc:  # pragma: no cover  (depends on the optional extra)
        raise ImportError("engine 'flower' needs the optional extra: pip install 'flwr[simulation]==1.41.0'") from exc
    import logging
    import os

    logging.getLogger("flwr").setLevel(logging.WARNING)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray's own advice, silences its FutureWarning
    data_hparams, model_hparams = dict(data.hparams), dict(module.hparams)
    names = [n for n, _ in module.named_parameters()]
    to_record = lambda ps: ArrayRecord(torch_state_dict={n: p.detach().cpu() for n, p in zip(names, ps)})  # noqa: E731
    from_record = lambda rec: [torch.from_numpy(rec[n].numpy().copy()) for n in names]  # noqa: E731
    client_app = ClientApp()

    @client_app.query()
    def whoami(msg: Message, context: Context) -> Message:
        me = MetricRecord({"partition-id": int(context.node_config["partition-id"])})
        return Message(RecordDict({"id": me}), reply_to=msg)

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        cdata, local = _flower_client_state(data_hparams, model_hparams)
        k, conf = int(context.node_config["partition-id"]), msg.content["config"]
        rnd, seed = int(conf["server-round"]), int(conf["seed"])
        x0 = from_record(msg.content["arrays"])
        x, y = cdata.client_data(k)
        delta, loss = local(x0, x, y, cfg.local_epochs, cfg.batch_size, cfg.client_lr, client_generator(seed, rnd, k))
        metrics = MetricRecord({"num-examples": len(y), "partition-id": k, "train_loss": loss})
        return Message(RecordDict({"arrays": to_record([a + d for a, d in zip(x0, delta)]), "metrics": metrics}), reply_to=msg)

    class ServerOptStrategy(FedAvg):
        """Flower strategy: our client sampling and our ServerOpt on the aggregated Δ."""

        def __init__(self, partition_of: dict[int, int]) -> None:
            super().__init__(fraction_evaluate=0.0)
            self.node_of = {k: node for node, k in partition_of.items()}
            self.server, self.current = cfg.server_opt(), None

        def configure_train(self, server_round, arrays, config, grid):
            self.current = from_record(arrays)
            config["server-round"], config["seed"] = server_round, cfg.seed
            picked = sample_clients(len(self.node_of), cfg.clients_per_round, cfg.seed, server_round)
            record = RecordDict({"arrays": arrays, "config": config})
            return [Message(record, self.node_of[k], MessageType.TRAIN) for k in picked]

        def aggregate_train(self, server_round, replies):
            replies = [r for r in replies if not r.has_error()]
            if len(replies) != cfg.clients_per_round:
                raise RuntimeError(f"round {server_round}: {len(replies)} of {cfg.clients_per_round} clients replied")
            replies.sort(key=lambda r: int(r.content["metrics"]["partition-id"]))  # the simulation's order
            deltas = [[a - b for a, b in zip(from_record(r.content["arrays"]), self.current)] for r in replies]
            n_k = [r.content["metrics"]["num-examples"] if cfg.weighting == "num_examples" else 1.0 for r in replies]
            new = self.server.step(self.current, aggregate(deltas, n_k))
            loss = float(np.mean([r.content["metrics"]["train_loss"] for r in replies]))
            return to_record(new), MetricRecord({"train_loss": loss})

    hist, x_eval, y_eval = History(), data.x[eval_split], data.y[eval_split]

    stamps: list[float] = []

    def evaluate_fn(server_round: int, arrays) -> None:
        stamps.append(time.perf_counter())  # called before round 1 and after every round
        if len(stamps) > 1:
            hist.round_s.append(stamps[-1] - stamps[-2])  # a round through Ray, plus the last evaluation
        if server_round > 0:
            set_params(module, from_record(arrays))
            acc, loss = evaluate(module, x_eval, y_eval)
            hist.rounds.append(server_round)
            hist.acc.append(acc)
            hist.loss.append(loss)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        deadline = time.monotonic() + 120
        while len(nodes := list(grid.get_node_ids())) < len(data.clients) and time.monotonic() < deadline:
            time.sleep(0.2)  # virtual SuperNodes register asynchronously (as flwr's sample_nodes waits)
        asks = [Message(RecordDict({"q": ConfigRecord({"ask": "partition-id"})}), node, MessageType.QUERY) for node in nodes]
        replies = [r for r in grid.send_and_receive(asks, timeout=600) if not r.has_error()]
        partition_of = {r.metadata.src_node_id: int(r.content["id"]["partition-id"]) for r in replies}
        if len(partition_of) != len(data.clients):
            raise RuntimeError(f"{len(partition_of)} of {len(data.clients)} Flower clients answered; see the log above")
        start = to_record(get_params(module))
        ServerOptStrategy(partition_of).start(grid, start, num_rounds=cfg.rounds, evaluate_fn=evaluate_fn)

    backend = {
        "client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
        "init_args": {"logging_level": "error", "log_to_driver": False},
    }
    run_simulation(server_app, client_app, num_supernodes=len(data.clients), backend_config=backend)
    if len(hist.rounds) != cfg.rounds:
        raise RuntimeError(f"Flower simulation ended after {len(hist.rounds)} of {cfg.rounds} rounds; see its log above")
    return hist
