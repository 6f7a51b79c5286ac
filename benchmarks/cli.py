"""The ``iclrbench`` command: list, run, compare, report, fit, paper-csv.

Exit codes: 0 success; 1 ``compare`` found a quality regression; 2 bad input (unknown
name, bad option, malformed or missing CSV, a run folder another runner holds); 3 a real dataset is missing and cannot be
downloaded; 4 the run finished but some units failed (their rows say why); 130 interrupted
(completed units are kept; rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_NO_DATA, EXIT_UNITS_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


def _parse_set(items: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CliError(f"--set expects KEY=VALUE (or BENCHMARK.KEY=VALUE); got {item!r}")
        value = yaml.safe_load(raw)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; a user means the number
            try:
                value = float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity") else value
            except ValueError:
                pass
        out[key.strip()] = value
    return out


def _devices(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value


def build_parser() -> argparse.ArgumentParser:
    from benchmarks.plan import LAUNCHERS, LOGGERS

    p = argparse.ArgumentParser(prog="iclrbench", description="ICLR 2021 papers vs their baselines, side by side.")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="benchmarks, variants, datasets, presets and claims")
    ls.add_argument("names", nargs="*", metavar="NAMES", help="only these benchmarks (default: all)")

    r = sub.add_parser("run", help="run benchmarks (all when no NAMES)")
    r.add_argument("names", nargs="*", metavar="NAMES")
    r.add_argument("--preset", default="quick", help="smoke | quick | full (default quick)")
    r.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the benchmark's own count for the preset, which `iclrbench list` "
                        "shows and its spec sizes by a power estimate; else smoke 1, quick 3, full 3)")
    r.add_argument("--dataset", default=None, help="dataset name (default: each benchmark's embedded one)")
    r.add_argument("--data-dir", default=None, help="where real datasets live (or are downloaded to)")
    r.add_argument("--variant", action="append", dest="variants", help="run only this variant (repeatable)")
    r.add_argument("--no-extras", action="store_true", help="skip the extra measurements (sweeps, overhead)")
    r.add_argument("--accelerator", default="auto")
    r.add_argument("--devices", type=_devices, default=1)
    r.add_argument("--strategy", default="auto", help="auto | ddp | fsdp | ... (Lightning strategies)")
    r.add_argument("--num-nodes", type=int, default=1)
    r.add_argument("--precision", default="32-true")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (BENCH.KEY scopes it)")
    r.add_argument("--fid-weights", default=None, metavar="PATH",
                   help="torch-fidelity's Inception weights file (score_sde: real FID/IS instead of the offline classifier)")
    r.add_argument("--fast-dev-run", action="store_true",
                   help="prove the preset before a GPU job: every unit runs one or two batches of each stage at the "
                        "preset's model size, one seed, and records its parameter count, one step's time and peak "
                        "memory; the rows are marked (the report says 'fast dev run', compare refuses them)")
    r.add_argument("--fast-dev-batch", type=int, default=None, metavar="N",
                   help="with --fast-dev-run: cap the batch sizes at N (default: the preset's batch on a GPU, the "
                        "spec's CPU cap without one); the report extrapolates to the preset's batch")
    r.add_argument("--stand-in-data", action="store_true",
                   help="a real dataset that is not on disk is replaced by a generated stand-in in its own format "
                        "(read by the real loader; the dataset column says '(stand-in)'); without it a missing "
                        "dataset is exit 3 before any unit")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads per unit (default: torch's)")
    r.add_argument("--timeout", type=float, default=None, help="seconds per unit (default: the spec's per preset)")
    r.add_argument("--out", default="results/runs")
    r.add_argument("--fresh", action="store_true", help="start a new run instead of resuming")
    r.add_argument("--wait", action="store_true",
                   help="if another runner holds this run folder, wait for it to finish, then resume (default: refuse)")
    r.add_argument("--quiet", action="store_true", help="hide the units' own output (progress bars)")
    r.add_argument("--logger", default="auto", choices=LOGGERS,
                   help="training curves under <run>/logs/: auto = CSV, plus TensorBoard when installed")
    r.add_argument("--cold-start", action="store_true",
                   help="start every unit in a fresh interpreter instead of forking it from a warm worker")
    r.add_argument("--jobs", type=int, default=0,
                   help="units at a time, each its own process: one GPU each when there are GPUs, else a share of "
                        "the cores (default on a CPU: one per core, at most 8, each with cores/jobs threads; with GPUs "
                        "or --devices > 1: 1; all at once with slurm / submitit-local)")
    r.add_argument("--launcher", default="process", choices=LAUNCHERS,
                   help="process (this machine) | slurm | submitit-local (submitit)")
    s = r.add_argument_group("SLURM (--launcher slurm, through submitit)")
    s.add_argument("--slurm-partition", default=None)
    s.add_argument("--slurm-gpus-per-unit", type=int, default=None, help="default: --devices with --accelerator gpu, else none")
    s.add_argument("--slurm-cpus-per-unit", type=int, default=None, help="default: --threads when given")
    s.add_argument("--slurm-mem-gb", type=int, default=None)
    s.add_argument("--slurm-time-min", type=int, default=None, help="default: the unit's time-out per preset, + 1 minute")
    s.add_argument("--slurm-setup", action="append", default=[], metavar="CMD",
                   help="shell line run before each unit (e.g. 'source .venv/bin/activate'); repeatable")
    s.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --slurm-extra account=myproj --slurm-extra qos=high")

    c = sub.add_parser("compare", help="compare a run (dir or CSV) against a stored results CSV")
    c.add_argument("run")
    c.add_argument("--against", required=True)
    c.add_argument("--csv", default=None, help="also write the whole comparison table here")
    c.add_argument("--all", action="store_true", dest="show_all",
                   help="print every compared row (default: what regressed, failed, went missing or improved beyond its "
                        "band, then one line of counts per verdict)")
    c.add_argument("--allow-fewer-seeds", action="store_true",
                   help="a run with fewer seeds than the reference on purpose (--seeds 1 against a 3-seed reference): "
                        "compare the seeds it has instead of reporting the others as missing")

    t = sub.add_parser("tune", help="choose a benchmark's settings by the tuning grid its spec declares")
    t.add_argument("name")
    t.add_argument("--preset", default="quick")
    t.add_argument("--out", default="results/tuning", help="where the tries' runs and the tuning table go")
    t.add_argument("--jobs", type=int, default=0, help="units at a time (as for run)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads per unit (as for run)")

    rep = sub.add_parser("report", help="rebuild report.md and plots from a run's summary.csv")
    rep.add_argument("run")

    pc = sub.add_parser("paper-csv", help="write results/reference/paper.csv from the specs' paper numbers")
    pc.add_argument("--out", default="results/reference/paper.csv")

    sub.add_parser("fit", help="train one module with LightningCLI (iclrbench fit --help)", add_help=False)
    return p


def cmd_list(names: list[str] | None = None) -> int:
    from benchmarks.plan import DEFAULT_SEEDS
    from benchmarks.registry import PRESETS, get_benchmark, list_benchmarks

    for name in names or []:
        get_benchmark(name)  # an unknown name: one line listing the known ones, exit 2
    for name in names or list_benchmarks():
        b = get_benchmark(name)
        print(f"{name}: {b.paper.title} (arXiv {b.paper.arxiv})")
        print(f"  claim:    {b.claim}")
        print("  variants: " + ", ".join(f"{v.name} ({v.role})" for v in b.variants))
        print(f"  datasets: {', '.join(b.datasets)} (default {b.default_dataset})"
              + "".join(f"; {p} runs {', '.join(t)}" for p, t in b.tasks.items()))
        print(f"  presets:  {', '.join(b.presets)}; extras: {', '.join(b.extras) or '-'}")
        own = {p: ", ".join(f"{v.name} {v.seeds[p]}" for v in b.variants if p in v.seeds) for p in PRESETS}
        print("  seeds:    " + ", ".join(f"{p} {b.seeds.get(p) or DEFAULT_SEEDS[p]}" + (f" ({own[p]})" if own[p] else "")
                                        for p in PRESETS))
        print("  metrics:  " + ", ".join(m.name + ("*" if m.primary else "") for m in b.metrics))
        if b.paper_architecture:
            print(f"  full:     {b.paper_architecture}")
    return EXIT_OK


def _preflight_data(opts) -> None:
    """Fail within seconds, before any unit starts, when a real dataset is missing; with ``--stand-in-data``,
    write a stand-in in the dataset's own format instead (``datamodules.standin``), check that its loader reads it,
    and record its folder in ``opts.stand_ins`` (the data dir of that benchmark's units on that dataset)."""
    from benchmarks.plan import overrides_for
    from benchmarks.registry import get_benchmark
    from datamodules import DatasetNotFoundError

    def prepare(factory, config, data_dir) -> None:
        data = factory(config, data_dir, 0)
        method = getattr(data, "prepare_data", None)
        if callable(method):
            method()

    for name in opts.names:
        bench = get_benchmark(name)
        if opts.stand_in_data:
            _stand_in_checkpoints(bench, opts)
        for dataset in bench.tasks_for(opts.preset, opts.dataset):
            factory = bench.dataset(dataset)
            if dataset == bench.default_dataset:
                continue
            config = bench.config(opts.preset, task=dataset)
            config.update(overrides_for(bench, opts.overrides, opts.names))
            try:
                prepare(factory, config, opts.data_dir)
            except DatasetNotFoundError:
                if not opts.stand_in_data:
                    raise
                from datamodules.standin import stand_in

                folder = str(stand_in(dataset))
                prepare(factory, config, folder)
                opts.stand_ins[f"{name}/{dataset}"] = folder
                print(f"{name}: {dataset} is not on disk; using a generated stand-in in its format from {folder}",
                      file=sys.stderr)


def _stand_in_checkpoints(bench, opts) -> None:
    """``--stand-in-data`` for a spec's ``stand_in_keys``: a named checkpoint that is neither a local folder nor in
    Hugging Face's local cache is replaced (``--set BENCH.KEY=<stand-in folder>``) by its stand-in."""
    from datamodules.standin import WRITERS, stand_in

    for key in bench.stand_in_keys:
        value = bench.config(opts.preset).get(key)
        if not value or os.path.isdir(str(value)) or f"{bench.name}.{key}" in opts.overrides or key in opts.overrides:
            continue
        try:
            from transformers import AutoConfig

            AutoConfig.from_pretrained(value, local_files_only=True)
            continue  # cached locally: the real one
        except OSError:
            pass
        if value not in WRITERS:
            continue  # no stand-in: the unit fails with its own message
        folder = str(stand_in(value))
        opts.overrides[f"{bench.name}.{key}"] = folder
        print(f"{bench.name}: checkpoint {value!r} is not available offline; using a stand-in of its architecture with "
              f"random weights from {folder}", file=sys.stderr)


def run_overrides(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """``--set`` values, plus the flags that are shorthands for one benchmark's key."""
    overrides = _parse_set(args.set)
    if args.fid_weights is not None:
        if "score_sde" not in names:
            raise CliError("--fid-weights applies to the score_sde benchmark, which this run does not include")
        overrides["score_sde.fid_weights"] = args.fid_weights
    return overrides


def slurm_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """submitit's AutoExecutor parameters from the --slurm-* options (None: submitit's default)."""
    gpus = args.slurm_gpus_per_unit
    if gpus is None and args.accelerator in ("gpu", "cuda"):
        gpus = args.devices if isinstance(args.devices, int) else None
    extra = {}
    for item in args.slurm_extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--slurm-extra expects KEY=VALUE; got {item!r}")
        extra[key.strip()] = value
    params = {
        "slurm_partition": args.slurm_partition, "gpus_per_node": gpus, "mem_gb": args.slurm_mem_gb,
        "cpus_per_task": args.slurm_cpus_per_unit or args.threads, "timeout_min": args.slurm_time_min,
        "slurm_setup": args.slurm_setup or None, "slurm_additional_parameters": extra or None,
    }
    return {k: v for k, v in params.items() if v is not None}


def cmd_run(args: argparse.Namespace) -> int:
    from benchmarks.plan import RunOptions, plan
    from benchmarks.registry import list_benchmarks

    names = args.names or list_benchmarks()
    data_dir = os.path.abspath(args.data_dir) if args.data_dir else None  # units run in the repository root
    opts = RunOptions(
        names=names, preset=args.preset, seeds=args.seeds, dataset=args.dataset, data_dir=data_dir,
        accelerator=args.accelerator, devices=args.devices, strategy=args.strategy, num_nodes=args.num_nodes,
        precision=args.precision, out=args.out, overrides=run_overrides(args, names), variants=args.variants,
        extras=not args.no_extras, fresh=args.fresh, wait=args.wait, timeout_s=args.timeout, quiet=args.quiet,
        logger=args.logger, cold_start=args.cold_start, jobs=args.jobs, launcher=args.launcher,
        slurm=slurm_parameters(args) if args.launcher != "process" else {},
        fast_dev_run=args.fast_dev_run, fast_dev_batch=args.fast_dev_batch, stand_in_data=args.stand_in_data,
    )
    if args.threads is not None:
        if args.threads < 1:
            raise CliError(f"--threads must be at least 1; got {args.threads}")
        os.environ["ICLRBENCH_THREADS"] = str(args.threads)  # inherited by every unit
    plan(opts)  # validates every name before anything heavy is imported or run
    _preflight_data(opts)
    from benchmarks.results import read_rows
    from benchmarks.runner import execute_run

    run_dir = execute_run(opts)
    df = read_rows(run_dir / "summary.csv")
    return EXIT_UNITS_FAILED if (df["status"] != "ok").any() else EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from benchmarks.compare import compare, render
    from benchmarks.results import read_results

    run = read_results(args.run, "run results")
    ref = read_results(args.against, "reference CSV")
    result = compare(run, ref, allow_fewer_seeds=args.allow_fewer_seeds)
    print(render(result, show_all=args.show_all))
    if args.csv:
        from benchmarks.results import atomic_write_text

        atomic_write_text(args.csv, result.table.to_csv(index=False))
    if result.regressed:
        print("a quality metric regressed beyond its band, failed, or is missing (see above)", file=sys.stderr)
        return EXIT_REGRESSION
    return EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    from benchmarks.registry import PRESETS, lookup
    from benchmarks.tune import tune

    lookup("preset", {p: p for p in PRESETS}, args.preset)
    if args.threads is not None:
        if args.threads < 1:
            raise CliError(f"--threads must be at least 1; got {args.threads}")
        os.environ["ICLRBENCH_THREADS"] = str(args.threads)
    table = tune(args.name, args.preset, args.out, args.jobs)
    return EXIT_UNITS_FAILED if table["score"].isna().any() else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from benchmarks.report import write_report

    run = Path(args.run)
    run_dir = run if run.is_dir() else run.parent
    print(write_report(run_dir))
    return EXIT_OK


def cmd_paper_csv(args: argparse.Namespace) -> int:
    from benchmarks.paper import write_paper_csv

    print(write_paper_csv(args.out))
    return EXIT_OK


def cmd_fit(argv: list[str]) -> int:
    from benchmarks.fit import main as fit_main

    fit_main(argv)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from benchmarks.errors import BadResultsError, RunFolderLocked, RunInterrupted
    from benchmarks.registry import UnknownNameError
    from datamodules import DatasetNotFoundError

    try:
        if argv and argv[0] == "fit":
            return cmd_fit(argv[1:])
        args = build_parser().parse_args(argv)
        if args.command == "list":
            return cmd_list(args.names)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "tune":
            return cmd_tune(args)
        if args.command == "paper-csv":
            return cmd_paper_csv(args)
        raise CliError(f"unknown command {args.command!r}")
    except CliError as exc:
        print(f"iclrbench: error: {exc}", file=sys.stderr)
        return exc.code
    except (UnknownNameError, BadResultsError, RunFolderLocked) as exc:
        print(f"iclrbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DatasetNotFoundError as exc:
        print(f"iclrbench: error: {exc}", file=sys.stderr)
        return EXIT_NO_DATA
    except RunInterrupted as exc:
        print(f"iclrbench: {exc or 'interrupted; completed units are kept; rerun to resume'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `iclrbench list | head`
        sys.stdout = open(os.devnull, "w")
        return EXIT_OK
    except ValueError as exc:  # config validation (bad --seeds, bad --set value ...)
        if os.environ.get("ICLRBENCH_DEBUG"):
            raise
        print(f"iclrbench: error: {exc} (ICLRBENCH_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
