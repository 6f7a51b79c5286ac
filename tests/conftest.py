"""Fixtures shared by the harness tests."""

from __future__ import annotations

import os

import pytest

from tests.support import ROOT


@pytest.fixture()
def toy_env(monkeypatch):
    """The environment of a subprocess run that registers the misbehaving ``toy`` benchmark."""
    monkeypatch.setenv("ICLRBENCH_PLUGINS", "tests.toy_spec")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("ICLRBENCH_THREADS", raising=False)
    return {**os.environ}
