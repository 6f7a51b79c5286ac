"""The score network: a small DDPM-style U-Net predicting the noise, and its conditioning.

After score_sde_pytorch's ``models/ddpm.py`` (ResBlocks with a time embedding) and
``layerspp.GaussianFourierProjection`` (NCSN++'s embedding of log sigma for VE). Not the
NCSN++ / DDPM++ architectures: no attention, no FIR resampling. The input is scaled by
1 / sqrt(alpha_t^2 + std_t^2) (identity for VP) so that a small VE model trains in minutes.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from lit_modules.score_sde.samplers import ScoreFn
from lit_modules.score_sde.sdes import SDE, VESDE, _bcast


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

