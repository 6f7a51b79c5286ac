"""The SDEs of the paper (VE, VP, sub-VP), their perturbation kernels, discretisations and reverse.

Checked against score_sde_pytorch's ``sde_lib.py``. One departure, for few-step sampling: the
VP discretisation's beta_i come by default from the sampler's own time grid,
beta_i = 1 - abar(t_i) / abar(t_{i-1}) on t_i = linspace(eps, T, N) with t_{-1} = 0, instead of
the reference's beta_i = beta(i / N) / N (``discretization="ddpm"``), which is right only when
N is about 1 / eps (the reference samples VP only with N = 1000). With N = 50 the reference
rule's last step removes 18x the noise variance left at t = eps. Likewise VE's sigma_i are
sigma(t_i) on that grid (the reference's sigma(i / (N - 1)) differ from them by a factor of
at most (sigma_max / sigma_min)^eps).
"""

from __future__ import annotations

import abc
import math
from typing import Literal

import torch

DISCRETIZATIONS = ("grid", "ddpm")


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-example vector (B,) viewed as (B, 1, ..., 1) to broadcast against x (B, *D)."""
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def _sum_except_batch(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(dim=1)


class SDE(abc.ABC):
    """dx = f(x, t) dt + g(t) dw on t in [0, T], with N discretisation steps on the sampler's
    grid t_i = linspace(eps, T, N) (walked from T down to eps).

    Shapes: x (B, *D), t (B,); ``sde`` returns drift (B, *D) and diffusion g (B,).
    """

    def __init__(self, N: int, eps: float = 1e-3) -> None:
        if N < 1:
            raise ValueError(f"N must be >= 1; got {N}")
        if not 0 < eps < 1:
            raise ValueError(f"eps (the sampler's last time) must be in (0, 1); got {eps}")
        self.N, self.eps = N, eps

    @property
    def T(self) -> float:
        return 1.0

    def time_grid(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """The sampler's times, from T down to eps: (N,)."""
        return torch.linspace(self.T, self.eps, self.N, device=device)

    @abc.abstractmethod
    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abc.abstractmethod
    def marginal_coeffs(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, std_t), each (B,): p_0t(x(t) | x(0)) = N(alpha_t x(0), std_t^2 I)."""

    def marginal_prob(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, *D) and std (B,) of the perturbation kernel p_0t(x(t) | x(0) = x)."""
        alpha, std = self.marginal_coeffs(t)
        return _bcast(alpha, x) * x, std

    @property
    def prior_std(self) -> float:
        return 1.0

    def prior_sampling(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(*shape) * self.prior_std

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std^2 I) per example, (B,)."""
        D = z[0].numel()
        s2 = self.prior_std**2
        return -D / 2 * math.log(2 * math.pi * s2) - _sum_except_batch(z**2) / (2 * s2)

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_{i+1} = x_i + f_i + G_i z_i; Euler-Maruyama unless the SDE has its own rule."""
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The index i in 0..N-1 of t on the grid. The reference's floor(t (N - 1) / T) gives the
        same index on the grid while eps (N - 1) < T, and drifts by one beyond (N = 2000)."""
        if self.N == 1:
            return torch.zeros_like(t, dtype=torch.long)
        i = torch.round((t - self.eps) / (self.T - self.eps) * (self.N - 1))
        return i.clamp(0, self.N - 1).long()


class VESDE(SDE):
    """Variance exploding: sigma(t) = sigma_min (sigma_max / sigma_min)^t, f = 0 (SMLD)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000, eps: float = 1e-3) -> None:
        super().__init__(N, eps)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        # sigma(t_i) on the sampler's grid (the reference: sigma(i / (N - 1)), the same up to eps)
        self.discrete_sigmas = self.sigma(torch.linspace(eps, self.T, N, dtype=torch.float64)).float()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde(self, x, t):
        g = self.sigma(t) * math.sqrt(2 * (math.log(self.sigma_max) - math.log(self.sigma_min)))
        return torch.zeros_like(x), g

    def marginal_coeffs(self, t):
        # As in the reference: std = sigma(t), i.e. x(0) is data already perturbed by sigma_min.
        return torch.ones_like(t), self.sigma(t)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def adjacent_sigmas(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma_i, sigma_{i-1}) of t's grid index, sigma_{-1} = 0 (SMLD)."""
        i = self.timestep(t)
        sigmas = self.discrete_sigmas.to(t.device)
        sigma = sigmas[i]
        return sigma, torch.where(i == 0, torch.zeros_like(sigma), sigmas[(i - 1).clamp(min=0)])

    def discretize(self, x, t):
        """SMLD (NCSN) rule: G_i = sqrt(sigma_i^2 - sigma_{i-1}^2), sigma_{-1} = 0."""
        sigma, adjacent = self.adjacent_sigmas(t)
        return torch.zeros_like(x), torch.sqrt(sigma**2 - adjacent**2)


class VPSDE(SDE):
    """Variance preserving: beta(t) = beta_min + t (beta_max - beta_min), f = -beta x / 2 (DDPM).

    ``discretization``: ``"grid"`` (default) beta_i = 1 - abar(t_i) / abar(t_{i-1}) on the
    sampler's grid, so that abar_i = prod_{k<=i} (1 - beta_k) equals abar(t_i) for every N;
    ``"ddpm"`` the reference's beta_i = beta(i / N) / N (DDPM's schedule, for N ~ 1 / eps).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000, eps: float = 1e-3,
                 discretization: Literal["grid", "ddpm"] = "grid") -> None:
        super().__init__(N, eps)
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max; got {beta_min}, {beta_max}")
        if discretization not in DISCRETIZATIONS:
            raise ValueError(f"unknown discretization {discretization!r}; known: {', '.join(DISCRETIZATIONS)}")
        self.beta_0, self.beta_1, self.discretization = beta_min, beta_max, discretization
        if discretization == "ddpm":
            self.discrete_ok = beta_max / N < 1  # DDPM's rule needs every beta_i = beta(i/N)/N < 1
            self.discrete_betas = torch.linspace(beta_min / N, beta_max / N, N)
        else:
            self.discrete_ok = True
            t = torch.linspace(eps, self.T, N, dtype=torch.float64)
            log_abar = 2 * self.log_mean_coeff(t)
            prev = torch.cat([torch.zeros(1, dtype=torch.float64), log_abar[:-1]])  # abar(t_{-1} = 0) = 1
            self.discrete_betas = (-torch.expm1(log_abar - prev)).float()
        self.alphas = 1.0 - self.discrete_betas
        self.alphas_cumprod = torch.cumprod(self.alphas.double(), 0).float()  # abar_i

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_0 + t * (self.beta_1 - self.beta_0)

    def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """log alpha_t = -1/2 int_0^t beta(s) ds."""
        return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def sde(self, x, t):
        beta_t = self.beta(t)
        return -0.5 * _bcast(beta_t, x) * x, torch.sqrt(beta_t)

    def marginal_coeffs(self, t):
        lmc = self.log_mean_coeff(t)
        return torch.exp(lmc), torch.sqrt(-torch.expm1(2 * lmc))

    def check_discrete(self) -> None:
        if not self.discrete_ok:
            raise ValueError(f"{type(self).__name__} with N={self.N} has beta_max/N >= 1: the DDPM discretisation "
                             f"needs N > beta_max = {self.beta_1}")

    def discretize(self, x, t):
        """DDPM rule: x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z_i."""
        self.check_discrete()
        beta = self.discrete_betas.to(t.device)[self.timestep(t)]
        return (_bcast(torch.sqrt(1 - beta), x) - 1) * x, torch.sqrt(beta)


class SubVPSDE(VPSDE):
    """sub-VP: the VP drift with g(t)^2 = beta(t) (1 - exp(-2 int_0^t beta(s) ds))."""

    def sde(self, x, t):
        beta_t = self.beta(t)
        discount = -torch.expm1(4 * self.log_mean_coeff(t))  # 1 - exp(-2 int_0^t beta), log alpha = -int/2
        return -0.5 * _bcast(beta_t, x) * x, torch.sqrt(beta_t * discount)

    def marginal_coeffs(self, t):
        lmc = self.log_mean_coeff(t)
        return torch.exp(lmc), -torch.expm1(2 * lmc)  # std = 1 - alpha_t^2, not its square root

    def discretize(self, x, t):  # Euler-Maruyama, as the reference (no DDPM rule for sub-VP)
        return SDE.discretize(self, x, t)


SDES: dict[str, type[SDE]] = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}


def make_sde(name: str, sigma_min: float = 0.01, sigma_max: float = 50.0, beta_min: float = 0.1,
             beta_max: float = 20.0, N: int = 1000, eps: float = 1e-3,
             discretization: Literal["grid", "ddpm"] = "grid") -> SDE:
    if name not in SDES:
        raise ValueError(f"unknown SDE {name!r}; known: {', '.join(SDES)}")
    if name == "ve":
        return VESDE(sigma_min, sigma_max, N, eps)
    return SDES[name](beta_min, beta_max, N, eps, discretization)


class ReverseSDE:
    """dx = [f - g^2 score] dt + g dw-bar (or the probability-flow ODE, with g^2 score / 2)."""

    def __init__(self, sde: SDE, score_fn, probability_flow: bool = False) -> None:
        self.fwd, self.score_fn, self.probability_flow = sde, score_fn, probability_flow
        self.N, self.T = sde.N, sde.T

    def sde(self, x, t):
        drift, g = self.fwd.sde(x, t)
        weight = 0.5 if self.probability_flow else 1.0
        drift = drift - _bcast(g**2, x) * self.score_fn(x, t) * weight
        return drift, torch.zeros_like(g) if self.probability_flow else g

    def discretize(self, x, t):
        f, G = self.fwd.discretize(x, t)
        weight = 0.5 if self.probability_flow else 1.0
        rev_f = f - _bcast(G**2, x) * self.score_fn(x, t) * weight
        return rev_f, torch.zeros_like(G) if self.probability_flow else G
