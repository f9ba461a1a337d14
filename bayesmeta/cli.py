"""The ``bayesmeta`` command: parse, call one library function per command, print.

Each command is a row of :data:`COMMANDS`: the library function that does the work (reachable
from Python with the same keyword arguments) and the printer of its result. Bad input exits
with status 2 and one line on stderr naming the problem; no partial output file is left
behind. An error that is not a check of the input is a bug: its traceback, and status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bayesmeta import summaries
from bayesmeta.errors import UsageError, check_out_dir, is_bad_input, report_bug
from bayesmeta.rundir import DataRef

CLI_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError)
SEED_LIMIT = 2**32  # jax.random.PRNGKey folds larger seeds onto others


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``bayesmeta CMD: error: ...`` and exit status 2 (no
    usage block, so that every bad input gives exactly one line on stderr)."""

    def error(self, message: str):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seed(text: str) -> int:
    try:
        val = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seed: expected an integer in [0, 2**32), got {text!r}"
        ) from None
    if not 0 <= val < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"--seed: expected an integer in [0, 2**32), got {val}")
    return val


def _positive(kind: str):
    def parse(text: str) -> int:
        try:
            val = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{kind}: expected a positive integer, got {text!r}"
            ) from None
        if val < 1:
            raise argparse.ArgumentTypeError(f"{kind}: expected a positive integer, got {val}")
        return val

    return parse


def _add_data_args(p: argparse.ArgumentParser) -> None:
    """Your own grouped data (docs/data_yours.md)."""
    p.add_argument("--data", default=None, metavar="FILE",
                   help="grouped rows: a .csv (with --group, --x, --y) or a pool .npz")  # fmt: skip
    p.add_argument("--group", default=None, metavar="COL", help="the CSV's group id column")
    p.add_argument("--x", default=None, metavar="COL[,COL...]", help="the CSV's feature columns")
    p.add_argument("--y", default=None, metavar="COL", help="the CSV's target column")
    p.add_argument("--split-seed", type=_seed, default=0,
                   help="the train/validation/test split of the groups")  # fmt: skip
    p.add_argument("--labels", action="store_true",
                   help="the --y column holds class labels (integers 0..C-1 or names): "
                   "a categorical model")  # fmt: skip


def _data_ref(args) -> DataRef | None:
    if args.data is None:
        for flag, v in (("--group", args.group), ("--x", args.x), ("--y", args.y),
                        ("--labels", args.labels or None)):  # fmt: skip
            if v is not None:
                raise UsageError(f"{flag}: only with --data FILE")
        return None
    return DataRef(args.data, args.group, args.x, args.y, args.split_seed, labels=args.labels)


def _add_access_args(p: argparse.ArgumentParser) -> None:
    """How far to trust a run directory (docs/formats.md, "Safe run directories")."""
    p.add_argument(
        "--model",
        default=None,
        metavar="FILE",
        help="the model file the run was fitted with (run only if its SHA-256 matches)",
    )
    p.add_argument(
        "--trust-model-file",
        action="store_true",
        help="run the model file the run directory names (if its SHA-256 matches)",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="UNSAFE: read a legacy pickle checkpoint, which can run code; trust the run first",
    )


def _access(args) -> dict:
    return {
        "model": args.model,
        "trust_model_file": args.trust_model_file,
        "allow_pickle": args.allow_pickle,
    }


def _flags(p: argparse.ArgumentParser, *specs: tuple) -> None:
    """``(flag, type or action, default, help)`` rows; ``type`` None is a store_true flag."""
    for flag, kind, default, help_ in specs:
        if kind is None:
            p.add_argument(flag, action="store_true", help=help_)
        else:
            p.add_argument(flag, type=kind, default=default, help=help_)


def build_parser() -> argparse.ArgumentParser:
    from bayesmeta import __version__
    from bayesmeta.bench import BUDGETS as BENCH_BUDGETS
    from bayesmeta.bench import FAMILIES, METHODS
    from bayesmeta.inference.registry import trainable
    from bayesmeta.recipes import BUDGETS
    from bayesmeta.zoo import METHOD_NAMES

    p = _Parser(prog="bayesmeta", description="Task posteriors from a few examples.")
    p.add_argument("--version", action="version", version=f"bayesmeta {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    quiet = ("--quiet", None, False, "no progress bar")

    f = sub.add_parser("fit", help="meta-train a method on a model")
    f.add_argument("model", metavar="MODEL", help="a model file, a built-in name (with "
                   "--data: linear, mlp, mixed), or auto")  # fmt: skip
    f.add_argument("--method", default=None, choices=METHOD_NAMES, help="required but for auto")
    f.add_argument("--budget", choices=BUDGETS, default="default")
    f.add_argument("--out", required=True, metavar="RUN_DIR")
    _flags(
        f,
        ("--steps", _positive("--steps"), None, "meta-training steps (default: the recipe's)"),
        ("--max-seconds", _positive("--max-seconds"), None, "also stop after S seconds of "
         "training (recorded; a run it stops depends on the machine)"),
        ("--validate", None, False, "score held-out validation tasks after every chunk and keep "
         "the best state (best.npz); data runs always do"),
        ("--seed", _seed, 0, "θ's initialisation and the training stream"),
        ("--search-budget", _positive("--search-budget"), None, "with --data: choose the "
         "learning rate and the method's step size on the validation groups by a seeded "
         "search of N meta-training steps in all (bayesmeta.search)"),
        quiet,
        ("--resume", None, False, "continue the run in RUN_DIR from its checkpoint"),
        ("--force", None, False, "replace the run already in RUN_DIR"),
        ("--task-streams", _positive("--task-streams"), None, "draw each meta-batch as S "
         "independent task streams (default with --distributed: one per device)"),
        ("--distributed", None, False, "train across processes on JAX's distributed runtime "
         "(docs/distributed.md)"),
        ("--coordinator", str, None, "process 0's HOST:PORT (default: JAX_COORDINATOR_ADDRESS)"),
        ("--num-processes", _positive("--num-processes"), None, "default: JAX_NUM_PROCESSES"),
        ("--process-id", int, None, "this process, 0..N-1 (default: JAX_PROCESS_ID)"),
    )  # fmt: skip
    _add_data_args(f)

    e = sub.add_parser("evaluate", help="score a fitted run on a task file")
    e.add_argument("run_dir", metavar="RUN_DIR")
    _add_access_args(e)
    e.add_argument("--tasks", required=True, metavar="FILE.npz")
    e.add_argument("--out", required=True, metavar="REPORT.json")
    e.add_argument("--data", default=None, metavar="FILE",
                   help="the run's data file where it is now, if it has moved since the fit "
                   "(its SHA-256 must match the run's)")  # fmt: skip
    _flags(e, ("--samples", _positive("--samples"), 1000, "posterior samples per task"),
           ("--seed", _seed, 0, "the adaptation's key"),
           ("--predictive", str, None, "also write the predictive to PRED.npz"), quiet)  # fmt: skip

    a = sub.add_parser("active", help="active learning: learning curves on a pool (--tasks), "
                       "or ask/tell on your CSV (--data ... --suggest N)")  # fmt: skip
    a.add_argument("run_dir", metavar="RUN_DIR")
    _add_access_args(a)
    a.add_argument("--tasks", default=None, metavar="FILE.npz",
                   help="learning curves: a task file with x_pool and y_pool")  # fmt: skip
    a.add_argument("--acquisition", default=None, metavar="A",
                   help="variance, entropy, bald, random, or all (paired; not with --suggest); "
                   "with --suggest the default is bald")  # fmt: skip
    a.add_argument("--queries", default=None, type=_positive("--queries"), metavar="N",
                   help="learning curves: labelling rounds")  # fmt: skip
    a.add_argument("--out", default=None, metavar="FILE",
                   help="CURVE.json (--tasks; required) or the suggestions as .csv/.json "
                   "(--suggest; optional)")  # fmt: skip
    _flags(a, ("--batch", _positive("--batch"), 1, "labels per query"),
           ("--samples", _positive("--samples"), 100, "posterior samples per adaptation"),
           ("--seed", _seed, 0, "the acquisitions' key"), quiet)  # fmt: skip
    a.add_argument("--data", default=None, metavar="FILE.csv",
                   help="ask/tell: your rows; those of --group-id with a --y are the support, "
                   "those with an empty --y cell the candidates")  # fmt: skip
    a.add_argument("--group", default=None, metavar="COL",
                   help="ask/tell: the group id column (default: the run's)")  # fmt: skip
    a.add_argument("--x", default=None, metavar="COL[,COL...]",
                   help="ask/tell: the feature columns (default: the run's)")  # fmt: skip
    a.add_argument("--y", default=None, metavar="COL",
                   help="ask/tell: the target column (default: the run's)")  # fmt: skip
    a.add_argument("--group-id", default=None, metavar="G", help="ask/tell: the group (task)")
    a.add_argument("--suggest", default=None, type=_positive("--suggest"), metavar="N",
                   help="ask/tell: the N candidate rows to label next, best first")  # fmt: skip
    a.add_argument("--cost", default=None, metavar="COL",
                   help="ask/tell: a column with each candidate's labelling cost; rank by "
                   "information per unit cost")  # fmt: skip

    t = sub.add_parser("tasks", help="write a held-out task file of a model's family or your data")
    t.add_argument("model", metavar="MODEL", nargs="?", default=None)
    _add_data_args(t)
    t.add_argument("--split", choices=["train", "validation", "test"], default="test",
                   help="with --data: whose groups become tasks")  # fmt: skip
    t.add_argument("--out", required=True, metavar="FILE.npz")
    _flags(
        t,
        ("--min-group-size", _positive("--min-group-size"), None, "with --data: leave out "
         "groups with fewer rows (default: refuse groups < K + 1)"),
        ("--k", _positive("--k"), 5, "support points per task"),
        ("--num-tasks", _positive("--num-tasks"), 200, "tasks in the file"),
        ("--queries", _positive("--queries"), 50, "query points per task"),
        ("--pool", _positive("--pool"), None, "also write x_pool/y_pool with this many "
         "candidates per task (active learning)"),
        ("--seed", _seed, 12345, "the tasks' key"),
    )  # fmt: skip

    i = sub.add_parser("info", help="versions, devices, and a run's configuration")
    i.add_argument("run_dir", nargs="?", default=None, metavar="RUN_DIR")
    _add_access_args(i)
    u = sub.add_parser("upgrade", help="convert a run you trust from a legacy pickle checkpoint")
    u.add_argument("run_dir", metavar="RUN_DIR")

    r = sub.add_parser("run", help="the main job: methods on the sinusoid beside the oracle")
    r.add_argument("--out", default="bayesmeta-out", metavar="DIR")
    _flags(r, ("--seconds", _positive("--seconds"), None, "also stop each method after S "
               "seconds of training (default: its embedded step count)"),
           ("--num-tasks", _positive("--num-tasks"), 200, "held-out tasks"),
           ("--seed", _seed, 0, "training and evaluation seed"),
           ("--quiet", None, False, "no progress bars or progress lines"))  # fmt: skip

    b = sub.add_parser("bench", help="benchmark suites (calibration of every method and family)")
    b.add_argument("suite", choices=["calibration", "merge"],
                   help="calibration: run the suite; merge: join shard folders")  # fmt: skip
    b.add_argument("shards", nargs="*", metavar="SHARD_DIR", help="merge: the shards' --out")
    b.add_argument("--budget", choices=list(BENCH_BUDGETS), default="small",
                   help="small: a smoke test; standard: step counts, 3 seeds (shard it); "
                   "classification: the few-shot classifiers; full: the papers' steps")  # fmt: skip
    b.add_argument("--families", nargs="+", choices=list(FAMILIES), default=None)
    b.add_argument("--methods", nargs="+", choices=[m for m in METHOD_NAMES if trainable(m)],
                   default=None, help=f"default: the budget's ({', '.join(METHODS)})")  # fmt: skip
    b.add_argument("--seeds", nargs="+", type=_seed, default=None)
    b.add_argument("--out", default="bench-out", metavar="DIR")
    _flags(b, ("--shard", str, "0/1", "I/N: every N-th training run from the I-th"),
           ("--no-resume", None, False, "recompute the runs whose rows are already in --out"),
           ("--seconds", _positive("--seconds"), None, "training seconds per run"),
           ("--quiet", None, False, "no progress bars or progress lines"))  # fmt: skip
    return p


# -- one library call per command ---------------------------------------------------------------
def _fit(args) -> Any:
    from bayesmeta.fitting import Run, fit_run, join_distributed

    mesh, streams = None, args.task_streams
    if args.distributed or any(
        v is not None for v in (args.coordinator, args.num_processes, args.process_id)
    ):
        mesh, streams = join_distributed(args.coordinator, args.num_processes, args.process_id,
                                         streams)  # fmt: skip
    data = _data_ref(args)
    if args.model == "auto":
        return _fit_auto(args, data)
    if args.method is None:
        raise UsageError("--method: required (one of the registered methods), except for "
                         "MODEL auto")  # fmt: skip
    config = {"max_seconds": args.max_seconds}
    run = Run(args.model, args.method, data, budget=args.budget, steps=args.steps,
              seed=args.seed, config=config, task_streams=streams)  # fmt: skip
    if args.search_budget is not None:
        return _fit_search(args, run)
    return fit_run(run, out=args.out, resume=args.resume, force=args.force,
                   validate=bool(args.validate or data is not None), mesh=mesh,
                   progress=False if args.quiet else None)  # fmt: skip


def _fit_search(args, run) -> Any:
    from bayesmeta.fitting import check_run_dir
    from bayesmeta.search import fit_search

    if args.resume or args.max_seconds is not None or args.distributed:
        raise UsageError("--search-budget: not with --resume, --max-seconds or --distributed")
    check_run_dir(args.out, force=args.force, resumable=False)
    fitted = fit_search(run, args.search_budget, progress=False if args.quiet else None,
                        log=None if args.quiet else print)  # fmt: skip
    fitted.save(args.out, overwrite=args.force)
    return fitted


def _fit_auto(args, data) -> Any:
    from bayesmeta.auto import fit_auto
    from bayesmeta.fitting import check_run_dir

    if data is None:
        raise UsageError("--data: MODEL auto chooses among models of your grouped data; pass "
                         "--data FILE --group COL --x COL[,COL...] --y COL")  # fmt: skip
    for flag, value in (
        ("--method", args.method),
        ("--steps", args.steps),
        ("--resume", args.resume or None),
        ("--max-seconds", args.max_seconds),
    ):
        if value is not None:
            raise UsageError(f"{flag}: not with MODEL auto, which chooses its own candidates")
    check_run_dir(args.out, force=args.force, resumable=False)
    fitted = fit_auto(data, seed=args.seed, budget=args.budget,
                      progress=False if args.quiet else None,
                      log=None if args.quiet else print)  # fmt: skip
    fitted.save(args.out, overwrite=args.force)
    return fitted


def _evaluate(args) -> dict:
    from bayesmeta.scoring import evaluate_run

    return evaluate_run(args.run_dir, args.tasks, args.out, samples=args.samples,
                        predictive=args.predictive, seed=args.seed, quiet=args.quiet,
                        access=_access(args), data=args.data)  # fmt: skip


def _tasks(args) -> int:
    from bayesmeta.scoring import make_data_tasks, make_tasks

    if args.data is not None:
        if args.model is not None:
            raise UsageError(f"MODEL: not with --data (got {args.model!r}); the data's groups "
                             "are the tasks")  # fmt: skip
        return make_data_tasks(_data_ref(args), args.split, args.out, args.k, args.seed,
                               args.min_group_size)  # fmt: skip
    if args.model is None:
        raise UsageError("MODEL: expected a model file or name, or --data FILE")
    _data_ref(args)
    make_tasks(args.model, args.out, args.k, args.num_tasks, args.queries, args.seed,
               args.pool or 0)  # fmt: skip
    return args.num_tasks


def _print_tasks(n: int, args) -> None:
    if args.data is not None:
        print(f"wrote {n} {args.split} groups as tasks (K={args.k}) -> {args.out}")
    else:
        pool = f", P={args.pool}" if args.pool else ""
        print(f"wrote {n} tasks (K={args.k}, Q={args.queries}{pool}) -> {args.out}")


def _active(args) -> dict:
    from bayesmeta.scoring import active

    names = ("tasks", "acquisition", "queries", "out", "data", "group", "x", "y", "group_id",
             "suggest", "cost", "batch", "samples", "seed", "quiet")  # fmt: skip
    return active(args.run_dir, **{n: getattr(args, n) for n in names}, access=_access(args))


def _info(args) -> dict:
    from bayesmeta.rundir import run_info

    return run_info(args.run_dir, _access(args))


def _upgrade(args) -> dict:
    from bayesmeta.rundir import upgrade

    return upgrade(args.run_dir)


def _print_upgrade(done: dict, args) -> None:
    print(f"upgraded {done['method']} at step {done['step']}: {args.run_dir}/checkpoint.npz "
          "(the pickle is kept as checkpoint.pkl.bak)")  # fmt: skip


def _run(args) -> Any:
    from bayesmeta.main_job import run_main_job

    check_out_dir(args.out)
    return run_main_job(args.out, seconds=args.seconds, num_tasks=args.num_tasks,
                        seed=args.seed, quiet=args.quiet)  # fmt: skip


def _bench(args) -> list:
    from bayesmeta.bench import merge, parse_shard, run_calibration

    check_out_dir(args.out)
    if args.suite == "merge":
        if not args.shards:
            raise UsageError("SHARD_DIR: bench merge needs at least one shard folder")
        return merge(args.shards, args.out)
    if args.shards:
        raise UsageError(f"SHARD_DIR: only bench merge takes folders, got {args.shards}")
    try:
        shard = parse_shard(args.shard)
    except ValueError as err:
        raise UsageError(f"--{err}") from None
    return run_calibration(
        args.budget, out=args.out, families=args.families, methods=args.methods,
        seeds=args.seeds, seconds=args.seconds, progress=False if args.quiet else None,
        log=None if args.quiet else print, shard=shard, resume=not args.no_resume,
        command="bayesmeta " + " ".join(args.argv),
    )  # fmt: skip


def _print_bench(rows: list, args) -> None:
    print(f"{len(rows)} rows -> {Path(args.out) / 'calibration.json'}, calibration.md")


def _print(summary: Callable[[Any, Any], str]) -> Callable[[Any, Any], None]:
    """The printer of a :mod:`bayesmeta.summaries` function, given the command's ``--out``."""
    return lambda result, args: print(summary(result, args.out))


#: ``command -> (library call, printer)``.
COMMANDS: dict[str, tuple[Callable[[Any], Any], Callable[[Any, Any], None]]] = {
    "fit": (_fit, _print(summaries.fit)),
    "evaluate": (_evaluate, _print(summaries.evaluation)),
    "tasks": (_tasks, _print_tasks),
    "active": (_active, _print(summaries.active)),
    "info": (_info, lambda out, args: print(json.dumps(out, indent=2, default=str))),
    "upgrade": (_upgrade, _print_upgrade),
    "run": (_run, lambda out, args: None),
    "bench": (_bench, _print_bench),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    from bayesmeta.checkpoint import CheckpointError
    from bayesmeta.inference.train import DivergenceError

    call, show = COMMANDS[args.command]
    try:
        show(call(args), args)
    except DivergenceError as err:
        print(f"bayesmeta: error: {err}", file=sys.stderr)
        return 1
    except (CheckpointError, *CLI_ERRORS) as err:
        if not is_bad_input(err):
            return report_bug(err)
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"bayesmeta: error: {msg}", file=sys.stderr)
        return 2
    except OSError as err:  # an unreadable input or unwritable output path
        where = f" {err.filename!r}" if err.filename else ""
        print(f"bayesmeta: error:{where} {err.strerror or err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
