"""Score-Based Generative Modeling through Stochastic Differential Equations (arXiv 2011.13456).

Reference implementation: yang-song/score_sde_pytorch (``sde_lib.py``, ``sampling.py``,
``likelihood.py``, ``losses.py``, ``models/ema.py``); the SDEs, the predictors and the
Langevin corrector (signal-to-noise step size), the probability-flow ODE with scipy's RK45
(rtol = atol = 1e-5) and the Hutchinson likelihood follow those files.
Reproduced: VE / VP / sub-VP SDEs, continuous-time denoising score matching, PC and ODE
samplers, DDPM ancestral sampling as the baseline on the same VP network, ODE likelihood
and bits/dim. Not reproduced: NCSN++ / DDPM++ (a small U-Net without attention or FIR
resampling), CIFAR-10-scale training. Departures, each measured with the exact score of known
mixtures (the benchmark's ``exact_score_mixture`` extra): VP betas from the sampler's own grid
(right for any N, not only N ~ 1 / eps), DDPM's posterior variance for ancestral sampling,
dequantisation bins centred on the training grid.

Parts: :mod:`.sdes` (SDEs and their discretisations), :mod:`.samplers` (predictors, corrector,
PC, DDPM ancestral, ODE), :mod:`.likelihood` (ODE log-likelihood, bits/dim), :mod:`.networks`
(the U-Net and its noise conditioning), :mod:`.module` (DSM loss, EMA, LightningModule).
"""

from lit_modules.score_sde.likelihood import bits_per_dim, dequantize, ode_likelihood
from lit_modules.score_sde.module import ScoreSDEModule, dsm_loss, ema_with_warmup
from lit_modules.score_sde.networks import (
    GaussianFourierProjection,
    ResBlock,
    ScoreUNet,
    network_condition,
    score_from_noise_net,
    timestep_embedding,
)
from lit_modules.score_sde.samplers import (
    ANCESTRAL_VARIANCES,
    CORRECTORS,
    PREDICTORS,
    CountingScore,
    ScoreFn,
    ancestral_posterior_predictor,
    ancestral_predictor,
    ddpm_ancestral,
    euler_maruyama_predictor,
    langevin_corrector,
    no_corrector,
    ode_sampler,
    pc_sampler,
    register_corrector,
    register_predictor,
    reverse_diffusion_predictor,
)
from lit_modules.score_sde.sdes import DISCRETIZATIONS, SDE, SDES, ReverseSDE, SubVPSDE, VESDE, VPSDE, make_sde

__all__ = [
    "ANCESTRAL_VARIANCES", "CORRECTORS", "DISCRETIZATIONS", "PREDICTORS", "SDE", "SDES", "CountingScore",
    "GaussianFourierProjection", "ResBlock", "ReverseSDE", "ScoreFn", "ScoreSDEModule", "ScoreUNet", "SubVPSDE",
    "VESDE", "VPSDE", "ancestral_posterior_predictor", "ancestral_predictor", "bits_per_dim", "ddpm_ancestral",
    "dequantize", "dsm_loss", "ema_with_warmup", "euler_maruyama_predictor", "langevin_corrector", "make_sde",
    "network_condition", "no_corrector", "ode_likelihood", "ode_sampler", "pc_sampler", "register_corrector",
    "register_predictor", "reverse_diffusion_predictor", "score_from_noise_net", "timestep_embedding",
]
