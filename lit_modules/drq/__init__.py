"""DrQ: Image Augmentation Is All You Need (arXiv 2004.13649, ICLR 2021).

Reference implementation: denisyarats/drq (the authors' PyTorch code; ``drq.py`` and
``config.yaml`` were read side by side with this one). Reproduced: random shifts
(replicate pad 4, random crop back), SAC from pixels with a conv encoder that the critic
trains and the actor reads detached, double Q with a Polyak-averaged target critic,
learned temperature, tanh-Gaussian policy; DrQ's target averaged over K augmented next
observations and critic loss over M augmented observations (K = M = 2; K = M = 1 is
RAD-style augmentation; pad 0 is plain SAC). Not reproduced: the paper's Atari (DQN)
experiments and its ablations over other augmentations.

Departures, flagged:
- The critic loss is the mean over the M copies (the paper's Algorithm 1: 1/(NM) Σ); the
  reference code sums them (a factor M on the critic's gradient, which Adam mostly absorbs).
- The actor's own projection (Linear, LayerNorm, tanh) reads the critic's conv features
  detached; the reference ties the actor's conv weights to the critic's and detaches at the
  same place, which is the same computation.

Layout: ``agent`` (the math, the networks, the LightningModule), ``loop`` (the environment
loop as a Lightning callback, evaluation).
"""

from lit_modules.drq.agent import (  # noqa: F401
    Actor,
    Critic,
    DrQAgent,
    Encoder,
    augment,
    polyak,
    random_shift,
    sac_target,
    tanh_gaussian,
)
from lit_modules.drq.loop import EVAL_SEED, EnvLoop, History, evaluate  # noqa: F401
