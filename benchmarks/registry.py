"""The benchmark spec and its registry.

A benchmark is one paper paired with the baseline it argues against. Each spec module in
``benchmarks/specs/`` registers one factory with :func:`register_benchmark`; the factory
returns a :class:`Benchmark` that says what to build (variants), on what (datasets), how
big (presets), what to measure (metrics) and how to decide the paper's claim (verdict).
The registry refuses duplicate names and answers unknown names with the known ones.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from benchmarks.unit import UnitContext

Role = Literal["method", "baseline"]
PRESETS = ("smoke", "quick", "full")


class UnknownNameError(ValueError):
    """A name that is not registered; the CLI turns it into exit code 2."""

    def __init__(self, kind: str, given: str, known: list[str] | tuple[str, ...]):
        self.kind, self.given, self.known = kind, given, list(known)
        super().__init__(f"unknown {kind} {given!r}; known: {', '.join(self.known) or '(none)'}")


def lookup(kind: str, table: Mapping[str, Any], name: str) -> Any:
    """``table[name]``, or an :class:`UnknownNameError` listing the known names."""
    if name not in table:
        raise UnknownNameError(kind, name, list(table))
    return table[name]


@dataclass(frozen=True)
class Lazy:
    """A callable named by ``"package.module:attr"``, imported when first called.

    A spec declares its ``run``, extras and dataset factories this way, so that listing
    or validating a spec imports nothing heavier than this module: torch, Lightning and
    the paper's code are imported when a unit runs (or a dataset is built). ``bound``
    keyword arguments are passed on every call (one factory, several dataset names).
    """

    target: str
    bound: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        module, sep, attr = self.target.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"a lazy reference is 'package.module:attr'; got {self.target!r}")

    def resolve(self) -> Callable[..., Any]:
        module, _, attr = self.target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **dict(self.bound), **kwargs)


def lazy(target: str, **bound: Any) -> Lazy:
    """``lazy("benchmarks.units.vit:run")``, ``lazy("benchmarks.units.vit:images", name="cifar10")``."""
    return Lazy(target, tuple(sorted(bound.items())))


@dataclass(frozen=True)
class Metric:
    """One measured quantity.

    ``kind="efficiency"`` marks hardware-dependent numbers (throughput, memory, time),
    which ``compare`` only checks when the hardware matches; ``kind="info"`` (a parameter
    count) is shown and compared but never counts as a regression. ``tolerance`` is the relative
    band ``compare`` uses when there is no spread over seeds. A metric with ``curve=True``
    is reported against ``step`` (the x of the curve, named by ``x_label``) and plotted.
    Measurements may qualify a metric with ``@`` (``top1@data=10%``): the part before
    ``@`` names the Metric.
    """

    name: str
    higher_is_better: bool
    primary: bool = False
    kind: Literal["quality", "efficiency", "info"] = "quality"
    tolerance: float = 0.05
    curve: bool = False
    x_label: str = "step"
    logx: bool = False
    logy: bool = False
    description: str = ""
    plot: bool = True  # False: a curve metric whose points are data for a verdict (per-item scores), not to draw


@dataclass(frozen=True)
class Variant:
    """A way to build the module under test; variants differ only where the paper differs.

    ``config`` overrides the benchmark's resolved config for this variant only.
    """

    name: str
    role: Role
    config: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    # seeds per preset for this variant when --seeds is not given, overriding the benchmark's: a variant that is
    # reported beside the claim but not judged (an ablation) may run fewer seeds than the judged pair
    seeds: Mapping[str, int] = field(default_factory=dict)
    # config for this variant at one preset only (applied after ``config``): what was tuned at that preset's scale,
    # e.g. a learning rate chosen by ``iclrbench tune`` at quick, which must not reach the full preset's model
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Tuning:
    """How a benchmark's settings were chosen, declared before the tuning ran (``iclrbench tune NAME``).

    ``grids`` maps each tuned variant to its grid of config values (the product of the lists is its tries); every
    variant gets the same number of tries (equal effort). Each try runs ``seeds`` seeds and is scored by ``score``, a
    metric measured on a split the verdict does not judge; the best mean over seeds wins, and the spec's defaults
    carry the winners with a pointer to the stored tuning table."""

    score: str
    grids: Mapping[str, Mapping[str, tuple[Any, ...]]]
    seeds: int = 2
    higher_is_better: bool = True

    def points(self, variant: str) -> list[dict[str, Any]]:
        import itertools

        grid = self.grids[variant]
        return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


@dataclass(frozen=True)
class Task:
    """A dataset a preset runs besides (or instead of) the default, with what differs there: the config keys it sets on
    top of the preset's (its own budget), at most how many seeds each variant runs there (None: each variant's own
    count; ``--seeds`` overrides it) and the variants that run on it (None: all; a reported-only variant may be left
    out where its cost buys no judgement; ``--variant`` overrides it)."""

    config: Mapping[str, Any] = field(default_factory=dict)
    seeds: int | None = None
    variants: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Verdict:
    """A claim's decision. ``judgements`` are the declared comparisons behind it
    (``benchmarks.verdict.Judgement``: the pair, n, the effect with its interval), which the
    claims table shows; ``evidence`` says the rest in words."""

    status: Literal["holds", "does not hold", "inconclusive"]
    evidence: str
    judgements: tuple[Any, ...] = ()


@dataclass(frozen=True)
class PaperRef:
    title: str
    arxiv: str
    code: str


PaperScope = Literal["target", "context"]
PAPER_SCOPES = ("target", "context")


@dataclass(frozen=True)
class PaperNumber:
    """A number the paper (or its official code) reports, with where it says so.

    ``dataset`` is the real dataset's name as our loaders call it (``cifar10``), and
    ``metric`` uses our metric names and units (accuracy as a fraction), so that
    ``results/reference/paper.csv`` can be compared with a ``full`` run.

    ``scope`` (keyword-only, no default: every number says which it is):
    ``"target"`` is the paper's number for the method, data and model family that our
    ``full`` preset runs, so a ``full`` run should approach it; ``"context"`` is a number
    from a much larger model, from pre-training we do not do, from another split of the
    data or a loose variant mapping. ``source`` names the table and row; a context
    number's source also says why, after ``context:``. The report shows targets in its
    "paper" column and context as a note; ``compare`` judges targets only.
    """

    variant: str
    dataset: str
    metric: str
    value: float
    source: str
    scope: PaperScope = field(kw_only=True)

    def __post_init__(self) -> None:
        if self.scope not in PAPER_SCOPES:
            raise ValueError(f"paper number {self.variant}/{self.metric}: scope must be 'target' or 'context'; got {self.scope!r}")
        if self.scope == "context" and "context:" not in self.source:
            raise ValueError(f"paper number {self.variant}/{self.metric}: a context number's source says why after 'context:'; got {self.source!r}")


@dataclass(frozen=True)
class FastDev:
    """What a fast dev run (``--fast-dev-run``) changes in a preset: ``config`` sets the budget keys (steps, rounds,
    samples, sweep points, evaluation sizes) to one or two iterations; it never names an architecture key, so the
    model that runs is the preset's. ``batch_keys`` are the config keys that are per-device batch sizes; on a CPU
    (no GPU visible) they are capped at ``cpu_batch`` (a batch at paper size may not fit 2 cores and a few GB), and
    the report extrapolates the step's time and memory to the preset's batch, labelled as such."""

    config: Mapping[str, Any] = field(default_factory=dict)
    batch_keys: tuple[str, ...] = ()
    cpu_batch: int | None = None


@dataclass(frozen=True)
class PaperParams:
    """The parameter count of the paper's architecture for ``variant`` in the ``full`` preset, with its source (the
    paper's table or the official config). ``tolerance`` is the relative difference a test accepts between our model
    and ``params``; ``note`` says why they differ (a vocabulary size, a head the paper does not count)."""

    variant: str
    params: int | None  # None: no published count (``source`` says so); the architecture is still named
    source: str
    tolerance: float = 0.02
    note: str = ""


@dataclass
class Benchmark:
    """One paper's benchmark: see DESIGN.md, "A benchmark".

    ``run(ctx)`` trains and evaluates one variant with one seed (in its own subprocess)
    and returns :class:`benchmarks.unit.Measurement` objects. ``extras`` are further
    measurements (a sweep, an overhead ratio) run once per run as units of their own.
    ``defaults`` is the full config; ``presets`` override only what differs.
    ``datasets`` maps a name to a DataModule factory ``(config, data_dir, seed)``;
    the first is the embedded offline default. ``verdict(summary)`` decides the claim
    from the run's rows of this benchmark (ok rows, one per measurement and seed);
    ``verdict_rule`` states that rule in words for the report. ``paper_numbers`` feed
    ``results/reference/paper.csv`` and the report's "paper" column.
    """

    name: str
    paper: PaperRef
    claim: str
    variants: list[Variant]
    datasets: dict[str, Callable[..., Any]]
    defaults: dict[str, Any]
    presets: dict[str, dict[str, Any]]
    metrics: list[Metric]
    run: Callable[["UnitContext"], list[Any]]
    verdict: Callable[["pd.DataFrame"], Verdict]
    extras: dict[str, Callable[["UnitContext"], list[Any]]] = field(default_factory=dict)
    verdict_rule: str = ""
    paper_numbers: list[PaperNumber] = field(default_factory=list)
    # why a benchmark has no paper numbers (the report prints it; a test requires it when the list is empty)
    paper_numbers_note: str = ""
    # figures and tables drawn from the whole run's rows when the report is written (one process, after every
    # unit): ``report_artifacts(rows: DataFrame of this benchmark's ok rows, folder: Path)`` writes *.png / *.md there
    report_artifacts: Callable[..., Any] | None = None
    timeout_s: dict[str, float] = field(default_factory=lambda: {"smoke": 300, "quick": 1200, "full": 86400})
    # seeds per preset when --seeds is not given (presets not named: benchmarks.plan.DEFAULT_SEEDS); the spec says how
    # the number was sized (a power estimate from a stored run's spread, within the quick budget)
    seeds: dict[str, int] = field(default_factory=dict)
    # extras (or variants) whose measurements are timings: each runs with no other unit beside it (``--jobs``)
    alone: tuple[str, ...] = ()
    # the datasets a preset runs and judges when --dataset is not given, each a :class:`Task` (its own budget, seeds,
    # variants); the verdict gives a line per task. Presets not named run the default dataset alone; extras run on the
    # first task.
    tasks: dict[str, dict[str, Task]] = field(default_factory=dict)
    # how the settings of the tuned variants were chosen (``iclrbench tune``), or None
    tuning: Tuning | None = None
    # what --fast-dev-run changes (budgets to one or two iterations, a CPU batch cap); see FastDev
    fast_dev: FastDev = field(default_factory=FastDev)
    # the full preset's architecture: its name and, per variant, the parameter count with its source
    paper_architecture: str = ""
    paper_params: list[PaperParams] = field(default_factory=list)
    # ``param_count(config, variant) -> int``: builds the variant's model for a config (on torch's meta device where
    # it is large) and counts its parameters, without data; the test checks it against ``paper_params``
    param_count: Callable[[dict[str, Any], str], int] | None = None
    # config keys that name a download other than a dataset (a pre-trained checkpoint): with --stand-in-data, a value
    # that is not available offline is replaced by the stand-in of that name (datamodules.standin)
    stand_in_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate variant names {names}")
        if not any(v.role == "baseline" for v in self.variants):
            raise ValueError(f"{self.name}: needs at least one baseline variant")
        for preset, over in self.presets.items():
            if preset not in PRESETS:
                raise ValueError(f"{self.name}: unknown preset {preset!r}; expected {PRESETS}")
            unknown = sorted(set(over) - set(self.defaults))
            if unknown:
                raise ValueError(f"{self.name}: preset {preset!r} sets unknown keys {unknown}")
        for v in self.variants:
            unknown = sorted(set(v.config).union(*map(set, v.presets.values())) - set(self.defaults))
            if unknown:
                raise ValueError(f"{self.name}: variant {v.name!r} sets unknown keys {unknown}")
            if set(v.presets) - set(PRESETS):
                raise ValueError(f"{self.name}: variant {v.name!r} sets config for unknown presets "
                                 f"{sorted(set(v.presets) - set(PRESETS))}; expected {PRESETS}")
        if not self.datasets:
            raise ValueError(f"{self.name}: needs at least one dataset")
        unknown_alone = sorted(set(self.alone) - set(names) - set(self.extras))
        if unknown_alone:
            raise ValueError(f"{self.name}: alone names {unknown_alone}, which are neither variants nor extras")
        for owner, seeds in [(self.name, self.seeds), *((f"{self.name}/{v.name}", v.seeds) for v in self.variants)]:
            for preset, n in seeds.items():
                if preset not in PRESETS or not isinstance(n, int) or n < 1:
                    raise ValueError(f"{owner}: seeds must map a preset {PRESETS} to a count >= 1; got {preset!r}: {n!r}")
        for preset, tasks in self.tasks.items():
            if preset not in PRESETS or not tasks or set(tasks) - set(self.datasets):
                raise ValueError(f"{self.name}: tasks must map a preset {PRESETS} to datasets of "
                                 f"{', '.join(self.datasets)}; got {preset!r}: {list(tasks)!r}")
            for task, t in tasks.items():
                unknown = sorted(set(t.config) - set(self.defaults))
                if unknown:
                    raise ValueError(f"{self.name}: task {task!r} of preset {preset!r} sets unknown keys {unknown}")
                if set(t.variants or ()) - set(names) or (t.seeds is not None and t.seeds < 1):
                    raise ValueError(f"{self.name}: task {task!r} of preset {preset!r} needs variants among {names} "
                                     f"and seeds >= 1; got {t.variants!r}, {t.seeds!r}")
        if self.tuning is not None:
            t = self.tuning
            unknown = sorted({k for g in t.grids.values() for k in g} - set(self.defaults)) + sorted(set(t.grids) - set(names))
            tries = {v: len(t.points(v)) for v in t.grids}
            if unknown or len(set(tries.values())) > 1 or self.metric(t.score) is None or t.seeds < 1:
                raise ValueError(f"{self.name}: tuning needs grids over known variants and config keys (unknown: "
                                 f"{unknown}), the same number of tries for every variant (got {tries}), a declared "
                                 f"score metric (got {t.score!r}) and seeds >= 1")
        unknown = sorted(set(self.fast_dev.config) - set(self.defaults)) + sorted(set(self.fast_dev.batch_keys) - set(self.defaults))
        if unknown:
            raise ValueError(f"{self.name}: fast_dev names unknown config keys {unknown}")
        if any(p.variant not in names for p in self.paper_params):
            raise ValueError(f"{self.name}: paper_params name variants outside {names}")
        for p in self.paper_numbers:
            if p.variant not in names or self.metric(p.metric) is None:
                raise ValueError(f"{self.name}: paper number for {p.variant}/{p.metric} names an undeclared variant or metric")
            if p.scope == "target" and p.dataset not in self.datasets:
                raise ValueError(f"{self.name}: paper number {p.variant}/{p.metric} on {p.dataset!r} is a target, but {p.dataset!r} "
                                 f"is not one of its datasets ({', '.join(self.datasets)}); mark it scope='context'")

    # --- look-ups -------------------------------------------------------------------
    def variant(self, name: str) -> Variant:
        return lookup(f"variant of {self.name}", {v.name: v for v in self.variants}, name)

    def dataset(self, name: str) -> Callable[..., Any]:
        return lookup(f"dataset of {self.name}", self.datasets, name)

    def metric(self, name: str) -> Metric | None:
        """The Metric a (possibly ``@``-qualified) measurement name refers to."""
        base = name.split("@", 1)[0]
        return next((m for m in self.metrics if m.name == base), None)

    @property
    def default_dataset(self) -> str:
        return next(iter(self.datasets))

    def tasks_for(self, preset: str, dataset: str | None = None) -> tuple[str, ...]:
        """The datasets a run of ``preset`` covers: ``dataset`` when given, else the preset's tasks, else the default."""
        return (dataset,) if dataset is not None else tuple(self.tasks.get(preset, {self.default_dataset: Task()}))

    def task(self, preset: str, dataset: str | None) -> Task:
        """What the preset sets for one of its tasks (nothing for a dataset it does not name)."""
        return self.tasks.get(preset, {}).get(dataset, Task()) if dataset is not None else Task()

    @property
    def primary_metric(self) -> Metric:
        return next((m for m in self.metrics if m.primary), self.metrics[0])

    def baseline_name(self) -> str:
        return next(v.name for v in self.variants if v.role == "baseline")

    def config(self, preset: str, variant: str | None = None, overrides: Mapping[str, Any] | None = None,
               task: str | None = None) -> dict[str, Any]:
        """defaults <- preset <- the preset's task (``tasks``) <- variant <- the variant's own config for this preset
        <- user overrides; unknown keys are refused."""
        lookup(f"preset of {self.name}", {p: p for p in PRESETS}, preset)
        cfg = copy.deepcopy(self.defaults)
        cfg.update(copy.deepcopy(self.presets.get(preset, {})))
        cfg.update(copy.deepcopy(dict(self.task(preset, task).config)))
        if variant is not None:
            v = self.variant(variant)
            cfg.update(copy.deepcopy(dict(v.config)))
            cfg.update(copy.deepcopy(dict(v.presets.get(preset, {}))))
        for key, value in (overrides or {}).items():
            lookup(f"config key of {self.name}", self.defaults, key)
            cfg[key] = value
        return cfg


_FACTORIES: dict[str, Callable[[], Benchmark]] = {}
_BUILT: dict[str, Benchmark] = {}


def register_benchmark(factory: Callable[[], Benchmark]) -> Callable[[], Benchmark]:
    """Register a zero-argument factory under its function name; duplicates are refused."""
    name = factory.__name__
    if name in _FACTORIES:
        raise ValueError(f"benchmark {name!r} is registered twice")
    _FACTORIES[name] = factory
    return factory


PLUGINS_ENV = "ICLRBENCH_PLUGINS"


def _load_specs() -> None:
    """Import every spec module (in one place) and any user plugins: a comma-separated
    list of importable modules in ``$ICLRBENCH_PLUGINS`` that register more benchmarks."""
    import importlib
    import os

    import benchmarks.specs  # noqa: F401

    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"cannot import plugin module {module!r} named in ${PLUGINS_ENV}: {exc}") from exc


def list_benchmarks() -> list[str]:
    _load_specs()
    return sorted(_FACTORIES)


def get_benchmark(name: str) -> Benchmark:
    _load_specs()
    if name not in _BUILT:
        bench = lookup("benchmark", _FACTORIES, name)()
        if bench.name != name:
            raise ValueError(f"factory {name!r} builds a benchmark named {bench.name!r}")
        _BUILT[name] = bench
    return _BUILT[name]
