"""The exceptions the CLI turns into exit codes, in a module that imports nothing heavy
(so that ``iclrbench list`` and bad-name errors answer without importing pandas or torch)."""

from __future__ import annotations


class BadResultsError(ValueError):
    """A results CSV that is missing, empty, malformed or lacks schema columns (exit 2)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run; completed units are kept (exit 130)."""


class RunFolderLocked(Exception):
    """Another runner holds the run folder (exit 2); ``--wait`` waits for it instead."""
