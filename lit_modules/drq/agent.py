"""DrQ's math and networks: random shifts, the tanh-Gaussian policy, SAC with K/M averaging.

Order: pure functions (``random_shift``, ``tanh_gaussian``, ``sac_target``), the plain
``nn.Module``s (``Encoder``, ``Actor``, ``Critic``), then ``DrQAgent``, the thin
LightningModule that holds one gradient step (manual optimisation: critic, then actor and
temperature every ``actor_update_every`` steps, then Polyak averaging).
Shapes: B batch, C channels (3 · frame stack), H, W image, A action dim, F features.
"""

from __future__ import annotations

import copy
import math

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- the math
def random_shift(obs: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's image augmentation: replicate-pad by ``pad``, crop back at a random integer offset.

    obs [B, C, H, W] (uint8 or float) -> the same shape and dtype. Each image gets its own
    offset (dy, dx), uniform over {0, ..., 2·pad}², so every output pixel is a pixel of the
    padded input (exact, no interpolation). ``pad=0`` returns the input unchanged.
    """
    if obs.ndim != 4:
        raise ValueError(f"random_shift expects obs [B, C, H, W]; got shape {list(obs.shape)}")
    if not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be a non-negative int; got {pad!r}")
    if pad == 0:
        return obs
    B, C, H, W = obs.shape
    rng_device = generator.device if generator is not None else obs.device
    offsets = torch.randint(0, 2 * pad + 1, (B, 2), generator=generator, device=rng_device).to(obs.device)
    # row i of the crop at offset dy is row dy + i of the padded image, i.e. row dy + i - pad of the
    # input clamped to [0, H - 1]: replicate padding is index clamping (no padded copy, any dtype)
    rows = (offsets[:, :1] + torch.arange(H, device=obs.device) - pad).clamp_(0, H - 1)  # (B, H)
    cols = (offsets[:, 1:] + torch.arange(W, device=obs.device) - pad).clamp_(0, W - 1)  # (B, W)
    index = (rows[:, :, None] * W + cols[:, None, :]).view(B, 1, H * W).expand(B, C, H * W)
    return obs.reshape(B, C, H * W).gather(2, index).view(B, C, H, W)


def augment(obs: torch.Tensor, pad: int, copies: int) -> torch.Tensor:
    """``copies`` independently shifted versions of a batch, stacked: [copies · B, C, H, W]."""
    return torch.cat([random_shift(obs, pad) for _ in range(copies)]) if pad > 0 else obs.repeat(copies, 1, 1, 1)


def tanh_gaussian(mu: torch.Tensor, log_std: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a = tanh(mu + std·eps) and its log-density log π(a|s) [B, 1] (change of variables).

    ``eps`` ~ N(0, I) is drawn when not given. log(1 - tanh(u)²) = 2 (log 2 - u - softplus(-2u)),
    the numerically stable form (as in SAC implementations and DrQ's SquashedNormal).
    """
    if eps is None:
        eps = torch.randn_like(mu)
    u = mu + log_std.exp() * eps
    log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
    log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1, keepdim=True)
    return torch.tanh(u), log_prob


def sac_target(reward: torch.Tensor, not_done: torch.Tensor, q1_next: torch.Tensor, q2_next: torch.Tensor,
               log_pi_next: torch.Tensor, alpha: torch.Tensor | float, discount: float) -> torch.Tensor:
    """Soft Bellman target y = r + γ · not_done · (min(Q1', Q2') − α log π(a'|s')), all [B, 1];
    Q1', Q2' come from the target networks at a' ~ π(·|s')."""
    return reward + discount * not_done * (torch.min(q1_next, q2_next) - alpha * log_pi_next)


# ------------------------------------------------------------------------------ modules
class Encoder(nn.Module):
    """DrQ's conv encoder: pixels / 255, ``num_layers`` 3x3 convs (the first stride 2), ReLU.

    [B, C, H, W] uint8 -> [B, repr_dim] (flattened feature maps). It is the critic's: the
    actor reads its output detached (DrQ ties the actor's conv weights to the critic's and
    stops the actor's gradient there).
    """

    def __init__(self, obs_shape: tuple[int, int, int], num_filters: int = 32, num_layers: int = 4) -> None:
        super().__init__()
        c, h, w = obs_shape
        layers: list[nn.Module] = [nn.Conv2d(c, num_filters, 3, stride=2), nn.ReLU()]
        for _ in range(num_layers - 1):
            layers += [nn.Conv2d(num_filters, num_filters, 3, stride=1), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            self.repr_dim = int(self.convs(torch.zeros(1, c, h, w)).numel())
        if self.repr_dim <= 0:
            raise ValueError(f"image {h}x{w} is too small for {num_layers} conv layers")

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.convs(obs.float() / 255.0).flatten(1)


def mlp(inp: int, hidden: int, out: int, depth: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(inp if i == 0 else hidden, hidden), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, out))


class Actor(nn.Module):
    """Projection (Linear, LayerNorm, tanh: DrQ's encoder head) then an MLP to (mu, log_std)."""

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int,
                 log_std_min: float = -10.0, log_std_max: float = 2.0) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.policy = mlp(feature_dim, hidden_dim, 2 * action_dim)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.policy(self.trunk(h)).chunk(2, dim=-1)
        # DrQ's bound: log_std squashed by tanh into [log_std_min, log_std_max]
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(log_std) + 1)
        return mu, log_std


class Critic(nn.Module):
    """The encoder, a projection, and two Q heads on [features, action] (double Q)."""

    def __init__(self, encoder: Encoder, action_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.trunk = nn.Sequential(nn.Linear(encoder.repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.q1 = mlp(feature_dim + action_dim, hidden_dim, 1)
        self.q2 = mlp(feature_dim + action_dim, hidden_dim, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.cat([self.trunk(self.encoder(obs)), action], dim=-1)
        return self.q1(z), self.q2(z)


@torch.no_grad()
def orthogonal_init(m: nn.Module) -> None:
    """DrQ's ``utils.weight_init``: orthogonal weights (gain √2 for convs, as for ReLU), zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.orthogonal_(m.weight, nn.init.calculate_gain("relu"))
        nn.init.zeros_(m.bias)


@torch.no_grad()
def polyak(online: nn.Module, target: nn.Module, tau: float) -> None:
    """target ← (1 − tau) · target + tau · online, parameter by parameter."""
    for p, tp in zip(online.parameters(), target.parameters()):
        tp.lerp_(p, tau)


# ------------------------------------------------------------------------ LightningModule
class DrQAgent(L.LightningModule):
    """SAC from pixels with DrQ's regularisation (arXiv 2004.13649, Algorithm 1).

    ``K`` augmented next observations average the target, ``M`` augmented observations
    average the critic loss; ``pad=0`` turns the augmentation off (then K = M = 1 is plain
    SAC). Defaults are DrQ's (the reference config.yaml): lr 1e-3, Adam, discount 0.99, initial
    temperature 0.1, features 50, hidden 1024, 32 filters, 4 conv layers, critic tau 0.01
    (the whole critic, encoder included), actor and target updates every 2 steps, log-std
    bounds [−10, 2], target entropy −|A|; orthogonal initialisation as the reference code.
    """

    def __init__(self, obs_shape: tuple[int, int, int] = (9, 84, 84), action_dim: int = 1, K: int = 2, M: int = 2,
                 pad: int = 4, lr: float = 1e-3, discount: float = 0.99, init_temperature: float = 0.1,
                 feature_dim: int = 50, hidden_dim: int = 1024, num_filters: int = 32, num_layers: int = 4,
                 critic_tau: float = 0.01, actor_update_every: int = 2,
                 target_update_every: int = 2, log_every: int = 50) -> None:
        super().__init__()
        if K < 1 or M < 1:
            raise ValueError(f"K and M must be >= 1; got K={K}, M={M}")
        if pad < 0:
            raise ValueError(f"pad must be >= 0; got {pad}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        obs_shape = tuple(obs_shape)
        self.critic = Critic(Encoder(obs_shape, num_filters, num_layers), action_dim, feature_dim, hidden_dim)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor = Actor(self.critic.encoder.repr_dim, action_dim, feature_dim, hidden_dim)
        self.critic.apply(orthogonal_init)
        self.actor.apply(orthogonal_init)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.target_entropy = -float(action_dim)
        self.updates = 0

    @property
    def encoder(self) -> Encoder:
        return self.critic.encoder

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def configure_optimizers(self):
        lr = self.hparams.lr  # foreach: one multi-tensor update instead of a loop over many small tensors (CPU)
        return [torch.optim.Adam(self.critic.parameters(), lr=lr, foreach=True),  # encoder + critic
                torch.optim.Adam(self.actor.parameters(), lr=lr, foreach=True),  # the actor's own projection and MLP
                torch.optim.Adam([self.log_alpha], lr=lr)]

    # --- acting
    def policy(self, obs: torch.Tensor, detach_encoder: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_std) of π(·|obs); the encoder's gradient is stopped unless asked for."""
        h = self.encoder(obs)
        return self.actor(h.detach() if detach_encoder else h)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Actions in [-1, 1] for obs [B, C, H, W]: tanh(mu) when deterministic, else a sample."""
        mu, log_std = self.policy(obs)
        return torch.tanh(mu) if deterministic else tanh_gaussian(mu, log_std)[0]

    # --- the three losses
    @torch.no_grad()
    def drq_target(self, reward: torch.Tensor, next_obs: torch.Tensor, not_done: torch.Tensor) -> torch.Tensor:
        """DrQ's target: the soft Bellman target averaged over the K augmented copies in
        ``next_obs`` [K·B, C, H, W] (copy-major). a' ~ π(·|s') from the online encoder and
        actor, Q' from the target critic, as in DrQ's reference code."""
        K = next_obs.shape[0] // reward.shape[0]
        mu, log_std = self.policy(next_obs)
        next_action, log_pi = tanh_gaussian(mu, log_std)
        q1, q2 = self.critic_target(next_obs, next_action)
        y = sac_target(reward.repeat(K, 1), not_done.repeat(K, 1), q1, q2, log_pi, self.alpha, self.hparams.discount)
        return y.view(K, -1, 1).mean(0)  # (B, 1)

    def critic_loss(self, obs: torch.Tensor, action: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over the M augmented copies in ``obs`` [M·B, ...] of (Q1 − y)² + (Q2 − y)²."""
        M = obs.shape[0] // action.shape[0]
        q1, q2 = self.critic(obs, action.repeat(M, 1))
        y = target.repeat(M, 1)
        return F.mse_loss(q1, y) + F.mse_loss(q2, y)

    def actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[α log π(a|s) − min Q(s, a)], log π) with a ~ π reparameterised; the encoder is
        detached on both the policy and the Q side, so this loss never reaches it."""
        mu, log_std = self.policy(obs)
        action, log_pi = tanh_gaussian(mu, log_std)
        z = torch.cat([self.critic.trunk(self.encoder(obs).detach()), action], dim=-1)
        q = torch.min(self.critic.q1(z), self.critic.q2(z))
        return (self.alpha.detach() * log_pi - q).mean(), log_pi

    def alpha_loss(self, log_pi: torch.Tensor) -> torch.Tensor:
        """Temperature: E[−α (log π + target entropy)], with log π fixed."""
        return (self.alpha * (-log_pi - self.target_entropy).detach()).mean()

    # --- one gradient step
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        critic_opt, actor_opt, alpha_opt = self.optimizers()
        obs_aug = augment(batch["obs"], hp.pad, hp.M)  # (M·B, C, H, W)
        next_aug = augment(batch["next_obs"], hp.pad, hp.K)  # (K·B, C, H, W)
        target = self.drq_target(batch["reward"], next_aug, batch["not_done"])
        loss = self.critic_loss(obs_aug, batch["action"], target)
        critic_opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        critic_opt.step()
        logs = {"train/critic_loss": loss.detach(), "train/q_target": target.mean()}
        if self.updates % hp.actor_update_every == 0:
            obs = obs_aug[: batch["obs"].shape[0]]  # the first augmented copy, as DrQ's code
            a_loss, log_pi = self.actor_loss(obs)
            actor_opt.zero_grad(set_to_none=True)
            self.manual_backward(a_loss)
            actor_opt.step()
            t_loss = self.alpha_loss(log_pi)
            alpha_opt.zero_grad(set_to_none=True)
            self.manual_backward(t_loss)
            alpha_opt.step()
            logs.update({"train/actor_loss": a_loss.detach(), "train/alpha": self.alpha.detach(),
                         "train/entropy": -log_pi.detach().mean()})
        if self.updates % hp.target_update_every == 0:
            polyak(self.critic, self.critic_target, hp.critic_tau)
        self.updates += 1
        if self.updates % hp.log_every == 0:
            self.log_dict(logs, on_step=True, prog_bar=False)
        return loss.detach()
