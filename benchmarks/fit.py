"""``iclrbench fit``: train one LightningModule with LightningCLI and a YAML config.

    iclrbench fit --model lit_modules.vit.ImageClassifier --data datamodules.images.ImageDataModule \
        --model.arch vit --trainer.max_steps 200
    iclrbench fit --config my_run.yaml

Any LightningModule / LightningDataModule importable by class path works
(``subclass_mode``); ``iclrbench fit --print_config`` writes a starting YAML.
"""

from __future__ import annotations

import warnings

import lightning as L
from lightning.pytorch.cli import LightningCLI


def main(argv: list[str]) -> None:
    from benchmarks.unit import KNOWN_WARNINGS

    for pattern in KNOWN_WARNINGS:  # the library deprecations the harness filters; Lightning's info lines stay
        warnings.filterwarnings("ignore", message=pattern)
    from benchmarks.train import _RICH_AVAILABLE, StepBudgetProgressBar

    # the units' progress bar ("Epoch 3", not "Epoch 3/-2" under a max_steps budget); a user's own bar replaces it
    defaults = {"callbacks": [StepBudgetProgressBar()]} if _RICH_AVAILABLE and not any("progress" in a.lower() for a in argv) else {}
    LightningCLI(
        L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        args=["fit", *argv], save_config_kwargs={"overwrite": True}, trainer_defaults=defaults,
    )
