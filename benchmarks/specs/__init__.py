"""Every benchmark spec, imported here and nowhere else (their decorators register them)."""

from benchmarks.specs import vit  # noqa: F401
