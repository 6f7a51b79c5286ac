"""Training: denoising score matching, the reference's EMA, and the thin LightningModule.

After score_sde_pytorch's ``losses.py`` (continuous-time DSM with lambda(t) = std_t^2) and
``models/ema.py`` (EMA with warm-up).
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch.optim.swa_utils import AveragedModel

from lit_modules.score_sde.networks import ScoreUNet, score_from_noise_net
from lit_modules.score_sde.samplers import ScoreFn
from lit_modules.score_sde.sdes import SDE, _bcast, _sum_except_batch, make_sde


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
