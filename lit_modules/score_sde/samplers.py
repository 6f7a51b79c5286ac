"""Samplers: predictors, the Langevin corrector, PC sampling, DDPM ancestral, the probability-flow ODE.

Checked against score_sde_pytorch's ``sampling.py``. Additions: ``ancestral_posterior``
(DDPM ancestral sampling with the posterior variance beta~_i = beta_i (1 - abar_{i-1}) /
(1 - abar_i) instead of beta_i, DDPM's other choice, which is what makes few-step VP
ancestral sampling land on narrow modes: see the ``exact_score_mixture`` extra), and a
final denoising step for the ODE sampler as the reference's ``denoise=True``.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from scipy import integrate

from lit_modules.score_sde.sdes import SDE, VESDE, VPSDE, ReverseSDE, _bcast

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B, *D), t (B,)) -> score (B, *D)
Predictor = Callable[[SDE, ScoreFn, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
PREDICTORS: dict[str, Predictor] = {}
CORRECTORS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {}
ANCESTRAL_VARIANCES = ("beta", "posterior")


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


def _ancestral(sde, score_fn, x, t, variance: str):
    """DDPM ancestral sampling (VP) or its SMLD analogue (VE), the paper's Appendix F.
    VP noise variance: beta_i (the reference) or the posterior's beta~_i; VE: always the posterior's."""
    score = score_fn(x, t)
    if isinstance(sde, VESDE):
        sigma, adjacent = sde.adjacent_sigmas(t)
        x_mean = x + _bcast(sigma**2 - adjacent**2, x) * score
        std = torch.sqrt(adjacent**2 * (sigma**2 - adjacent**2) / sigma**2)
        return x_mean + _bcast(std, x) * torch.randn_like(x), x_mean
    if type(sde) is VPSDE:
        sde.check_discrete()
        i = sde.timestep(t)
        beta = sde.discrete_betas.to(t.device)[i]
        x_mean = (x + _bcast(beta, x) * score) / _bcast(torch.sqrt(1 - beta), x)
        var = beta
        if variance == "posterior":
            abar = sde.alphas_cumprod.to(t.device)
            abar_prev = torch.where(i == 0, torch.ones_like(beta), abar[(i - 1).clamp(min=0)])
            var = beta * (1 - abar_prev) / (1 - abar[i])
        return x_mean + _bcast(torch.sqrt(var), x) * torch.randn_like(x), x_mean
    raise ValueError(f"ancestral sampling is defined for VESDE and VPSDE, not {type(sde).__name__}")


@register_predictor("ancestral")
def ancestral_predictor(sde, score_fn, x, t):
    return _ancestral(sde, score_fn, x, t, "beta")


@register_predictor("ancestral_posterior")
def ancestral_posterior_predictor(sde, score_fn, x, t):
    return _ancestral(sde, score_fn, x, t, "posterior")


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


def _check_eps(sde: SDE, eps: float | None) -> float:
    """The sampler's last time: the SDE's grid ends there (its discrete betas depend on it)."""
    if eps is not None and not math.isclose(eps, sde.eps, rel_tol=1e-9):
        raise ValueError(f"sampler eps={eps} but the SDE's grid ends at eps={sde.eps}; build the SDE with eps={eps}")
    return sde.eps


@torch.no_grad()
def pc_sampler(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    eps: float | None = None,
    denoise: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, int]:
    """Predictor-corrector sampling (Algorithm 1) over the SDE's grid of N times from T to eps.

    Returns samples (shape) and the number of score evaluations per sample. With
    ``denoise`` the last step returns the predictor's mean (no final noise), as the
    reference's ``noise_removal=True``. ``eps`` (if given) must be the SDE's.
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; known: {', '.join(PREDICTORS)}")
    if corrector not in CORRECTORS:
        raise ValueError(f"unknown corrector {corrector!r}; known: {', '.join(CORRECTORS)}")
    if n_steps < 0 or snr <= 0:
        raise ValueError(f"need n_steps >= 0 and snr > 0; got {n_steps}, {snr}")
    _check_eps(sde, eps)
    predict, correct = PREDICTORS[predictor], CORRECTORS[corrector]
    counted = CountingScore(score_fn)
    x = sde.prior_sampling(shape).to(device)
    x_mean = x
    for t_i in sde.time_grid(device):
        t = torch.full((shape[0],), float(t_i), device=device)
        x, x_mean = correct(sde, counted, x, t, snr, n_steps)
        x, x_mean = predict(sde, counted, x, t)
    return (x_mean if denoise else x), counted.nfe


def ddpm_ancestral(sde: VPSDE, score_fn: ScoreFn, shape: tuple[int, ...], eps: float | None = None,
                   denoise: bool = True, device: str | torch.device = "cpu",
                   variance: str = "posterior") -> tuple[torch.Tensor, int]:
    """The DDPM baseline: ancestral sampling with the VP score network, no corrector.
    ``variance``: ``"posterior"`` (beta~_i) or ``"beta"`` (beta_i, the reference's sampler)."""
    if type(sde) is not VPSDE:
        raise ValueError(f"DDPM ancestral sampling needs a VPSDE; got {type(sde).__name__}")
    if variance not in ANCESTRAL_VARIANCES:
        raise ValueError(f"unknown ancestral variance {variance!r}; known: {', '.join(ANCESTRAL_VARIANCES)}")
    predictor = "ancestral_posterior" if variance == "posterior" else "ancestral"
    return pc_sampler(sde, score_fn, shape, predictor, "none", eps=eps, denoise=denoise, device=device)


def _flow_drift(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return ReverseSDE(sde, score_fn, probability_flow=True).sde(x, t)[0]


def ode_sampler(
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    eps: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "RK45",
    z: torch.Tensor | None = None,
    denoise: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, int]:
    """Integrate the probability-flow ODE from T to eps with scipy's adaptive ``solve_ivp``;
    with ``denoise``, one reverse-diffusion step at eps returns its mean (the reference's
    ``denoise=True``: the noise left at eps removed).

    Returns samples and the number of score evaluations per sample (solver's + 1 to denoise).
    """
    eps = _check_eps(sde, eps)
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
    x = torch.as_tensor(sol.y[:, -1], dtype=torch.float32, device=device).reshape(shape)
    nfe = int(sol.nfev)
    if denoise:
        with torch.no_grad():
            x = reverse_diffusion_predictor(sde, score_fn, x, torch.full((B,), eps, device=device))[1]
        nfe += 1
    return x, nfe
