"""Pixel-based continuous control for DrQ: environments, a replay buffer, its DataModule.

Environments (``make_env``), each seen from pixels only, as uint8 [3·frame_stack, H, W]
(the last ``frame_stack`` RGB frames stacked on channels), with ``action_repeat`` (the
action is applied that many simulator steps, rewards summed) and actions in [-1, 1]:
- ``point_reach`` (embedded, numpy only, the quick preset's task): a dot moved by velocity
  control onto a randomly placed target, both drawn in the image (``PointReach``); reward
  ``-distance`` per step, 50 steps per episode, action repeat 1. Easy to learn, but only
  from the pixels: where the target is, is nowhere else.
- ``pendulum`` (embedded, offline, fast): gymnasium's ``Pendulum-v1`` rendered headless
  (``render_mode="rgb_array"``, pygame) at twice ``image_size`` and area-downscaled 2x2,
  torque rescaled from [-2, 2]; 200 simulator steps per episode, no terminal states (the
  time limit is a truncation, so the agent bootstraps through it).
- ``cartpole_swingup``, ``reacher_easy`` (and any ``<domain>_<task>`` of the suite):
  DeepMind Control from pixels (``dm_control`` + ``mujoco==3.17.0``, the ``dmc`` extra;
  headless with ``MUJOCO_GL=egl``), camera 0, 1,000 simulator steps per episode. The
  PlaNet benchmark's per-task action repeat, which DrQ follows (arXiv 2004.13649,
  Section 5.2; Hafner et al. 2018: 8 for cartpole, 2 for finger and walker, 4 otherwise),
  is each task's default.

The replay buffer stores stacked uint8 observations (observation and next observation,
as DrQ's reference code does) and is served as an endless ``IterableDataset`` of
uniformly sampled minibatches that the agent fills while it trains.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

GYM_TASKS = {"pendulum": "Pendulum-v1"}
# the PlaNet benchmark's action repeat (DrQ, arXiv 2004.13649 Section 5.2): cartpole 8, finger and walker 2, others 4
DMC_ACTION_REPEAT = {"cartpole": 8, "finger": 2, "walker": 2}
# ours: 50 agent steps per 200-step episode; on pendulum with 4,000 updates repeat 4 reached -740 and repeat 2 -910
# (random policy about -1,200), so 4 learns more per update, which is what a CPU budget buys
DEFAULT_ACTION_REPEAT = {"pendulum": 4, "point_reach": 1}


def default_action_repeat(name: str) -> int:
    if name in DEFAULT_ACTION_REPEAT:
        return DEFAULT_ACTION_REPEAT[name]
    return DMC_ACTION_REPEAT.get(name.split("_", 1)[0], 4)


# ------------------------------------------------------------------------------ sources
class PointReach:
    """``point_reach``: a dot moved to a randomly placed target, seen only in a small image.

    The arena is the square [-1, 1]²; the dot (red channel) and the target (green channel)
    are drawn as 3x3 squares centred at pixel ``round((x + 1) / 2 · (S - 1))`` (column from x,
    row from y, row 0 at y = -1) on a black S x S image. Velocity control: the action
    a ∈ [-1, 1]² moves the dot by ``speed · a`` (clipped to the arena). Reward per step
    ``-‖dot - target‖₂`` after the move (in [-2√2, 0]); 50 steps per episode, no terminal
    states (the time limit is a truncation). Starts: dot and target uniform in [-0.8, 0.8]²,
    from ``np.random.default_rng(seed)`` at ``reset(seed)`` (the stream goes on at
    ``reset(None)``). Pure numpy, deterministic for a seed.
    """

    def __init__(self, image_size: int, seed: int, speed: float = 0.15, episode_steps: int = 50) -> None:
        self.image_size, self.seed, self.speed, self.episode_steps = image_size, seed, speed, episode_steps
        self.action_dim = 2
        self.low, self.high = -np.ones(2, np.float32), np.ones(2, np.float32)
        self._rng = np.random.default_rng(seed)
        self.pos, self.target, self.t = np.zeros(2), np.zeros(2), 0

    def pixel(self, xy: np.ndarray) -> tuple[int, int]:
        """(row, column) of a point's centre pixel."""
        col, row = np.rint((np.asarray(xy, np.float64) + 1.0) / 2.0 * (self.image_size - 1)).astype(int)
        return int(row), int(col)

    def frame(self) -> np.ndarray:
        s = self.image_size
        img = np.zeros((3, s, s), np.uint8)
        for channel, xy in ((1, self.target), (0, self.pos)):
            r, c = self.pixel(xy)
            img[channel, max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = 255
        return img

    def reset(self, seed: int | None) -> np.ndarray:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.pos, self.target = self._rng.uniform(-0.8, 0.8, (2, 2))
        self.t = 0
        return self.frame()

    def reward(self) -> float:
        return -float(np.linalg.norm(self.pos - self.target))

    def step(self, action: np.ndarray) -> tuple[np.ndarray | None, float, bool, bool]:
        a = np.clip(np.asarray(action, np.float64).reshape(2), -1.0, 1.0)
        self.pos = np.clip(self.pos + self.speed * a, -1.0, 1.0)
        self.t += 1
        return None, self.reward(), False, self.t >= self.episode_steps

    def close(self) -> None:
        pass


class _GymPixels:
    """A gymnasium classic-control task as (frame, reward, terminated, truncated) per simulator step."""

    def __init__(self, env_id: str, image_size: int, seed: int) -> None:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # headless pygame: no display, no XDG_RUNTIME_DIR
        try:
            import gymnasium as gym
        except ImportError as exc:
            raise ImportError(f"{env_id} needs gymnasium (pip install 'iclrbench[rl]'); got {exc}") from exc

        self.env = gym.make(env_id, render_mode="rgb_array")
        raw = self.env.unwrapped
        if hasattr(raw, "screen_dim"):  # pendulum draws at screen_dim: render small instead of 500 px
            raw.screen_dim = 2 * image_size
        self.image_size = image_size
        space = self.env.action_space
        self.low, self.high = np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)
        self.action_dim = int(np.prod(space.shape))
        self.seed = seed

    def frame(self) -> np.ndarray:
        img = np.asarray(self.env.render())  # H, W, 3 uint8
        h, w, _ = img.shape
        s = self.image_size
        if h % s == 0 and w % s == 0:  # area downscale by an integer factor
            img = img.reshape(s, h // s, s, w // s, 3).mean((1, 3))
        else:
            import PIL.Image

            img = np.asarray(PIL.Image.fromarray(img).resize((s, s), PIL.Image.BILINEAR), np.float64)
        return np.ascontiguousarray(img.round().astype(np.uint8).transpose(2, 0, 1))

    def reset(self, seed: int | None) -> np.ndarray:
        self.env.reset(seed=seed)
        return self.frame()

    def step(self, action: np.ndarray) -> tuple[np.ndarray | None, float, bool, bool]:
        scaled = self.low + (action + 1.0) * 0.5 * (self.high - self.low)
        _, reward, terminated, truncated, _ = self.env.step(scaled.astype(np.float32))
        return None, float(reward), bool(terminated), bool(truncated)

    def close(self) -> None:
        self.env.close()


class _DMCPixels:
    """A DeepMind Control suite task, rendered by MuJoCo (camera 0)."""

    def __init__(self, domain: str, task: str, image_size: int, seed: int, camera_id: int = 0) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        try:
            from dm_control import suite
        except ImportError as exc:
            raise ImportError(f"{domain}_{task} needs dm_control (pip install 'iclrbench[dmc]'); got {exc}") from exc
        if (domain, task) not in suite.ALL_TASKS:
            known = ", ".join(f"{d}_{t}" for d, t in suite.ALL_TASKS)
            raise ValueError(f"unknown DeepMind Control task {domain}_{task}; known: {known}")
        self.env = suite.load(domain, task, task_kwargs={"random": seed})
        spec = self.env.action_spec()
        self.low, self.high = spec.minimum.astype(np.float32), spec.maximum.astype(np.float32)
        self.action_dim = int(np.prod(spec.shape))
        self.image_size, self.camera_id = image_size, camera_id
        self.seed = seed

    def frame(self) -> np.ndarray:
        img = self.env.physics.render(self.image_size, self.image_size, camera_id=self.camera_id)
        return np.ascontiguousarray(img.transpose(2, 0, 1))

    def reset(self, seed: int | None) -> np.ndarray:
        if seed is not None:  # a fresh episode stream; the suite's tasks take their randomness at load
            self.env.task._random = np.random.RandomState(seed)
        self.env.reset()
        return self.frame()

    def step(self, action: np.ndarray) -> tuple[np.ndarray | None, float, bool, bool]:
        scaled = self.low + (action + 1.0) * 0.5 * (self.high - self.low)
        ts = self.env.step(scaled)
        last = ts.last()  # suite episodes end by time limit (discount stays 1): a truncation
        return None, float(ts.reward or 0.0), bool(last and ts.discount == 0), bool(last and ts.discount != 0)

    def close(self) -> None:
        self.env.close()


# ------------------------------------------------------------------------- the env
class PixelEnv:
    """Frame stack and action repeat over a pixel source; observations uint8 [3·k, H, W]."""

    def __init__(self, source: Any, frame_stack: int, action_repeat: int) -> None:
        if frame_stack < 1 or action_repeat < 1:
            raise ValueError(f"frame_stack and action_repeat must be >= 1; got {frame_stack}, {action_repeat}")
        self.source, self.frame_stack, self.action_repeat = source, frame_stack, action_repeat
        self.action_dim = source.action_dim
        self.obs_shape = (3 * frame_stack, source.image_size, source.image_size)
        self._frames: list[np.ndarray] = []

    def _obs(self) -> np.ndarray:
        return np.concatenate(self._frames, axis=0)

    def reset(self, seed: int | None = None) -> np.ndarray:
        frame = self.source.reset(seed)
        self._frames = [frame] * self.frame_stack
        return self._obs()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        """One agent step = ``action_repeat`` simulator steps -> (obs, summed reward, terminated, truncated)."""
        action = np.asarray(action, np.float32).reshape(self.action_dim)
        if not np.all(np.abs(action) <= 1.0 + 1e-6):
            raise ValueError(f"actions must lie in [-1, 1]; got {action.tolist()}")
        total, terminated, truncated = 0.0, False, False
        for _ in range(self.action_repeat):
            _, reward, terminated, truncated = self.source.step(action)
            total += reward
            if terminated or truncated:
                break
        self._frames = self._frames[1:] + [self.source.frame()]
        return self._obs(), total, terminated, truncated

    def close(self) -> None:
        self.source.close()


def make_env(name: str, image_size: int = 84, frame_stack: int = 3, action_repeat: int = 0, seed: int = 0) -> PixelEnv:
    """``pendulum`` (gymnasium) or ``<domain>_<task>`` (DeepMind Control); ``action_repeat=0``
    takes the task's default (``default_action_repeat``)."""
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels; got {image_size}")
    repeat = action_repeat or default_action_repeat(name)
    if name == "point_reach":
        source: Any = PointReach(image_size, seed)
    elif name in GYM_TASKS:
        source = _GymPixels(GYM_TASKS[name], image_size, seed)
    elif "_" in name:
        domain, task = name.split("_", 1)
        source = _DMCPixels(domain, task, image_size, seed)
    else:
        raise ValueError(f"unknown environment {name!r}; expected 'point_reach', 'pendulum' or a DeepMind Control '<domain>_<task>' "
                         "such as cartpole_swingup, reacher_easy")
    return PixelEnv(source, frame_stack, repeat)


# ----------------------------------------------------------------------- replay
class ReplayBuffer:
    """A ring buffer of (obs, action, reward, next_obs, not_done); observations uint8."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], action_dim: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1; got {capacity}")
        self.capacity = capacity
        self.obs = np.empty((capacity, *obs_shape), np.uint8)
        self.next_obs = np.empty((capacity, *obs_shape), np.uint8)
        self.action = np.empty((capacity, action_dim), np.float32)
        self.reward = np.empty((capacity, 1), np.float32)
        self.not_done = np.empty((capacity, 1), np.float32)
        self.idx, self.full = 0, False

    def __len__(self) -> int:
        return self.capacity if self.full else self.idx

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        """``not_done`` is 0 only at a true terminal state; a time-limit end still bootstraps."""
        i = self.idx
        self.obs[i], self.action[i], self.reward[i], self.next_obs[i] = obs, action, reward, next_obs
        self.not_done[i] = 0.0 if terminated else 1.0
        self.idx = (i + 1) % self.capacity
        self.full = self.full or self.idx == 0

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if len(self) == 0:
            raise ValueError("cannot sample from an empty replay buffer; collect seed steps first")
        idx = rng.integers(0, len(self), size=batch_size)
        return {
            "obs": torch.from_numpy(self.obs[idx]), "action": torch.from_numpy(self.action[idx]),
            "reward": torch.from_numpy(self.reward[idx]), "next_obs": torch.from_numpy(self.next_obs[idx]),
            "not_done": torch.from_numpy(self.not_done[idx]),
        }


class ReplayDataset(IterableDataset):
    """Endless uniformly sampled minibatches from a buffer that keeps growing."""

    def __init__(self, buffer: ReplayBuffer, batch_size: int, seed: int) -> None:
        self.buffer, self.batch_size, self.seed = buffer, batch_size, seed

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng(self.seed)
        while True:
            yield self.buffer.sample(self.batch_size, rng)


@dataclass(frozen=True)
class EnvSpec:
    obs_shape: tuple[int, int, int]
    action_dim: int
    action_repeat: int


class RLDataModule(L.LightningDataModule):
    """One pixel-control task and the replay buffer its agent fills.

    ``make_env(seed)`` builds an environment (the training loop and evaluation each get
    their own); ``train_dataloader`` serves minibatches from ``buffer`` (``batch_size=None``:
    the dataset yields whole batches, sampled in the main process, seeded).
    """

    def __init__(self, name: str = "pendulum", image_size: int = 48, frame_stack: int = 3, action_repeat: int = 0,
                 capacity: int = 100_000, batch_size: int = 128, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.action_repeat = action_repeat or default_action_repeat(name)
        self.buffer: ReplayBuffer | None = None
        self._spec: EnvSpec | None = None

    def make_env(self, seed: int) -> PixelEnv:
        h = self.hparams
        return make_env(h.name, h.image_size, h.frame_stack, self.action_repeat, seed)

    @property
    def spec(self) -> EnvSpec:
        if self._spec is None:
            env = self.make_env(0)
            self._spec = EnvSpec(env.obs_shape, env.action_dim, env.action_repeat)
            env.close()
        return self._spec

    def setup(self, stage: str | None = None) -> None:
        if self.buffer is None:
            self.buffer = ReplayBuffer(self.hparams.capacity, self.spec.obs_shape, self.spec.action_dim)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        dataset = ReplayDataset(self.buffer, self.hparams.batch_size, self.hparams.seed)
        return DataLoader(dataset, batch_size=None, num_workers=0)
