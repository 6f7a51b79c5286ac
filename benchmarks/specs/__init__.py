"""Every benchmark spec, imported here and nowhere else (their decorators register them)."""

from benchmarks.specs import vit  # noqa: F401
from benchmarks.specs import pmi_masking  # noqa: F401
from benchmarks.specs import score_sde  # noqa: F401
from benchmarks.specs import performer  # noqa: F401
from benchmarks.specs import fedopt  # noqa: F401
from benchmarks.specs import flyvec  # noqa: F401
from benchmarks.specs import rims  # noqa: F401
from benchmarks.specs import ance  # noqa: F401
from benchmarks.specs import drq  # noqa: F401
from benchmarks.specs import genre  # noqa: F401
