"""report.md and PNG plots from a run's summary.csv.

The report opens with a claims table (each paper's claim, the verdict at this run's scale
by the rule its spec states, and the numbers behind it), then one section per benchmark:
a variant x metric table (mean ± std over seeds, delta vs the baseline, the paper's number
with its source), the curves as plots, and any images the benchmark produced.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.registry import Benchmark, UnknownNameError, Verdict, get_benchmark  # noqa: E402
from benchmarks.results import atomic_write_text, is_fast_dev, read_results  # noqa: E402
from benchmarks.verdict import primary_vs_baseline  # noqa: E402,F401  (re-exported for specs)

KIND_ORDER = {"quality": 0, "efficiency": 1, "info": 2}


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    ax = abs(x)
    if float(x).is_integer() and 100 <= ax < 1e12:
        return f"{int(x):,}"
    if ax != 0 and (ax >= 1e5 or ax < 1e-3):
        return f"{x:.3g}"
    return f"{x:.4g}"


def _bench(name: str) -> Benchmark | None:
    try:
        return get_benchmark(name)
    except UnknownNameError:
        return None


def variant_table(bench: Benchmark | None, df: pd.DataFrame) -> str:
    """Markdown: metric, variant, ours (mean ± std, n), Δ vs baseline, and the paper's number where
    one is beside ours (:func:`beside_ours`; no paper column otherwise)."""
    flat = df[df["step"].isna()]
    if flat.empty:
        return "_no scalar metrics_\n"
    baseline = bench.baseline_name() if bench else None
    stats = flat.groupby(["metric", "variant"], sort=False)["value"].agg(["mean", "std", "count"])
    paper = {}  # targets measured like this run only: the others are notes under the table (paper_context_note)
    for p in beside_ours(bench, df):
        paper.setdefault((p.metric, p.variant), []).append(f"{fmt(p.value)} ({p.dataset}; {p.source})")
    roles = df.drop_duplicates("variant").set_index("variant")["role"].to_dict()

    def order(metric: str) -> tuple:
        m = bench.metric(metric) if bench else None
        return (KIND_ORDER.get(m.kind, 3) if m else 3, not (m and m.primary), metric)

    # the paper column only where a paper number is beside ours (a full run on the paper's data)
    lines = [f"| metric | variant | role | ours: mean ± std (n) | Δ vs {baseline or 'baseline'} |{' paper |' if paper else ''}",
             "|---|---|---|---|---|" + ("---|" if paper else "")]
    for metric in sorted(stats.index.get_level_values(0).unique(), key=order):
        sub = stats.loc[metric]
        base_mean = sub.loc[baseline, "mean"] if baseline in sub.index else math.nan
        for variant, s in sub.iterrows():
            std = "" if s["count"] < 2 else f" ± {fmt(s['std'])}"
            delta = "—" if variant == baseline or roles.get(variant) == "extra" or math.isnan(base_mean) else f"{s['mean'] - base_mean:+.4g}"
            m = bench.metric(metric) if bench else None
            name = f"**{metric}**" if m and m.primary else metric
            cells = [name, variant, roles.get(variant, ""), f"{fmt(s['mean'])}{std} (n={int(s['count'])})", delta]
            if paper:
                cells.append("<br>".join(paper.get((metric, variant), [])) or "—")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def beside_ours(bench: Benchmark | None, df: pd.DataFrame | None) -> list:
    """The paper's target numbers that go in the table's paper column: only for a ``full`` run
    (the model family the paper measured) on the number's own dataset. A quick run on the
    embedded data gets none: the paper did not measure that model or data."""
    if bench is None or df is None or df.empty:
        return []
    presets, datasets = set(df["preset"].astype(str)), set(df["dataset"].astype(str))
    return [p for p in bench.paper_numbers if p.scope == "target" and presets == {"full"} and p.dataset in datasets]


def paper_context_note(bench: Benchmark | None, df: pd.DataFrame | None = None) -> list[str]:
    """Markdown lines under the table: the paper's target numbers that this run does not measure
    (another preset or dataset: see :func:`beside_ours`), then its context numbers (not targets
    for any of our runs). ``df``: the run's rows of the benchmark (None: no target is beside ours)."""
    if bench and not bench.paper_numbers and bench.paper_numbers_note:
        return [f"_No paper numbers: {bench.paper_numbers_note}_", ""]
    if bench is None:
        return []
    lines: list[str] = []
    placed = beside_ours(bench, df)
    elsewhere = [p for p in bench.paper_numbers if p.scope == "target" and p not in placed]
    if elsewhere:
        ran = "" if df is None or df.empty else (f" (this run: {'/'.join(sorted(set(df['preset'].astype(str))))} on "
                                                 f"{', '.join(sorted(set(df['dataset'].astype(str))))})")
        lines += [f"_The paper's numbers for what our `full` preset runs, on the paper's data{ran}; another model or "
                  "data than this run's, so not beside ours:_", ""]
        lines += [f"- {p.variant} {p.metric} = {fmt(p.value)} ({p.dataset}; {p.source})" for p in elsewhere]
        lines.append("")
    context = [p for p in bench.paper_numbers if p.scope == "context"]
    if context:
        lines += ["_Paper numbers for context (another model size, pre-training, data split or variant mapping than "
                  "our `full` preset; not targets, not in the table):_", ""]
        lines += [f"- {p.variant} {p.metric} = {fmt(p.value)} ({p.dataset}; {p.source})" for p in context]
        lines.append("")
    return lines


def _draw_curves(ax, sub: pd.DataFrame, m, title: str) -> None:
    """Mean over seeds per variant against ``step``, ± std shaded, on one axes."""
    for variant, vsub in sub.groupby("variant", sort=True):
        g = vsub.groupby("step")["value"].agg(["mean", "std", "count"]).sort_index()
        x = g.index.to_numpy(dtype=float)
        line = ax.plot(x, g["mean"], marker="o", ms=3, label=f"{variant} (n={int(g['count'].max())})")[0]
        if (g["count"] > 1).any():
            ax.fill_between(x, g["mean"] - g["std"].fillna(0), g["mean"] + g["std"].fillna(0), alpha=0.2, color=line.get_color())
    if m and m.logx:
        ax.set_xscale("log")
    xs = sorted(sub["step"].astype(float).unique())
    if len(xs) <= 8:  # few points: label exactly those, in plain numbers
        ax.set_xticks(xs, [fmt(x) for x in xs])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if m and m.logy:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def plot_curves(bench: Benchmark | None, df: pd.DataFrame, plots_dir: Path, prefix: str = "") -> list[Path]:
    """One PNG per curve metric: mean over seeds per variant, ± std shaded. Qualified curves of one
    metric (``unit_activity@unit=0``, ``@unit=1`` ...) share one figure, a panel per qualifier.
    ``prefix`` (a task's name, when a run covers several) goes into the titles and file names."""
    curves = df[df["step"].notna()]
    paths = []
    for base, sub in curves.groupby(curves["metric"].str.split("@", n=1).str[0], sort=True):
        m = bench.metric(base) if bench else None
        if m is not None and not m.plot:
            continue
        metrics = sorted(sub["metric"].unique())
        name = sub["benchmark"].iloc[0] + (f" ({prefix})" if prefix else "")
        ylabel = base + (" (higher is better)" if m and m.higher_is_better else " (lower is better)" if m else "")
        heading = f"{name}: {base}" + (f"\n{m.description}" if m and m.description else "")
        if len(metrics) == 1:
            fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
            _draw_curves(ax, sub, m, f"{name}: {metrics[0]}" + (f"\n{m.description}" if m and m.description else ""))
            ax.set_xlabel(m.x_label if m else "step")
            ax.set_ylabel(metrics[0] + ylabel[len(base):])
            ax.legend(fontsize=8)
            fig.tight_layout()
            stem = metrics[0]
        else:
            ncols = min(3, len(metrics))
            nrows = -(-len(metrics) // ncols)
            fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3 * nrows + 0.6), dpi=110, squeeze=False,
                                     sharey=True, layout="constrained")
            for ax, metric in zip(axes.flat, metrics):
                _draw_curves(ax, sub[sub["metric"] == metric], m, metric.partition("@")[2] or metric)
                ax.set_xlabel(m.x_label if m else "step", fontsize=8)
            for ax in axes.flat[len(metrics):]:
                ax.set_visible(False)
            for ax in axes[:, 0]:
                ax.set_ylabel(ylabel, fontsize=8)
            axes.flat[0].legend(fontsize=7)
            fig.suptitle(heading, fontsize=9)
            stem = base
        file = f"{sub['benchmark'].iloc[0]}_{prefix + '_' if prefix else ''}{stem}"
        path = plots_dir / f"{file.replace('@', '_at_').replace('/', '_')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def decide(bench: Benchmark | None, df: pd.DataFrame) -> Verdict:
    if bench is None:
        return Verdict("inconclusive", "benchmark not in this installation's registry")
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return Verdict("inconclusive", "no successful units")
    try:
        return bench.verdict(ok.copy())
    except Exception as exc:  # a verdict rule must not sink the report
        return Verdict("inconclusive", f"verdict rule failed: {type(exc).__name__}: {exc}")


def claim_cells(verdict: Verdict) -> tuple[str, str, str]:
    """The claims table's pair, n and effect cells: one line per declared comparison."""
    if not verdict.judgements:
        return "—", "—", "—"
    pairs, ns, effects = [], [], []
    for j in verdict.judgements:
        c, e = j.comparison, j.estimate
        pairs.append(f"{c.name} ({c.kind}, {c.threshold_text}): {j.status}")
        ns.append(str(e.n))
        rel = " rel." if c.relative else ""
        effects.append(f"{e.text()}{rel} ({e.confidence:.0%})")
    return "<br>".join(pairs), "<br>".join(ns), "<br>".join(effects)


def rest_of_evidence(verdict: Verdict) -> str:
    """The evidence beyond the judgements' own lines (which the table's other cells show), in the claims table;
    the benchmark's section below prints it whole."""
    head = "; ".join(j.text() for j in verdict.judgements)
    if head and verdict.evidence.startswith(head):
        notes = [f"{j.comparison.name}: {j.note}" for j in verdict.judgements if j.note]
        needed = [f"{j.comparison.name}: about {j.seeds_needed} seeds would decide it" for j in verdict.judgements
                  if j.seeds_needed is not None]
        return "; ".join([*notes, *needed, verdict.evidence[len(head):].lstrip("; ")]).strip("; ") or "—"
    return verdict.evidence


def _run_info(run_dir: Path, df: pd.DataFrame) -> list[str]:
    info = {}
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        pass
    first = df.iloc[0]
    opts = info.get("options", {})
    ex = info.get("execution", {})
    n_ok = df.loc[df["status"] == "ok", ["benchmark", "variant", "seed"]].drop_duplicates().shape[0]
    return [
        f"- preset **{first['preset']}**, seeds {sorted(df['seed'].dropna().astype(int).unique().tolist())}, "
        f"dataset(s) {', '.join(sorted(df['dataset'].astype(str).unique()))}",
        f"- hardware: {', '.join(sorted(df['device_name'].dropna().astype(str).unique())) or '?'}; accelerator "
        f"{first['accelerator']}, devices {first['devices']}, strategy {first['strategy']}, precision {first['precision']}",
        f"- torch {first['torch']}, lightning {first['lightning']}, git {str(first['git_sha'])[:10]}"
        f"{' (uncommitted changes)' if str(first['git_dirty']).lower() == 'true' else ''}",
        *([f"- run {ex.get('jobs')} unit(s) at a time, {ex.get('threads_per_unit') or 'torch default'} torch thread(s) each, "
           f"on {ex.get('cpu_count')} CPU cores and {ex.get('gpus')} GPU(s) ({ex.get('launcher')})"
           + (f"; timing units ran alone: {', '.join(ex['alone'])}" if ex.get("alone") else "")] if ex else []),
        f"- {n_ok} (benchmark, variant, seed) groups ok, {int((df['status'] != 'ok').sum())} units failed"
        + (f"; command options: `{json.dumps({k: v for k, v in opts.items() if v not in (None, [], {}, False)})}`" if opts else ""),
    ]


def training_logs(run_dir: Path, benchmark: str) -> list[str]:
    """Links to each unit's training curves (CSVLogger's metrics.csv; TensorBoard files beside them)."""
    logs = run_dir / "logs"
    csvs = sorted(logs.glob(f"{benchmark}__*/*/metrics.csv")) if logs.is_dir() else []
    if not csvs:
        return []
    lines = ["<details><summary>training logs (loss and metrics per step)</summary>", ""]
    for unit_dir in sorted({c.parent.parent for c in csvs}):
        links = [f"[{c.parent.name}]({c.relative_to(run_dir).as_posix()})" for c in csvs if c.parent.parent == unit_dir]
        lines.append(f"- `{unit_dir.name}`: {', '.join(links)}")
    if any(logs.glob(f"{benchmark}__*/*/events.out.tfevents.*")):
        lines += ["", f"TensorBoard: `tensorboard --logdir {logs.as_posix()}`"]
    return lines + ["", "</details>", ""]


def failed_units(df: pd.DataFrame) -> list[str]:
    """The report's "Failed units" table (no lines when every unit is ok)."""
    errors = df[df["status"] != "ok"]
    if errors.empty:
        return []
    out = ["## Failed units", "", "| benchmark | variant | seed | error |", "|---|---|---|---|"]
    out += [f"| {r.benchmark} | {r.variant} | {r.seed} | {str(r.error).replace('|', '/')[:500]} |" for r in errors.itertuples()]
    return out + [""]


def write_report(run_dir: str | Path, df: pd.DataFrame | None = None) -> Path:
    """Write ``report.md`` and ``plots/*.png`` for a run directory; returns the report path."""
    run_dir = Path(run_dir)
    if df is None:
        df = read_results(run_dir / "summary.csv", "run summary")
    if is_fast_dev(df):  # not results: a table of model sizes and step costs per unit
        from benchmarks.devreport import write_dev_report

        return write_dev_report(run_dir, df)
    plots_dir = run_dir / "plots"
    out = [f"# iclrbench report: {run_dir.name}", "", *_run_info(run_dir, df), ""]
    names = list(dict.fromkeys(df["benchmark"].astype(str)))
    out += ["## Claims at this run's scale", "",
            "Each claim is decided on comparisons its spec declared before the run: the compared pair, n (paired seeds, "
            "or runs), the effect (positive favours the method) with its interval (95 % for \"better than\"; 90 %, "
            "two one-sided tests, for \"as good as\" / \"not worse than\", against the stated margin), and the "
            "judgement; the evidence column gives the rest. See the README's \"How a verdict is decided\".", "",
            "| benchmark | the paper's claim | compared pair | n | effect [interval] | verdict | evidence |",
            "|---|---|---|---|---|---|---|"]
    verdicts = {}
    for name in names:
        bench = _bench(name)
        verdicts[name] = decide(bench, df[df["benchmark"] == name])
        claim = bench.claim if bench else "?"
        pairs, ns, effects = claim_cells(verdicts[name])
        out.append(f"| {name} | {claim} | {pairs} | {ns} | {effects} | **{verdicts[name].status}** | "
                   f"{rest_of_evidence(verdicts[name]).replace('|', '/')} |")
    out.append("")
    out += failed_units(df)
    for name in names:
        bench = _bench(name)
        sub = df[(df["benchmark"] == name) & (df["status"] == "ok")]
        title = f"{bench.paper.title} (arXiv {bench.paper.arxiv}, code: {bench.paper.code})" if bench else name
        out += [f"## {name}: {title}", ""]
        if bench:
            out += [f"**Claim.** {bench.claim}", "", f"**Verdict: {verdicts[name].status}.** {verdicts[name].evidence}",
                    "", f"_Rule:_ {bench.verdict_rule or 'the spec’s verdict function'}", ""]
            described = [m for m in bench.metrics if m.description]
            if described:
                out += ["<details><summary>metrics</summary>", ""]
                out += [f"- `{m.name}` ({m.kind}, {'higher' if m.higher_is_better else 'lower'} is better): {m.description}" for m in described]
                out += ["", "</details>", ""]
        datasets = list(dict.fromkeys(sub["dataset"].astype(str)))
        for dataset in datasets:  # a preset that runs several tasks: a table and plots per task
            part = sub[sub["dataset"].astype(str) == dataset] if len(datasets) > 1 else sub
            if len(datasets) > 1:
                out += [f"### {name} on {dataset}", ""]
            out += [variant_table(bench, part), ""]
            if beside_ours(bench, part):
                out += ["_The paper column holds the paper's own numbers for the model family our `full` preset runs, "
                        "on the paper's dataset; ours are from this run._", ""]
            for path in plot_curves(bench, part, plots_dir, prefix=dataset if len(datasets) > 1 else ""):
                out += [f"![{path.stem}]({path.relative_to(run_dir).as_posix()})", ""]
        out += paper_context_note(bench, sub)  # once per benchmark, whatever its tasks
        art = run_dir / "artifacts" / name
        if bench and bench.report_artifacts is not None and not sub.empty:
            try:
                art.mkdir(parents=True, exist_ok=True)
                bench.report_artifacts(sub, art)
            except Exception as exc:  # a figure must never cost the report
                out += [f"_{name}'s report artifacts failed: {type(exc).__name__}: {exc}_", ""]
        for path in sorted(art.glob("*.png")) if art.is_dir() else []:
            out += [f"![{path.stem}]({path.relative_to(run_dir).as_posix()})", ""]
        for path in sorted(art.glob("*.md")) if art.is_dir() else []:
            out += [path.read_text(), ""]
        out += training_logs(run_dir, name)
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(out))
    return report
