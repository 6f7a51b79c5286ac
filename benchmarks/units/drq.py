"""drq: what a unit runs. The declaration and the verdict are ``benchmarks/specs/drq.py``.

One unit trains one variant (drq, rad or sac: the same agent, encoder and
hyper-parameters; only K, M and the shift's pad differ) with one seed for ``env_steps``
simulator steps through ``Trainer.fit`` (the ``EnvLoop`` callback steps the environment
and fills the replay buffer that the DataModule serves), evaluating the deterministic
policy every ``eval_every`` steps, then plays the same evaluation episodes with a uniform
random policy: the trivial baseline that shows whether the agent learned anything.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.train import count_parameters, make_trainer
from benchmarks.unit import Measurement, UnitContext
from datamodules.rl import RLDataModule, default_action_repeat
from lit_modules.drq import DrQAgent, EnvLoop, evaluate

AGENT_KEYS = ("K", "M", "lr", "discount", "init_temperature", "feature_dim", "hidden_dim", "num_filters",
              "num_layers", "critic_tau", "actor_update_every", "target_update_every")


def environment(config: dict, data_dir: str | None, seed: int, name: str = "point_reach") -> RLDataModule:
    """The task's DataModule; the replay buffer holds every transition of the budget (up to ``capacity``)."""
    repeat = config["action_repeat"] or default_action_repeat(name)
    transitions = config["env_steps"] // repeat + 1
    return RLDataModule(name=name, image_size=config["image_size"], frame_stack=config["frame_stack"],
                        action_repeat=repeat, capacity=min(config["capacity"], transitions),
                        batch_size=config["batch_size"], seed=seed)


def build_agent(config: dict, obs_shape: tuple[int, int, int], action_dim: int) -> DrQAgent:
    pad = config["pad"] if config["augment"] else 0
    return DrQAgent(obs_shape=obs_shape, action_dim=action_dim, pad=pad, **{key: config[key] for key in AGENT_KEYS})


def full_params(config: dict, variant: str = "", action_dim: int = 1) -> int:
    """Trainable parameters of critic (with its encoder), actor and temperature for ``config`` on image_size x
    image_size frames (cartpole: 1 action), as the ``params`` row counts them."""
    agent = build_agent(config, (3 * config["frame_stack"], config["image_size"], config["image_size"]), action_dim)
    return count_parameters(agent.critic) + count_parameters(agent.actor) + 1


def run(ctx: UnitContext) -> list[Measurement]:
    cfg = ctx.config
    dm: RLDataModule = ctx.datamodule()
    spec = dm.spec
    agent = build_agent(cfg, spec.obs_shape, spec.action_dim)
    loop = EnvLoop(dm, env_steps=cfg["env_steps"], seed_steps=cfg["seed_steps"], eval_every=cfg["eval_every"],
                   eval_episodes=cfg["eval_episodes"], seed=ctx.seed)
    # the loop stops the fit after loop.num_updates updates (see EnvLoop); the dataset is endless
    trainer = make_trainer(ctx, callbacks=[loop], max_epochs=1, limit_val_batches=0, log_name=f"{dm.hparams.name}")
    trainer.fit(agent, datamodule=dm)
    hist = loop.history
    means = [float(np.mean(r)) for r in hist.eval_returns]
    out = [Measurement("return_vs_env_steps", m, step=s) for s, m in zip(hist.env_steps, means)]
    for target in cfg["report_at"]:  # the paper's 100k / 500k columns: the first evaluation at or past the step
        at = next((m for s, m in zip(hist.env_steps, means) if s >= target), None)
        if at is not None:
            out.append(Measurement(f"return_at@{target // 1000}k", at))
    eval_env = dm.make_env(ctx.seed + 1)
    random_returns = evaluate(None, eval_env, cfg["eval_episodes"], rng=np.random.default_rng(ctx.seed))
    eval_env.close()
    sim_steps = hist.agent_steps * dm.action_repeat
    out += [
        Measurement("return", float(np.mean(means[-cfg["avg_last"]:]))),
        Measurement("final_return", means[-1]),
        Measurement("mean_return", float(np.mean(means[1:])) if len(means) > 1 else means[-1]),
        Measurement("return_std_episodes", float(np.std(hist.eval_returns[-1]))),
        Measurement("random_return", float(np.mean(random_returns))),
        Measurement("env_steps", float(loop.step)),
        Measurement("updates", float(hist.updates)),
        Measurement("params", count_parameters(agent.critic) + count_parameters(agent.actor) + 1),
        Measurement("env_steps_per_s", sim_steps / hist.env_s if hist.env_s > 0 else math.nan),
        Measurement("updates_per_s", hist.updates / hist.update_s if hist.update_s > 0 else math.nan),
    ]
    return out
