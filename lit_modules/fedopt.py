"""Adaptive Federated Optimization: FedAdam, FedYogi and FedAdagrad vs FedAvg and FedAvgM.

Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan, ICLR 2021, arXiv 2003.00295.
Checked against the paper's Algorithm 2, the reference code's README
(google-research/federated, optimization/) and Flower 1.41.0's
``flwr.serverapp.strategy.FedAdam/FedYogi/FedAdagrad/FedAvgM``.

Reproduced: the server update exactly as Algorithm 2 writes it, *without* bias
correction (m and v start at zero and are never rescaled); the heavy-ball FedAvgM server
(Hsu et al. 2019); clients running E local epochs of minibatch SGD (Lightning Fabric)
with seeded client sampling and shuffling. Not reproduced: the TFF datasets' natural /
Pachinko client splits (see ``datamodules/federated.py``) and the CIFAR-100 crop
augmentation; the paper's round budgets only in the ``full`` preset.

Bias correction: Flower's FedAdam (message-based and legacy strategies alike) multiplies
the server lr by ``sqrt(1 - beta2^(t+1)) / (1 - beta1^(t+1))``, which Algorithm 2 does
not have, so its parameters differ from the paper's update (most in the first rounds);
Flower's FedYogi and FedAdagrad follow Algorithm 2. The reference experiments ran Keras
optimizers, whose Adam is also bias-corrected. The ``flower`` engine
(``lit_modules/fedopt_flower.py``) therefore wraps *this* file's :class:`ServerOpt` in a
Flower strategy.

Initial second moment: v starts at 0, as in Flower's strategies and the reference code
(its README: ``--server_{adagrad,yogi}_initial_accumulator_value=0.0``). Algorithm 2 asks
for v_{-1} >= tau^2; ``v_init="tau2"`` starts there instead. The two differ by tau^2 =
1e-6 under the square root, negligible once (1 - beta2) Δ² >> tau^2.

Aggregation: Algorithm 2 averages the client updates uniformly (1/|S|); the default here
weights them by client size n_i (FedAvg's and Flower's default); ``weighting="uniform"``
gives the paper's mean.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
ADAPTIVE = ("fedadam", "fedyogi", "fedadagrad")
ARCHS = ("mlp", "cnn", "resnet18gn")
ENGINES = ("simulation", "flower")


# ------------------------------------------------------------------------ the paper's math
def _check_same_shapes(a: Sequence[Tensor], b: Sequence[Tensor], what: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{what}: {len(a)} tensors vs {len(b)}; the parameter lists must match")
    for i, (s, t) in enumerate(zip(a, b)):
        if s.shape != t.shape:
            raise ValueError(f"{what}: tensor {i} has shape {tuple(s.shape)} vs {tuple(t.shape)}")


def aggregate(deltas: Sequence[Sequence[Tensor]], weights: Sequence[float]) -> list[Tensor]:
    """Δ = Σ_i w_i Δ_i / Σ_i w_i: the weighted mean of the clients' updates.

    deltas: one list of tensors per client (client params − global params), all with the
    same shapes; weights: one non-negative number per client (n_i, or 1 for a plain mean).
    """
    if len(deltas) == 0:
        raise ValueError("aggregate needs at least one client update")
    if len(deltas) != len(weights):
        raise ValueError(f"aggregate: {len(deltas)} client updates but {len(weights)} weights")
    w = torch.as_tensor([float(x) for x in weights], dtype=torch.float64)
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero; got {list(weights)}")
    for d in deltas[1:]:
        _check_same_shapes(deltas[0], d, "aggregate")
    w = w / w.sum()
    return [sum(float(w_i) * d[j] for w_i, d in zip(w, deltas)) for j in range(len(deltas[0]))]


def first_moment(m: Tensor, delta: Tensor, beta1: float) -> Tensor:
    """m_t = β1 m_{t-1} + (1 − β1) Δ_t (FedAdam / FedYogi / FedAdagrad)."""
    return beta1 * m + (1 - beta1) * delta


def heavy_ball(m: Tensor, delta: Tensor, beta1: float) -> Tensor:
    """FedAvgM's server momentum (Hsu et al. 2019): m_t = β1 m_{t-1} + Δ_t."""
    return beta1 * m + delta


def second_moment(name: str, v: Tensor, delta: Tensor, beta2: float) -> Tensor:
    """v_t of Algorithm 2 for ``name`` in fedadam | fedyogi | fedadagrad.

    adam:    v_t = β2 v_{t-1} + (1 − β2) Δ²
    yogi:    v_t = v_{t-1} − (1 − β2) Δ² sign(v_{t-1} − Δ²)
    adagrad: v_t = v_{t-1} + Δ²
    """
    d2 = delta * delta
    if name == "fedadam":
        return beta2 * v + (1 - beta2) * d2
    if name == "fedyogi":
        return v - (1 - beta2) * d2 * torch.sign(v - d2)
    if name == "fedadagrad":
        return v + d2
    raise ValueError(f"unknown adaptive server optimizer {name!r}; known: {', '.join(ADAPTIVE)}")


def adaptive_step(x: Tensor, m: Tensor, v: Tensor, eta: float, tau: float) -> Tensor:
    """x_{t+1} = x_t + η m_t / (√v_t + τ): uses the momentum m_t, not Δ_t."""
    return x + eta * m / (torch.sqrt(v) + tau)


class ServerOpt:
    """The server optimizer of FedOpt: treats Δ (the aggregated client update) as a
    pseudo-gradient pointing *downhill* and steps along it.

    fedavg: x + η Δ (η = 1 is McMahan et al.'s FedAvg); fedavgm: heavy ball, x + η m;
    fedadam / fedyogi / fedadagrad: Algorithm 2 with m_t, v_t as in the functions above.
    ``tau`` = 1e-3: the adaptivity the reference code recommends by default (its README's
    "epsilon") and Flower's default. Algorithm 2 gives FedAdagrad a first moment too;
    Flower's FedAdagrad and the reference's Keras Adagrad have none: ``beta1=0`` matches them.
    """

    def __init__(
        self,
        name: Literal["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"],
        lr: float,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        v_init: Literal["zero", "tau2"] = "zero",
    ) -> None:
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown server optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"server lr must be positive and finite; got {lr}")
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1); got {beta1}, {beta2}")
        if not tau > 0:
            raise ValueError(f"tau must be positive; got {tau}")
        if v_init not in ("zero", "tau2"):
            raise ValueError(f"unknown v_init {v_init!r}; known: zero, tau2")
        self.name, self.lr, self.beta1, self.beta2, self.tau, self.v_init = name, lr, beta1, beta2, tau, v_init
        self.m: list[Tensor] | None = None
        self.v: list[Tensor] | None = None
        self.t = 0

    def step(self, params: Sequence[Tensor], delta: Sequence[Tensor]) -> list[Tensor]:
        """New global parameters from the current ones and the aggregated update Δ."""
        _check_same_shapes(params, delta, f"{self.name}.step(params, delta)")
        if self.m is not None:
            _check_same_shapes(self.m, delta, f"{self.name}.step: state vs delta")
        self.t += 1
        if self.name == "fedavg":
            return [x + self.lr * d for x, d in zip(params, delta)]
        if self.m is None:
            self.m = [torch.zeros_like(d) for d in delta]
            v0 = self.tau**2 if self.v_init == "tau2" else 0.0
            self.v = [torch.full_like(d, v0) for d in delta]
        if self.name == "fedavgm":
            self.m = [heavy_ball(m, d, self.beta1) for m, d in zip(self.m, delta)]
            return [x + self.lr * m for x, m in zip(params, self.m)]
        self.m = [first_moment(m, d, self.beta1) for m, d in zip(self.m, delta)]
        self.v = [second_moment(self.name, v, d, self.beta2) for v, d in zip(self.v, delta)]
        return [adaptive_step(x, m, v, self.lr, self.tau) for x, m, v in zip(params, self.m, self.v)]


# ------------------------------------------------------------------------------- models
def make_classifier(arch: str, in_shape: Sequence[int], num_classes: int, hidden: int = 64) -> nn.Module:
    """The shared classifier. in_shape = (C, H, W); output logits (B, num_classes).

    mlp: one hidden ReLU layer (digits). cnn: the reference code's EMNIST CR model
    (google-research/federated ``create_conv_dropout_model``: conv3x3-32, conv3x3-64,
    maxpool 2, dropout .25, dense 128, dropout .5). resnet18gn: torchvision's ResNet-18
    with GroupNorm (2 groups: our choice), the paper's CIFAR-100 model (group norm after Hsieh et al.,
    so there are no batch-norm statistics to federate).
    """
    c, h, w = in_shape
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    if arch == "cnn":
        flat = 64 * ((h - 4) // 2) * ((w - 4) // 2)
        return nn.Sequential(
            nn.Conv2d(c, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
            nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes),
        )  # fmt: skip
    if arch == "resnet18gn":
        from torchvision.models import resnet18

        net = resnet18(num_classes=num_classes, norm_layer=lambda ch: nn.GroupNorm(2, ch))
        if c != 3:
            net.conv1 = nn.Conv2d(c, 64, 7, 2, 3, bias=False)
        return net
    raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")


class FedClassifier(L.LightningModule):
    """The one classifier every server optimizer trains; clients run its training_step."""

    def __init__(
        self,
        arch: Literal["mlp", "cnn", "resnet18gn"] = "mlp",
        in_shape: tuple[int, int, int] = (1, 8, 8),
        num_classes: int = 10,
        hidden: int = 64,
        client_lr: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = make_classifier(arch, in_shape, num_classes, hidden)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = self.val_acc.clone()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def _eval_step(self, batch: tuple[Tensor, Tensor], metric: MulticlassAccuracy, stage: str) -> None:
        x, y = batch
        logits = self(x)
        metric.update(logits, y)
        self.log(f"{stage}_loss", F.cross_entropy(logits, y))
        self.log(f"{stage}_acc", metric)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_acc, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_acc, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.client_lr)  # the paper's clients: plain SGD


# ---------------------------------------------------------------------- client training
def get_params(module: nn.Module) -> list[Tensor]:
    """Detached copies of ``module``'s parameters (the federated state; no buffers used)."""
    return [p.detach().clone() for p in module.parameters()]


def set_params(module: nn.Module, params: Sequence[Tensor]) -> None:
    own = list(module.parameters())
    _check_same_shapes(own, params, "set_params")
    with torch.no_grad():
        for p, q in zip(own, params):
            p.copy_(q)


def client_generator(seed: int, rnd: int, client: int) -> torch.Generator:
    """The shuffling stream of one client in one round: the same in every engine."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rnd, client]).generate_state(1)[0]))


def sample_clients(num_clients: int, clients_per_round: int, seed: int, rnd: int) -> list[int]:
    """The clients of round ``rnd`` (uniform without replacement), reproducible per seed."""
    if not 1 <= clients_per_round <= num_clients:
        raise ValueError(f"clients_per_round must be in 1..{num_clients}; got {clients_per_round}")
    rng = np.random.default_rng([seed, rnd, 7])
    return sorted(rng.choice(num_clients, size=clients_per_round, replace=False).tolist())


class LocalSGD:
    """ClientUpdate of Algorithm 2: E epochs of minibatch SGD from the global x, through
    Lightning Fabric on the run's device. Returns Δ_i = x_i − x and the mean loss."""

    def __init__(self, module: FedClassifier, fabric: L.Fabric | None = None) -> None:
        self.fabric = fabric or L.Fabric(accelerator="cpu", devices=1)
        self.raw = module
        self.module, self.optimizer = self.fabric.setup(module, module.configure_optimizers())

    def __call__(
        self, x0: Sequence[Tensor], x: Tensor, y: Tensor, epochs: int, batch_size: int, lr: float, generator: torch.Generator
    ) -> tuple[list[Tensor], float]:
        set_params(self.raw, x0)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.module.train()
        device = self.fabric.device
        x, y = x.to(device), y.to(device)
        n, losses = len(y), []
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(generator.initial_seed())  # dropout draws: the same in every engine
            for _ in range(epochs):
                order = torch.randperm(n, generator=generator).to(device)
                for i, start in enumerate(range(0, n, batch_size)):
                    idx = order[start : start + batch_size]  # (B,)
                    with self.fabric.autocast():
                        loss = self.raw.training_step((x[idx], y[idx]), i)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"client training loss is {float(loss)} (client lr {lr})")
                    self.fabric.backward(loss)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    losses.append(float(loss.detach()))
        delta = [p.detach() - q.to(p.device) for p, q in zip(self.raw.parameters(), x0)]
        return delta, float(np.mean(losses)) if losses else float("nan")


@torch.inference_mode()
def evaluate(module: FedClassifier, x: Tensor, y: Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``module`` on (x, y), via torchmetrics."""
    was = module.training
    module.eval()
    device = next(module.parameters()).device
    acc = MulticlassAccuracy(module.hparams.num_classes, average="micro").to(device)
    total = 0.0
    for s in range(0, len(y), batch_size):
        xb, yb = x[s : s + batch_size].to(device), y[s : s + batch_size].to(device)
        logits = module(xb)
        acc.update(logits, yb)
        total += float(F.cross_entropy(logits, yb, reduction="sum"))
    module.train(was)
    return float(acc.compute()), total / max(len(y), 1)


# ------------------------------------------------------------------ federated simulation
@dataclass
class FedConfig:
    """What every engine needs to run the same federated training."""

    optimizer: str = "fedavg"
    server_lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    v_init: str = "zero"
    client_lr: float = 0.1
    local_epochs: int = 1
    batch_size: int = 20
    clients_per_round: int = 10
    rounds: int = 30
    weighting: Literal["num_examples", "uniform"] = "num_examples"
    seed: int = 0

    def server_opt(self) -> ServerOpt:
        return ServerOpt(self.optimizer, self.server_lr, self.beta1, self.beta2, self.tau, self.v_init)  # type: ignore[arg-type]


@dataclass
class History:
    rounds: list[int] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    client_s: list[float] = field(default_factory=list)
    round_s: list[float] = field(default_factory=list)


class FederatedSimulation:
    """All clients in one process, one after another, deterministically (the default
    engine). Each round: sample clients, run :class:`LocalSGD` on each, aggregate the
    Δ_i, and let :class:`ServerOpt` move the global model."""

    def __init__(self, data, module: FedClassifier, cfg: FedConfig, fabric: L.Fabric | None = None) -> None:
        if cfg.weighting not in ("num_examples", "uniform"):
            raise ValueError(f"unknown weighting {cfg.weighting!r}; known: num_examples, uniform")
        self.data, self.cfg = data, cfg
        self.module = module
        self.local = LocalSGD(module, fabric)
        self.server = cfg.server_opt()
        self.params = get_params(module)
        self.num_clients = len(data.clients)
        sample_clients(self.num_clients, cfg.clients_per_round, cfg.seed, 0)  # validates the count

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params)

    def bytes_per_round(self) -> int:
        """Model down to and update up from each sampled client, float32."""
        return 2 * self.cfg.clients_per_round * self.num_params * self.params[0].element_size()

    def run_round(self, rnd: int) -> tuple[float, float, float]:
        """One round; returns (mean client loss, seconds in clients, seconds in the round)."""
        start = time.perf_counter()
        cfg, deltas, weights, losses, client_s = self.cfg, [], [], [], 0.0
        for k in sample_clients(self.num_clients, cfg.clients_per_round, cfg.seed, rnd):
            x, y = self.data.client_data(k)
            t0 = time.perf_counter()
            gen = client_generator(cfg.seed, rnd, k)
            d, loss = self.local(self.params, x, y, cfg.local_epochs, cfg.batch_size, cfg.client_lr, gen)
            client_s += time.perf_counter() - t0
            deltas.append(d)
            weights.append(len(y) if cfg.weighting == "num_examples" else 1.0)
            losses.append(loss)
        self.params = self.server.step(self.params, aggregate(deltas, weights))
        set_params(self.module, self.params)
        return float(np.mean(losses)), client_s, time.perf_counter() - start

    def fit(self, rounds: int | None = None, eval_split: str = "test", eval_every: int = 1) -> History:
        hist = History()
        x_eval, y_eval = self.data.x[eval_split], self.data.y[eval_split]
        total = rounds if rounds is not None else self.cfg.rounds
        for rnd in range(1, total + 1):
            train_loss, client_s, round_s = self.run_round(rnd)
            hist.train_loss.append(train_loss)
            hist.client_s.append(client_s)
            hist.round_s.append(round_s)
            if rnd % eval_every == 0 or rnd == total:
                acc, loss = evaluate(self.module, x_eval, y_eval)
                hist.rounds.append(rnd)
                hist.acc.append(acc)
                hist.loss.append(loss)
        return hist


def rounds_to_target(hist: History, target: float) -> int | None:
    """The first evaluated round whose accuracy reaches ``target``, or None."""
    return next((r for r, a in zip(hist.rounds, hist.acc) if a >= target), None)
