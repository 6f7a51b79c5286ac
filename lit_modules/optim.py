"""The optimizer recipe the classifiers share: AdamW with decoupled weight decay on matrices
only, linear warm-up, then cosine decay to zero (the ViT paper's recipe; also used for the
Performer encoder so that the two attention variants differ in attention alone)."""

from __future__ import annotations

import math
from typing import Callable

import torch


def warmup_cosine_adamw(
    named_parameters, lr: float, weight_decay: float, warmup_steps: int, max_steps: int,
    no_decay: Callable[[str, torch.nn.Parameter], bool] = lambda name, p: p.ndim <= 1,
) -> dict:
    """``configure_optimizers`` output: AdamW over two groups (``no_decay(name, p)`` picks
    the parameters without weight decay: biases, norms, position embeddings) and a
    per-step LambdaLR schedule."""
    decay, plain = [], []
    for name, p in named_parameters:
        (plain if no_decay(name, p) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}], lr=lr)

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
