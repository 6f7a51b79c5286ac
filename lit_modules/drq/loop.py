"""The interaction loop: the agent fills its replay buffer while Lightning runs its updates.

``EnvLoop`` is a Lightning callback. At fit start it collects ``seed_steps`` simulator
steps with uniform random actions (DrQ's ``num_seed_steps``) and evaluates the untrained
policy; before every training batch it takes one agent step (a sampled action, repeated
``action_repeat`` times) and adds the transition to the buffer that the DataModule's
``IterableDataset`` samples from; after every update it evaluates on the schedule. One
gradient update per agent step, as in DrQ's reference code. Environment steps are
simulator steps (action repeat included), the paper's x axis.

``evaluate`` plays whole episodes with the deterministic policy (tanh of the mean), or
with uniform random actions when no agent is given (the trivial baseline). Evaluation
episodes start from the same states for every variant and seed (reset seeds
``EVAL_SEED + i``), so the comparison is paired.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch

from lit_modules.drq.agent import DrQAgent

EVAL_SEED = 10_000  # evaluation episodes reset with seeds 10000, 10001, ... (disjoint from training seeds)


def evaluate(agent: DrQAgent | None, env, episodes: int, rng: np.random.Generator | None = None) -> list[float]:
    """Returns of ``episodes`` full episodes: deterministic policy, or uniform random actions
    (``agent=None``, drawn from ``rng``)."""
    if agent is None and rng is None:
        raise ValueError("evaluate: a random policy (agent=None) needs an rng")
    returns = []
    for i in range(episodes):
        obs, total, done = env.reset(seed=EVAL_SEED + i), 0.0, False
        while not done:
            if agent is None:
                action = rng.uniform(-1.0, 1.0, env.action_dim)
            else:
                action = agent.act(torch.from_numpy(obs)[None].to(agent.device), deterministic=True)[0].cpu().numpy()
            obs, reward, terminated, truncated = env.step(action)
            total += reward
            done = terminated or truncated
        returns.append(total)
    return returns


@dataclass
class History:
    """What the loop measured: evaluation returns per environment step, and timings."""

    env_steps: list[int] = field(default_factory=list)
    eval_returns: list[list[float]] = field(default_factory=list)  # per evaluation: one return per episode
    train_returns: list[tuple[int, float]] = field(default_factory=list)  # (env step at episode end, return)
    env_s: float = 0.0  # acting + simulating + rendering, training steps only
    update_s: float = 0.0  # inside training_step (the gradient update)
    eval_s: float = 0.0
    agent_steps: int = 0
    updates: int = 0


class EnvLoop(L.Callback):
    """Drive the environment from the training loop (see the module docstring).

    ``env_steps`` is the budget in simulator steps; the loop stops the Trainer after
    ``num_updates`` updates (the agent steps left after the seed steps). Not ``max_steps``:
    under manual optimisation Lightning counts optimizer steps (three per DrQ update).
    """

    def __init__(self, datamodule, env_steps: int, seed_steps: int, eval_every: int, eval_episodes: int, seed: int) -> None:
        if env_steps <= seed_steps:
            raise ValueError(f"env_steps must exceed seed_steps; got env_steps={env_steps}, seed_steps={seed_steps}")
        if eval_every < 1 or eval_episodes < 1:
            raise ValueError(f"eval_every and eval_episodes must be >= 1; got {eval_every}, {eval_episodes}")
        self.dm, self.seed = datamodule, seed
        self.repeat = datamodule.action_repeat
        self.env_steps, self.seed_steps = env_steps, seed_steps
        self.eval_every, self.eval_episodes = eval_every, eval_episodes
        self.history = History()
        self.step = 0  # simulator steps taken in training
        self._rng = np.random.default_rng(seed)
        self._t0 = 0.0

    @property
    def num_updates(self) -> int:
        return (self.env_steps - self._seed_agent_steps() * self.repeat) // self.repeat

    def _seed_agent_steps(self) -> int:
        return -(-self.seed_steps // self.repeat)  # ceil

    # --- one agent step
    def _act(self, agent: DrQAgent | None) -> None:
        if agent is None:
            action = self._rng.uniform(-1.0, 1.0, self.env.action_dim).astype(np.float32)
        else:
            obs = torch.from_numpy(self.obs)[None].to(agent.device)
            action = agent.act(obs, deterministic=False)[0].cpu().numpy()
        next_obs, reward, terminated, truncated = self.env.step(action)
        self.dm.buffer.add(self.obs, action, reward, next_obs, terminated)
        self.step += self.repeat
        self.episode_return += reward
        if terminated or truncated:
            self.history.train_returns.append((self.step, self.episode_return))
            self.obs, self.episode_return = self.env.reset(), 0.0
        else:
            self.obs = next_obs

    def _evaluate(self, agent: DrQAgent) -> list[float]:
        start = time.perf_counter()
        returns = evaluate(agent, self.eval_env, self.eval_episodes)
        self.history.env_steps.append(self.step)
        self.history.eval_returns.append(returns)
        self.history.eval_s += time.perf_counter() - start
        return returns

    # --- Lightning hooks
    def on_fit_start(self, trainer: L.Trainer, agent: DrQAgent) -> None:
        self.dm.setup("fit")
        self.env = self.dm.make_env(self.seed)
        self.eval_env = self.dm.make_env(self.seed + 1)
        self.obs, self.episode_return = self.env.reset(seed=self.seed), 0.0
        self._evaluate(agent)  # the untrained policy, at env step 0
        for _ in range(self._seed_agent_steps()):
            self._act(None)
        self._next_eval = self.eval_every

    def on_train_batch_start(self, trainer, agent, batch, batch_idx) -> None:
        start = time.perf_counter()
        self._act(agent)
        self._t0 = time.perf_counter()
        self.history.env_s += self._t0 - start
        self.history.agent_steps += 1

    def on_train_batch_end(self, trainer, agent, outputs, batch, batch_idx) -> None:
        self.history.update_s += time.perf_counter() - self._t0
        self.history.updates += 1
        last = self.history.updates >= self.num_updates
        if self.step >= self._next_eval or last:
            returns = self._evaluate(agent)
            agent.log("eval/return", float(np.mean(returns)), on_step=True)
            while self._next_eval <= self.step:
                self._next_eval += self.eval_every
        if last:
            trainer.should_stop = True

    def on_fit_end(self, trainer, agent) -> None:
        self.env.close()
        self.eval_env.close()
