"""Score-Based Generative Modeling through Stochastic Differential Equations (arXiv 2011.13456).

Reference implementation: yang-song/score_sde_pytorch (``sde_lib.py``, ``sampling.py``,
``likelihood.py``, ``losses.py``, ``models/ema.py``); the SDEs, the predictors and the
Langevin corrector (signal-to-noise step size), the probability-flow ODE with scipy's RK45
(rtol = atol = 1e-5) and the Hutchinson likelihood follow those files.
Reproduced: VE / VP / sub-VP SDEs, continuous-time denoising score matching, PC and ODE
samplers, DDPM ancestral sampling as the baseline on the same VP network, ODE likelihood
and bits/dim. Not reproduced: NCSN++ / DDPM++ (we use a small U-Net without attention or
FIR resampling), CIFAR-10-scale training; the network's input is scaled by
1/sqrt(alpha_t^2 + std_t^2) (identity for VP) so that a small VE model trains in minutes.
"""

from __future__ import annotations

import abc
import math
from typing import Callable, Literal

import lightning as L
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import integrate
from torch.optim.swa_utils import AveragedModel

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B, *D), t (B,)) -> score (B, *D)


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-example vector (B,) viewed as (B, 1, ..., 1) to broadcast against x (B, *D)."""
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def _sum_except_batch(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(dim=1)


# ------------------------------------------------------------------------------------ SDEs
class SDE(abc.ABC):
    """dx = f(x, t) dt + g(t) dw on t in [0, T], with N discretisation steps.

    Shapes: x (B, *D), t (B,); ``sde`` returns drift (B, *D) and diffusion g (B,).
    """

    def __init__(self, N: int) -> None:
        if N < 1:
            raise ValueError(f"N must be >= 1; got {N}")
        self.N = N

    @property
    def T(self) -> float:
        return 1.0

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
        """The discrete index i of t in 0..N-1, as the reference code rounds it."""
        return (t * (self.N - 1) / self.T).long()


class VESDE(SDE):
    """Variance exploding: sigma(t) = sigma_min (sigma_max / sigma_min)^t, f = 0 (SMLD)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000) -> None:
        super().__init__(N)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.discrete_sigmas = torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), N))

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

    def discretize(self, x, t):
        """SMLD (NCSN) rule: G_i = sqrt(sigma_i^2 - sigma_{i-1}^2), sigma_{-1} = 0."""
        i = self.timestep(t)
        sigmas = self.discrete_sigmas.to(t.device)
        sigma = sigmas[i]
        adjacent = torch.where(i == 0, torch.zeros_like(sigma), sigmas[(i - 1).clamp(min=0)])
        return torch.zeros_like(x), torch.sqrt(sigma**2 - adjacent**2)


class VPSDE(SDE):
    """Variance preserving: beta(t) = beta_min + t (beta_max - beta_min), f = -beta x / 2 (DDPM)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000) -> None:
        super().__init__(N)
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max; got {beta_min}, {beta_max}")
        self.beta_0, self.beta_1 = beta_min, beta_max
        self.discrete_ok = beta_max / N < 1  # DDPM's rule needs every beta_i = beta(i/N)/N < 1
        self.discrete_betas = torch.linspace(beta_min / N, beta_max / N, N)  # DDPM's beta_i = beta(i/N)/N
        self.alphas = 1.0 - self.discrete_betas

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
        i = self.timestep(t)
        beta = self.discrete_betas.to(t.device)[i]
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
             beta_max: float = 20.0, N: int = 1000) -> SDE:
    if name not in SDES:
        raise ValueError(f"unknown SDE {name!r}; known: {', '.join(SDES)}")
    if name == "ve":
        return VESDE(sigma_min, sigma_max, N)
    return SDES[name](beta_min, beta_max, N)


class ReverseSDE:
    """dx = [f - g^2 score] dt + g dw-bar (or the probability-flow ODE, with g^2 score / 2)."""

    def __init__(self, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False) -> None:
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


# ------------------------------------------------------------------------------ samplers
Predictor = Callable[[SDE, ScoreFn, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
PREDICTORS: dict[str, Predictor] = {}
CORRECTORS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {}


def register_predictor(name: str):
    def deco(fn):
        if name in PREDICTORS:
            raise ValueError(f"predictor {name!r} registered twice")
        PREDICTORS[name] = fn
        return fn
    return deco


def register_corrector(name: str):
    def deco(fn):
        if name in CORRECTORS:
            raise ValueError(f"corrector {name!r} registered twice")
        CORRECTORS[name] = fn
        return fn
    return deco


@register_predictor("euler_maruyama")
def euler_maruyama_predictor(sde, score_fn, x, t):
    dt = -sde.T / sde.N
    drift, g = ReverseSDE(sde, score_fn).sde(x, t)
    x_mean = x + drift * dt
    return x_mean + _bcast(g, x) * math.sqrt(-dt) * torch.randn_like(x), x_mean


@register_predictor("reverse_diffusion")
def reverse_diffusion_predictor(sde, score_fn, x, t):
    f, G = ReverseSDE(sde, score_fn).discretize(x, t)
    x_mean = x - f
    return x_mean + _bcast(G, x) * torch.randn_like(x), x_mean


@register_predictor("ancestral")
def ancestral_predictor(sde, score_fn, x, t):
    """DDPM ancestral sampling (VP) or its SMLD analogue (VE), the paper's Appendix F."""
    i = sde.timestep(t)
    score = score_fn(x, t)
    if isinstance(sde, VESDE):
        sigmas = sde.discrete_sigmas.to(t.device)
        sigma = sigmas[i]
        adjacent = torch.where(i == 0, torch.zeros_like(sigma), sigmas[(i - 1).clamp(min=0)])
        x_mean = x + _bcast(sigma**2 - adjacent**2, x) * score
        std = torch.sqrt(adjacent**2 * (sigma**2 - adjacent**2) / sigma**2)
        return x_mean + _bcast(std, x) * torch.randn_like(x), x_mean
    if type(sde) is VPSDE:
        sde.check_discrete()
        beta = sde.discrete_betas.to(t.device)[i]
        x_mean = (x + _bcast(beta, x) * score) / _bcast(torch.sqrt(1 - beta), x)
        return x_mean + _bcast(torch.sqrt(beta), x) * torch.randn_like(x), x_mean
    raise ValueError(f"ancestral sampling is defined for VESDE and VPSDE, not {type(sde).__name__}")


@register_corrector("langevin")
def langevin_corrector(sde, score_fn, x, t, snr: float, n_steps: int):
    """Langevin steps with step size 2 alpha_i (snr ||z|| / ||score||)^2 (the paper's corrector
    algorithms for VE and VP; alpha_i = 1 - beta_i for VP and sub-VP, 1 for VE)."""
    if isinstance(sde, VPSDE):  # VP and sub-VP, as in the reference
        sde.check_discrete()
        alpha = sde.alphas.to(t.device)[sde.timestep(t)]
    else:
        alpha = torch.ones_like(t)
    x_mean = x
    for _ in range(n_steps):
        grad = score_fn(x, t)
        noise = torch.randn_like(x)
        grad_norm = torch.linalg.vector_norm(grad.reshape(grad.shape[0], -1), dim=-1).mean()
        noise_norm = torch.linalg.vector_norm(noise.reshape(noise.shape[0], -1), dim=-1).mean()
        step_size = (snr * noise_norm / grad_norm) ** 2 * 2 * alpha
        x_mean = x + _bcast(step_size, x) * grad
        x = x_mean + _bcast(torch.sqrt(2 * step_size), x) * noise
    return x, x_mean


@register_corrector("none")
def no_corrector(sde, score_fn, x, t, snr: float, n_steps: int):
    return x, x


class CountingScore:
    """Wraps a score function and counts its evaluations (NFE, per example of the batch)."""

    def __init__(self, score_fn: ScoreFn) -> None:
        self.score_fn, self.nfe = score_fn, 0

    def __call__(self, x, t):
        self.nfe += 1
        return self.score_fn(x, t)


@torch.no_grad()
def pc_sampler(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    eps: float = 1e-3,
    denoise: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, int]:
    """Predictor-corrector sampling (Algorithm 1) over N = sde.N steps from T to eps.

    Returns samples (shape) and the number of score evaluations per sample. With
    ``denoise`` the last step returns the predictor's mean (no final noise), as the
    reference's ``noise_removal=True``.
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; known: {', '.join(PREDICTORS)}")
    if corrector not in CORRECTORS:
        raise ValueError(f"unknown corrector {corrector!r}; known: {', '.join(CORRECTORS)}")
    if n_steps < 0 or snr <= 0:
        raise ValueError(f"need n_steps >= 0 and snr > 0; got {n_steps}, {snr}")
    predict, correct = PREDICTORS[predictor], CORRECTORS[corrector]
    counted = CountingScore(score_fn)
    x = sde.prior_sampling(shape).to(device)
    x_mean = x
    for t_i in torch.linspace(sde.T, eps, sde.N, device=device):
        t = torch.full((shape[0],), float(t_i), device=device)
        x, x_mean = correct(sde, counted, x, t, snr, n_steps)
        x, x_mean = predict(sde, counted, x, t)
    return (x_mean if denoise else x), counted.nfe


def ddpm_ancestral(sde: VPSDE, score_fn: ScoreFn, shape: tuple[int, ...], eps: float = 1e-3,
                   denoise: bool = True, device: str | torch.device = "cpu") -> tuple[torch.Tensor, int]:
    """The DDPM baseline: ancestral sampling with the VP score network, no corrector."""
    if type(sde) is not VPSDE:
        raise ValueError(f"DDPM ancestral sampling needs a VPSDE; got {type(sde).__name__}")
    return pc_sampler(sde, score_fn, shape, "ancestral", "none", eps=eps, denoise=denoise, device=device)


def _flow_drift(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return ReverseSDE(sde, score_fn, probability_flow=True).sde(x, t)[0]


def ode_sampler(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    eps: float = 1e-3,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "RK45",
    z: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, int]:
    """Integrate the probability-flow ODE from T to eps with scipy's adaptive ``solve_ivp``.

    Returns samples and the solver's number of drift evaluations (= NFE per sample).
    """
    x = (sde.prior_sampling(shape) if z is None else z).to(device)
    B = shape[0]

    def ode_func(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.as_tensor(y, dtype=torch.float32, device=device).reshape(shape)
        with torch.no_grad():
            drift = _flow_drift(sde, score_fn, xt, torch.full((B,), t, device=device))
        return drift.reshape(-1).double().cpu().numpy()

    sol = integrate.solve_ivp(ode_func, (sde.T, eps), x.reshape(-1).double().cpu().numpy(),
                              rtol=rtol, atol=atol, method=method)
    if not sol.success:
        raise RuntimeError(f"probability-flow ODE solve failed: {sol.message}")
    return torch.as_tensor(sol.y[:, -1], dtype=torch.float32, device=device).reshape(shape), int(sol.nfev)


# ---------------------------------------------------------------------------- likelihood
def ode_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: torch.Tensor,
    eps: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "RK45",
    divergence: Literal["rademacher", "gaussian", "exact"] = "rademacher",
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """log p_0(x) in nats per example (B,) by the instantaneous change of variables:

    log p_0(x(0)) = log p_T(x(T)) + int_0^T div f~(x(t), t) dt, with f~ the flow drift.
    The divergence is Hutchinson's estimate eps^T (d f~ / dx) eps with one noise draw kept
    for the whole solve (as the reference), or the exact trace of the Jacobian for small D.
    Returns (logp, x(T), NFE); integration starts at ``eps`` (1e-5, the reference's value).
    The score is evaluated in x's dtype (float64 input: a float64 solve).
    """
    names = ("rademacher", "gaussian", "exact")
    if divergence not in names:
        raise ValueError(f"unknown divergence {divergence!r}; known: {', '.join(names)}")
    shape, B, device = x.shape, x.shape[0], x.device
    D = x[0].numel()
    if divergence == "gaussian":
        noise = torch.randn_like(x)
    else:
        noise = torch.randint_like(x, 2) * 2 - 1

    def drift_and_div(xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            xt = xt.detach().requires_grad_(True)
            drift = _flow_drift(sde, score_fn, xt, t)
            if divergence == "exact":
                flat = drift.reshape(B, -1)
                div = sum(torch.autograd.grad(flat[:, d].sum(), xt, retain_graph=d < D - 1)[0].reshape(B, -1)[:, d]
                          for d in range(D))
            else:
                grad = torch.autograd.grad((drift * noise).sum(), xt)[0]
                div = _sum_except_batch(grad * noise)
        return drift.detach(), div.detach()

    def ode_func(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.as_tensor(y[:-B], dtype=x.dtype, device=device).reshape(shape)
        drift, div = drift_and_div(xt, torch.full((B,), t, device=device))
        return np.concatenate([drift.reshape(-1).double().cpu().numpy(), div.double().cpu().numpy()])

    init = np.concatenate([x.reshape(-1).double().cpu().numpy(), np.zeros(B)])
    sol = integrate.solve_ivp(ode_func, (eps, sde.T), init, rtol=rtol, atol=atol, method=method)
    if not sol.success:
        raise RuntimeError(f"likelihood ODE solve failed: {sol.message}")
    end = sol.y[:, -1]
    z = torch.as_tensor(end[:-B], dtype=x.dtype, device=device).reshape(shape)
    delta_logp = torch.as_tensor(end[-B:], dtype=torch.float64, device=device)
    return sde.prior_logp(z.double()) + delta_logp, z, int(sol.nfev)


def dequantize(x01: torch.Tensor, n_bins: int = 256) -> torch.Tensor:
    """Uniform dequantisation of data on the grid k / (n_bins - 1): (k + u) / n_bins in [0, 1]."""
    k = torch.round(x01 * (n_bins - 1))
    return (k + torch.rand_like(x01)) / n_bins


def bits_per_dim(logp: torch.Tensor, D: int, n_bins: int = 256) -> torch.Tensor:
    """Bits/dim of discrete data from the density of its dequantised copy scaled to [-1, 1].

    -log2 P(bin) = -log2 p_y(y) + D log2(n_bins / 2): the [0, 1] -> [-1, 1] map costs one bit
    per dim and each bin has width 1 / n_bins (the reference's offset of 7 for 8-bit data).
    """
    return -logp / (D * math.log(2)) + math.log2(n_bins / 2)


# -------------------------------------------------------------------------------- network
def timestep_embedding(c: torch.Tensor, dim: int, max_positions: int = 10000) -> torch.Tensor:
    """Transformer sinusoidal embedding of a scalar per example (B,) -> (B, dim) (DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_positions) * torch.arange(half, device=c.device) / (half - 1))
    args = c.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of log sigma for VE models (NCSN++, scale 16 as the reference)."""

    def __init__(self, dim: int, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("W", torch.randn(dim // 2) * scale)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        proj = c[:, None] * self.W[None] * 2 * math.pi
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=1)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, max(1, ch // 4)), ch)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, out_ch)
        self.norm2, self.drop = _norm(out_ch), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:  # x (B, C, H, W), temb (B, E)
        h = self.conv1(F.silu(self.norm1(x))) + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class ScoreUNet(nn.Module):
    """A small DDPM-style U-Net: ResBlocks with a time embedding, strided-conv down, nearest up.

    Input x (B, C, H, W) and a conditioning scalar c (B,) (999 t for VP/sub-VP, log sigma for VE);
    output (B, C, H, W), the noise estimate (zero-initialised last conv, as DDPM++).
    """

    def __init__(self, in_ch: int = 1, ch: int = 32, ch_mult: tuple[int, ...] = (1, 2), num_res_blocks: int = 1,
                 dropout: float = 0.0, embedding: Literal["positional", "fourier"] = "positional",
                 fourier_scale: float = 16.0) -> None:
        super().__init__()
        if embedding not in ("positional", "fourier"):
            raise ValueError(f"unknown embedding {embedding!r}; known: positional, fourier")
        self.ch, E = ch, 4 * ch
        self.fourier = GaussianFourierProjection(ch, fourier_scale) if embedding == "fourier" else None
        self.temb = nn.Sequential(nn.Linear(ch, E), nn.SiLU(), nn.Linear(E, E))
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down, skips, cur = nn.ModuleList(), [ch], ch
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(cur, ch * mult, E, dropout))
                cur = ch * mult
                skips.append(cur)
            if level < len(ch_mult) - 1:
                self.down.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
        self.mid = nn.ModuleList([ResBlock(cur, cur, E, dropout), ResBlock(cur, cur, E, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(cur + skips.pop(), ch * mult, E, dropout))
                cur = ch * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cur, cur, 3, padding=1)))
        self.norm_out, self.conv_out = _norm(cur), nn.Conv2d(cur, in_ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        emb = self.fourier(c) if self.fourier is not None else timestep_embedding(c, self.ch)
        temb = self.temb(emb)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, temb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), temb) if isinstance(layer, ResBlock) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def network_condition(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    """What the network is told about t: log sigma(t) for VE (NCSN++), 999 t otherwise (DDPM++)."""
    return torch.log(sde.marginal_coeffs(t)[1]) if isinstance(sde, VESDE) else 999 * t


def score_from_noise_net(sde: SDE, net: nn.Module) -> ScoreFn:
    """s(x, t) = -eps_theta(c_in x, c(t)) / std_t, c_in = 1 / sqrt(alpha_t^2 + std_t^2)."""

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, std = sde.marginal_coeffs(t)
        c_in = torch.rsqrt(alpha**2 + std**2)
        return -net(_bcast(c_in, x) * x, network_condition(sde, t)) / _bcast(std, x)

    return score_fn


def dsm_loss(sde: SDE, score_fn: ScoreFn, x0: torch.Tensor, eps: float = 1e-5, reduce_mean: bool = False) -> torch.Tensor:
    """Denoising score matching with lambda(t) = std_t^2, t ~ U(eps, T) (eq. 7).

    sum_D (std_t s(x_t, t) + z)^2 (or the mean over D, the reference's ``reduce_mean`` of its
    VP configs), averaged over the batch, with x_t = alpha_t x0 + std_t z.
    """
    t = torch.rand(x0.shape[0], device=x0.device) * (sde.T - eps) + eps
    z = torch.randn_like(x0)
    mean, std = sde.marginal_prob(x0, t)
    score = score_fn(mean + _bcast(std, x0) * z, t)
    per_example = _sum_except_batch((score * _bcast(std, x0) + z) ** 2)
    return (per_example / x0[0].numel() if reduce_mean else per_example).mean()


def ema_with_warmup(decay: float):
    """EMA update with the reference's warm-up: decay_n = min(decay, (1 + n) / (10 + n))."""
    if not 0 <= decay <= 1:
        raise ValueError(f"EMA decay must be in [0, 1]; got {decay}")

    @torch.no_grad()
    def update(ema_params, params, n_averaged):
        d = min(decay, (1 + float(n_averaged)) / (10 + float(n_averaged)))
        torch._foreach_lerp_(ema_params, params, 1 - d)

    return update


# ----------------------------------------------------------------------- LightningModule
class ScoreSDEModule(L.LightningModule):
    """Trains a noise-prediction U-Net by continuous DSM under one SDE; keeps an EMA copy."""

    def __init__(
        self,
        sde: Literal["ve", "vp", "subvp"] = "vp",
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        num_scales: int = 1000,
        in_ch: int = 1,
        ch: int = 32,
        ch_mult: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 1,
        dropout: float = 0.0,
        lr: float = 2e-4,
        warmup: int = 5000,
        ema_decay: float = 0.9999,
        train_eps: float = 1e-5,
        reduce_mean: bool = False,
        fourier_scale: float = 16.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.sde = make_sde(sde, sigma_min, sigma_max, beta_min, beta_max, num_scales)
        embedding = "fourier" if sde == "ve" else "positional"
        self.net = ScoreUNet(in_ch, ch, tuple(ch_mult), num_res_blocks, dropout, embedding, fourier_scale)
        self.ema = AveragedModel(self.net, multi_avg_fn=ema_with_warmup(ema_decay), use_buffers=True)
        self.ema.requires_grad_(False)

    def score_fn(self, ema: bool = True) -> ScoreFn:
        net = self.ema.module if ema else self.net
        net.eval()
        return score_from_noise_net(self.sde, net)

    def training_step(self, batch, batch_idx):
        x0 = batch[0] if isinstance(batch, (list, tuple)) else batch
        loss = dsm_loss(self.sde, score_from_noise_net(self.sde, self.net), x0, self.hparams.train_eps,
                        self.hparams.reduce_mean)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.ema.update_parameters(self.net)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)
        warmup = max(1, self.hparams.warmup)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
