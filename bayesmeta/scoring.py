"""Score a fitted run directory: on a task file (``bayesmeta evaluate``), in the data's own
units with the classical linear baselines beside it for a data run, and by active learning on a
pool (``bayesmeta active``); and write task files (``bayesmeta tasks``). Every function here is
the command line's, reachable from Python with keyword arguments; each writes its outputs only
once everything is computed.
"""

from __future__ import annotations

import contextlib
import json
import numbers
from pathlib import Path

from bayesmeta.atomic import save_npz, write_text
from bayesmeta.errors import UsageError, check_out_file, check_positive
from bayesmeta.rundir import DataRef, load_run, read_run_json


@contextlib.contextmanager
def progress_bar(total: int, desc: str, quiet: bool):
    """A progress bar (``tqdm.auto``), off with ``--quiet`` and when stderr is not a terminal.

    On an error the bar's line is erased, so the error stays the only line it leaves."""
    from bayesmeta.inference.train import ProgressBar

    bar = ProgressBar(total, desc, False if quiet else None)
    bar.update(0)
    try:
        yield bar
    except BaseException:
        bar.discard()
        raise
    bar.close()


def load_tasks_for(spec, tasks: str) -> dict:
    """Read a task file and check it against a model: Dx, Dy (regression) or the number of
    classes (classification)."""
    from bayesmeta.tasks.io import TaskFileError, load_tasks

    model = spec.model
    try:
        if model.likelihood.classifier:
            return load_tasks(
                tasks, dx=model.dx, classification=True, num_classes=int(model.num_classes)
            )
        return load_tasks(tasks, dx=model.dx, classification=False, dy=int(model.dy))
    except TaskFileError as err:
        # "(from dx)" names the API argument; here the expectation is the run's model.
        msg = str(err)
        for arg in ("dx", "dy"):
            msg = msg.replace(f"(from {arg})", f"(model {spec.name!r})")
        raise TaskFileError(msg.replace("(num_classes=", f"(model {spec.name!r}: C=")) from None


def evaluate_run(
    run_dir: str,
    tasks: str,
    out: str,
    samples: int = 1000,
    predictive: str | None = None,
    seed: int = 0,
    quiet: bool = False,
    access: dict | None = None,
    data: str | None = None,
) -> dict:
    """Adapt a fitted run to the support sets of a task file and score the query sets.

    ``data`` is the data file of a run fitted on a CSV that has moved since (``--data``): it
    replaces the recorded path, and its SHA-256 must still be the recorded one. Both outputs
    (``out`` and ``predictive``) are written only once everything is computed, so a failure
    leaves neither behind."""
    check_out_file(out)
    if predictive:
        check_out_file(predictive, "--predictive")
        if Path(predictive).resolve() == Path(out).resolve():
            raise UsageError(f"--predictive: expected a path other than --out, got {predictive!r}")
    check_positive("--samples", samples)
    spec, method, state, payload = load_run(run_dir, data=data, **(access or {}))
    data = load_tasks_for(spec, tasks)
    scaler = None
    if isinstance(payload.get("scaler"), dict):
        from bayesmeta.tasks.data import Standardizer

        scaler = Standardizer.from_json(payload["scaler"])
    stages = 3 if predictive else 2
    from bayesmeta.evaluate.calibrate import stored_calibration

    # the interval calibration the run fitted on its validation groups, if it stored one
    calibration = stored_calibration(read_run_json(run_dir), data)
    with progress_bar(stages, f"evaluate {spec.name}/{method.name}", quiet) as bar:
        report, arrays = score_tasks(spec, method, state, data, samples, seed=seed,
                                     scaler=scaler, predictive=bool(predictive),
                                     progress=bar.update, calibration=calibration)  # fmt: skip
    report.update(run_dir=str(run_dir), tasks=str(tasks))
    text = json.dumps(report, indent=2)
    if arrays is not None:
        save_npz(Path(predictive), arrays)
        try:
            write_text(Path(out), text)
        except BaseException:
            Path(predictive).unlink(missing_ok=True)
            raise
    else:
        write_text(Path(out), text)
    return report


def score_tasks(
    spec,
    method,
    state,
    data: dict,
    samples: int,
    *,
    seed: int = 0,
    key=None,
    scaler=None,
    predictive: bool = False,
    temperature: float | None = None,
    progress=None,
    adapt=None,
    calibration=None,
):
    """Adapt to a task set's support sets and score its query sets: the one scorer behind
    ``bayesmeta evaluate`` and :meth:`Fitted.evaluate <bayesmeta.fitted.Fitted.evaluate>`.

    On a run fitted on the user's data (``scaler`` given) the task set is in the data's own
    units: it is standardised for the method, and every number of the report is in the data's
    units again (densities with the Jacobian ``− Σ log y_scale``), with the pooled and the
    per-group empirical-Bayes linear regressions of the training groups beside the method on
    the same tasks (``baselines``: NLL, per task, and the paired standard error of the
    difference) for a one-column real ``y``.

    ``adapt`` replaces ``method.adapt`` (a jitted copy of it, compiled once per shape). A
    ``calibration`` (:class:`~bayesmeta.evaluate.calibrate.Calibration`, fitted on validation
    tasks) adds the recalibrated and conformal metrics beside the method's own.

    Returns
    -------
    (Report, dict or None)
        The report (:class:`~bayesmeta.evaluate.report.Report`) and, with ``predictive``, the
        predictive arrays (:func:`~bayesmeta.evaluate.predictive_arrays`).
    """
    import jax
    import jax.numpy as jnp

    from bayesmeta.evaluate import evaluate as score
    from bayesmeta.evaluate import predictive_arrays
    from bayesmeta.tasks.base import Support

    data = dict(data)
    y_raw = data["y_query"]
    if scaler is not None:
        for name in ("x_support", "x_query"):
            data[name] = scaler.transform_x(data[name]).astype("float32")
        for name in ("y_support", "y_query"):
            data[name] = scaler.transform_y(data[name]).astype(data[name].dtype)
    x_s, y_s = jnp.asarray(data["x_support"]), jnp.asarray(data["y_support"])
    mask = data.get("mask_support")
    mask = jnp.ones(x_s.shape[:2], x_s.dtype) if mask is None else jnp.asarray(mask, x_s.dtype)
    if key is None:
        key = jax.random.PRNGKey(seed)
    k_adapt, k_pred = jax.random.split(key)
    xq, yq = jnp.asarray(data["x_query"]), jnp.asarray(data["y_query"])
    step = progress or (lambda *a: None)
    post = (adapt or method.adapt)(k_adapt, state, Support(x_s, y_s, mask), samples)
    step(1, "adapted")
    report = score(post, xq, yq, mask_query=data.get("mask_query"), temperature=temperature)
    step(2, "scored")
    arrays = None
    if predictive:
        arrays = predictive_arrays(post, k_pred, xq, yq, samples)
        step(3, "predictive")
    if scaler is not None and scaler.y_mean is not None:
        to_data_units(report, arrays, post, xq, y_raw, data.get("mask_query"), scaler)
        report["units"] = "data"
        if int(yq.shape[-1]) == 1:
            report["baselines"] = linear_baselines(spec.splits.train, data, scaler,
                                                   report["nll_per_task"])  # fmt: skip
    if calibration is not None:
        from bayesmeta.evaluate.calibrate import calibrated_metrics

        jac = scaler.log_jacobian() if scaler is not None else 0.0
        report.update(calibrated_metrics(post, xq, yq, data.get("mask_query"), calibration, jac))
    report.update(model=spec.name, k=int(x_s.shape[1]), samples=int(samples))
    return report, arrays


def to_data_units(report, arrays, post, xq, y_raw, mask, scaler) -> None:
    """Convert a standardised-units report (and predictive arrays) to the data's own units:
    densities gain the Jacobian −Σ log y_scale, means and draws map back, MSE is recomputed
    against the raw targets; coverage, calibration and PIT are unchanged by an affine map."""
    import numpy as np

    from bayesmeta.evaluate.metrics import mse

    jac = scaler.log_jacobian()
    report["nll"] = report["nll"] + jac
    report["nll_per_task"] = [v + jac for v in report["nll_per_task"]]
    mean = scaler.inverse_y(np.asarray(post.mean(xq)))
    if mask is not None:
        keep = np.asarray(mask).astype(bool)
        report["mse"] = mse(mean[keep][None], np.asarray(y_raw)[keep][None])
    else:
        report["mse"] = mse(mean, y_raw)
    report["units"] = "data"
    if arrays is not None:
        arrays["log_predictive"] = arrays["log_predictive"] - jac
        arrays["mean"] = mean.astype(np.float32)
        arrays["samples"] = scaler.inverse_y(arrays["samples"]).astype(np.float32)


#: The baselines fitted on a training split, by the split object's id (with a weak reference
#: to tell a reused id apart): evaluating one fit at several K fits MixedLM once.
_BASELINE_CACHE: dict[int, tuple] = {}


def _fitted_baselines(train):
    """``(linear baselines, mixed model or None, its error or None)`` of a training split."""
    import weakref

    import numpy as np

    from bayesmeta.evaluate.baselines import fit_linear_baselines, fit_mixed_model

    hit = _BASELINE_CACHE.get(id(train))
    if hit is not None and hit[0]() is train:
        return hit[1]
    real = np.arange(train.x.shape[1])[None, :] < train.lengths[:, None]
    ids = np.broadcast_to(np.arange(train.num_groups)[:, None], real.shape)[real]
    fit = fit_linear_baselines(train.x[real], train.y[real][:, 0], ids)
    mixed, mixed_error = None, None
    try:
        mixed = fit_mixed_model(train.x[real], train.y[real][:, 0], ids, start=fit)
    except ImportError:
        pass  # statsmodels is optional: the report then has the two linear baselines
    except RuntimeError as err:  # no random-effects structure converged: say so
        mixed_error = str(err)
    _BASELINE_CACHE.clear()  # one split at a time is what a session evaluates
    _BASELINE_CACHE[id(train)] = (weakref.ref(train), (fit, mixed, mixed_error))
    return fit, mixed, mixed_error


def linear_baselines(train, data: dict, scaler, method_per_task=None) -> dict:
    """NLL per query point (data units) of the classical models of grouped data
    (:mod:`bayesmeta.evaluate.baselines`), fitted on the run's training groups (``train``, a
    :class:`~bayesmeta.tasks.grouped.GroupedData`) and scored on the same task file
    (``data``, in standardised units) as the method: pooled linear regression, the per-group
    empirical-Bayes linear regression and, where statsmodels is installed (the ``data``
    extra), the linear mixed model with random intercepts and slopes fitted by its MixedLM
    (``mixed_model``, with the random-effects ``structure`` it kept). Each: per task, with its
    standard error over tasks, and ``diff_se``, the paired standard error of the method's
    per-task NLL minus the baseline's."""
    import numpy as np

    from bayesmeta.evaluate import task_nll
    from bayesmeta.evaluate.baselines import (
        baseline_log_predictive,
    )

    fit, mixed, mixed_error = _fitted_baselines(train)
    xs = data["x_support"]
    lps = baseline_log_predictive(fit, xs, data["y_support"], np.ones(xs.shape[:2]),
                                  data["x_query"], data["y_query"], mixed=mixed)  # fmt: skip
    keep = np.asarray(data.get("mask_query", np.ones(lps["eb_linear"].shape))).astype(bool)
    jac = scaler.log_jacobian()
    out = {}
    for name, lp in lps.items():
        per_task = task_nll(lp, keep)
        out[name] = {"nll": float(-lp[keep].mean() + jac),
                     "nll_per_task": [v + jac for v in per_task["nll_per_task"]]}  # fmt: skip
        if method_per_task is not None and len(method_per_task) > 1:
            # paired over the same tasks: the SE of the method's NLL minus the baseline's
            diff = np.asarray(method_per_task) - np.asarray(out[name]["nll_per_task"])
            out[name]["diff_se"] = float(diff.std(ddof=1) / np.sqrt(diff.size))
        if "nll_se" in per_task:
            out[name]["nll_se"] = per_task["nll_se"]
    if mixed is not None:
        out["mixed_model"]["structure"] = mixed.structure
    elif mixed_error is not None:
        out["mixed_model"] = {"error": mixed_error}
    return out


def make_data_tasks(
    data: DataRef, split: str, out: str, k: int, seed: int, min_group_size: int | None = None
) -> int:
    """Write a task file of one split of the user's own data, in its own units: one task per
    group, ``k`` support points, the rest of the group as (masked) query points. Returns the
    number of tasks."""
    from bayesmeta.tasks.data import SPLITS, held_out_tasks
    from bayesmeta.tasks.io import save_tasks

    check_out_file(out)
    if split not in SPLITS:
        raise UsageError(f"--split: expected one of {list(SPLITS)}, got {split!r}")
    rows = data.rows()
    groups = rows.split(seed=data.split_seed)[split].groups
    tasks = held_out_tasks(rows, groups, k, seed, min_group_size)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_tasks(out, tasks)
    return int(tasks["x_support"].shape[0])


def make_tasks(
    model: str, out: str, k: int, num_tasks: int, num_query: int, seed: int, pool: int = 0
) -> None:
    """Write a held-out task file drawn from a model's task family.

    With ``pool > 0`` each task also gets ``x_pool (T, pool, Dx)`` and ``y_pool``: candidates
    for active learning, drawn like the query points (``x_query``/``y_query`` stay the held-out
    evaluation points).
    """
    import jax
    import numpy as np

    from bayesmeta.modelfiles import load_model_spec
    from bayesmeta.tasks.base import make_task_set
    from bayesmeta.tasks.io import save_tasks

    check_out_file(out)
    for arg, value in (("--k", k), ("--num-tasks", num_tasks), ("--queries", num_query)):
        check_positive(arg, value)
    if isinstance(pool, bool) or not isinstance(pool, numbers.Integral) or pool < 0:
        raise UsageError(f"--pool: expected a non-negative integer, got {pool!r}")
    spec = load_model_spec(model)
    data = make_task_set(spec.family, jax.random.PRNGKey(seed), num_tasks, k, num_query + pool)
    data = {k_: np.asarray(v) for k_, v in data.items()}
    if pool > 0:
        for name in ("x", "y"):
            q = data.pop(f"{name}_query")
            data[f"{name}_pool"], data[f"{name}_query"] = q[:, :pool], q[:, pool:]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_tasks(out, data)


def _finite_or_none(values) -> list[float | None]:
    import numpy as np

    return [float(v) if np.isfinite(v) else None for v in np.asarray(values).ravel()]


def active_run(
    run_dir: str,
    tasks: str,
    acquisition: str,
    queries: int,
    out: str,
    samples: int = 100,
    batch: int = 1,
    seed: int = 0,
    quiet: bool = False,
    access: dict | None = None,
) -> dict:
    """Pool-based active learning on a task file; writes ``CURVE.json``.

    Each task starts from its support set, labels ``queries`` rounds of ``batch`` pool points
    (``x_pool``, ``y_pool``) chosen by ``acquisition`` and re-adapts after each round; the
    evaluation points are ``x_query``/``y_query``. ``acquisition="all"`` runs every acquisition
    with the same keys (paired) into one file holding ``curves``.
    """
    import jax
    import jax.numpy as jnp

    from bayesmeta.evaluate.active import (
        ACQUISITIONS,
        learning_curve,
        paired_difference,
        run_active,
    )
    from bayesmeta.tasks.base import Support

    check_out_file(out)
    if acquisition != "all" and acquisition not in ACQUISITIONS:
        raise UsageError(
            f"--acquisition: expected one of {[*ACQUISITIONS, 'all']}, got {acquisition!r}"
        )
    for arg, value in (("--queries", queries), ("--samples", samples), ("--batch", batch)):
        check_positive(arg, value)
    names = list(ACQUISITIONS) if acquisition == "all" else [acquisition]
    spec, method, state, _ = load_run(run_dir, **(access or {}))
    classification = spec.model.likelihood.classifier
    data = load_tasks_for(spec, tasks)
    if "x_pool" not in data:
        raise UsageError(
            f"x_pool: missing key in {tasks!r}; active learning needs x_pool (T, P, Dx) and "
            f"y_pool (the candidates), got keys {sorted(data)}"
        )
    x_pool = data["x_pool"]
    if queries * batch > x_pool.shape[1]:
        raise UsageError(
            f"--queries: {queries} queries x --batch {batch} = {queries * batch} labels exceed "
            f"the pool size P={x_pool.shape[1]} of x_pool {x_pool.shape}"
        )
    x_s = jnp.asarray(data["x_support"])
    support = Support(x_s, jnp.asarray(data["y_support"]), jnp.ones(x_s.shape[:2], x_s.dtype))
    key = jax.random.PRNGKey(seed)
    results, curves = {}, {}
    with progress_bar(len(names), f"active {spec.name}/{method.name}", quiet) as bar:
        for i, name in enumerate(names):
            results[name] = run_active(
                key,
                method,
                state,
                support,
                jnp.asarray(x_pool),
                jnp.asarray(data["y_pool"]),
                jnp.asarray(data["x_query"]),
                jnp.asarray(data["y_query"]),
                name,
                queries,
                samples,
                batch,
            )
            curves[name] = learning_curve(results[name], name)
            bar.update(i + 1, name)
    metric = "accuracy" if classification else "mse"
    if "random" in results and len(results) > 1:
        for name in names:
            if name == "random":
                continue
            for m in (metric, "nll"):
                diff, se = paired_difference(results[name], results["random"], m)
                curves[name][f"{m}_vs_random"] = _finite_or_none(diff)
                curves[name][f"{m}_vs_random_se"] = _finite_or_none(se)
    common = {
        "method": method.name,
        "model": spec.name,
        "run_dir": str(run_dir),
        "tasks": str(tasks),
        "n_tasks": int(x_s.shape[0]),
        "k": int(x_s.shape[1]),
        "pool_size": int(x_pool.shape[1]),
        "queries": int(queries),
        "batch": int(batch),
        "samples": int(samples),
        "seed": int(seed),
    }
    if acquisition == "all":
        report = {**common, "acquisition": "all", "acquisitions": names, "curves": curves}
    else:
        report = {**common, **curves[acquisition]}
    write_text(Path(out), json.dumps(report, indent=2))
    return report


def _ask_tell_rows(path: str, xs: list[str], y: str, group: str, group_id: str,
                   classify: bool, cost: str | None = None) -> dict:  # fmt: skip
    """The rows of one group of a CSV for ask/tell: those with a ``y`` (the support, in the
    data's own units) and those whose ``y`` cell is empty (the candidates), each with its
    line number in the file (the header is line 1). Reads the file as ``--data`` reads one
    (:mod:`bayesmeta.tasks.data`); only the group's rows are checked."""
    import numpy as np

    from bayesmeta.tasks.data import _check_roles, _check_values, _columns, _read_csv

    src = repr(str(path))
    if Path(path).suffix.lower() != ".csv":
        raise UsageError(f"--data: ask/tell (--suggest) reads a .csv file, got {src}")
    if not Path(path).is_file():
        raise UsageError(f"--data: no file at {src}")
    _check_roles(xs, y, group, ("--x", "--y", "--group"))
    header, rows, lines = _read_csv(Path(path), src)
    ix = _columns(header, xs, "--x", src)
    (iy,) = _columns(header, [y], "--y", src)
    (ig,) = _columns(header, [group], "--group", src)
    ic = None if cost is None else _columns(header, [cost], "--cost", src)[0]

    def cell(r: list[str], col: int, flag: str, name: str, line: int) -> str:
        if col >= len(r):
            raise UsageError(f"{flag}: expected a value in column {name!r}, got a row of "
                             f"{len(r)} fields on line {line} of {src}")  # fmt: skip
        return r[col].strip()

    mine = [i for i, r in enumerate(rows) if len(r) > ig and r[ig].strip() == group_id.strip()]
    if not mine:
        ids = sorted({r[ig].strip() for r in rows if len(r) > ig})
        shown = ", ".join(repr(g) for g in ids[:10]) + (", ..." if len(ids) > 10 else "")
        raise UsageError(f"--group-id: no rows of group {group_id!r} in column {group!r} of "
                         f"{src} (groups: [{shown}])")  # fmt: skip
    line_of = [lines[i] for i in mine]

    def where(j: int) -> str:
        return f"on line {line_of[j]} of {src}"

    x = np.zeros((len(mine), len(xs)))
    for c, (col, name) in enumerate(zip(ix, xs, strict=True)):
        for j, i in enumerate(mine):
            text = cell(rows[i], col, "--x", name, lines[i])
            try:
                x[j, c] = float(text)
            except ValueError:
                raise UsageError(f"--x: column {name!r} is not numeric (line {lines[i]} of "
                                 f"{src} has {text!r})") from None  # fmt: skip
    _check_values("--x", x, xs, where)
    ycells = [cell(rows[i], iy, "--y", y, lines[i]) for i in mine]
    told = [j for j, c in enumerate(ycells) if c]
    yv = np.zeros(len(told))
    for n, j in enumerate(told):
        try:
            yv[n] = float(ycells[j])
        except ValueError:
            raise UsageError(
                f"--y: column {y!r} is not numeric (line {line_of[j]} of {src} has "
                f"{ycells[j]!r}); leave the cell empty for a candidate row"
            ) from None
    _check_values("--y", yv[:, None], [y], lambda n: where(told[n]))
    if classify and np.any(yv != np.round(yv)):
        n = int(np.flatnonzero(yv != np.round(yv))[0])
        raise UsageError(f"--y: expected integer class labels 0..C-1, got {ycells[told[n]]!r} "
                         f"{where(told[n])}")  # fmt: skip
    cand = [j for j, c in enumerate(ycells) if not c]
    costs = None
    if ic is not None:  # the price of labelling each candidate: positive numbers
        costs = np.zeros(len(cand))
        for n, j in enumerate(cand):
            text = cell(rows[mine[j]], ic, "--cost", cost, line_of[j])
            try:
                costs[n] = float(text)
            except ValueError:
                costs[n] = np.nan
            if not (np.isfinite(costs[n]) and costs[n] > 0):
                raise UsageError(f"--cost: expected a positive number in column {cost!r} for "
                                 f"each candidate row, got {text!r} {where(j)}")  # fmt: skip
    line_of = np.asarray(line_of)
    return {
        "costs": costs,
        "x_support": x[told].astype(np.float32),
        "y_support": yv.astype(np.int32) if classify else yv.astype(np.float32),
        "lines_support": line_of[told],
        "x_candidates": x[cand].astype(np.float32),
        "lines_candidates": line_of[cand],
    }


def _write_suggestions(out: str, report: dict) -> None:
    """``report``'s suggestions as JSON (the whole report) or CSV (one row each)."""
    import csv
    import io

    if Path(out).suffix.lower() == ".json":
        write_text(Path(out), json.dumps(report, indent=2))
        return
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = report["x_columns"]
    costed = report.get("cost_column") is not None
    w.writerow(["rank", "line", *cols, "score", *(["cost"] if costed else [])])
    for s in report["suggestions"]:
        w.writerow([s["rank"], s["line"], *(s["x"][c] for c in cols), s["score"],
                    *([s["cost"]] if costed else [])])  # fmt: skip
    write_text(Path(out), buf.getvalue())


def active(
    run_dir: str,
    *,
    tasks: str | None = None,
    acquisition: str | None = None,
    queries: int | None = None,
    out: str | None = None,
    data: str | None = None,
    group: str | None = None,
    x: str | list[str] | None = None,
    y: str | None = None,
    group_id: str | None = None,
    suggest: int | None = None,
    cost: str | None = None,
    batch: int = 1,
    samples: int = 100,
    seed: int = 0,
    quiet: bool = False,
    access: dict | None = None,
) -> dict:
    """``bayesmeta active``: learning curves on a task file's pools (``tasks``,
    ``acquisition``, ``queries``, ``out``: :func:`active_run`), or ask/tell on one group of a
    CSV (``data``, ``group_id``, ``suggest``: :func:`active_suggest`). Arguments of the other
    mode are refused with one line naming them."""
    if data is not None:  # ask/tell on the user's CSV
        for flag, v in (("--tasks", tasks), ("--queries", queries)):
            if v is not None:
                raise UsageError(f"{flag}: not with --data FILE (ask/tell: --group-id G "
                                 "--suggest N)")  # fmt: skip
        for flag, v in (("--group-id", group_id), ("--suggest", suggest)):
            if v is None:
                raise UsageError(f"{flag}: required with --data FILE (ask/tell: --group-id G "
                                 "--suggest N)")  # fmt: skip
        return active_suggest(run_dir, data, group_id, suggest, acquisition or "bald", out,
                              group=group, x=x, y=y, samples=samples, seed=seed,
                              access=access, cost=cost)  # fmt: skip
    for flag, v in (("--group", group), ("--x", x), ("--y", y), ("--group-id", group_id),
                    ("--suggest", suggest), ("--cost", cost)):  # fmt: skip
        if v is not None:
            raise UsageError(f"{flag}: only with --data FILE (ask/tell)")
    for flag, v in (("--tasks", tasks), ("--acquisition", acquisition), ("--queries", queries),
                    ("--out", out)):  # fmt: skip
        if v is None:
            raise UsageError(f"{flag}: required (learning curves on a pool), or ask/tell with "
                             "--data FILE --group-id G --suggest N")  # fmt: skip
    return active_run(run_dir, tasks, acquisition, queries, out, samples=samples, batch=batch,
                      seed=seed, quiet=quiet, access=access)  # fmt: skip


def active_suggest(
    run_dir: str,
    data: str,
    group_id: str,
    suggest: int,
    acquisition: str = "bald",
    out: str | None = None,
    *,
    group: str | None = None,
    x: str | list[str] | None = None,
    y: str | None = None,
    samples: int = 100,
    seed: int = 0,
    access: dict | None = None,
    cost: str | None = None,
) -> dict:
    """Ask/tell active learning on one group of a CSV (``bayesmeta active --data --suggest``).

    The rows of group ``group_id`` with a ``y`` are the support set, in the data's own
    units; its rows with an empty ``y`` cell are the candidates. The run adapts to the
    support (:meth:`Fitted.active <bayesmeta.fitted.Fitted.active>`) and ranks the
    candidates by ``acquisition``; the ``suggest`` best (greedy top-N) are returned, best
    first, each with its line in the file (the header is line 1), its x and its score. Fill
    in their ``y`` and call again: the told rows are read back from the file. ``group``,
    ``x``, ``y`` default to the columns the run was fitted with. ``out`` (``.csv`` or
    ``.json``) is written only once everything is computed. ``cost`` names a column holding
    each candidate's price of labelling: the candidates are then ranked by score per unit
    cost (:meth:`ActiveLoop.suggest <bayesmeta.evaluate.loop.ActiveLoop.suggest>`).
    """
    import warnings

    import jax
    import numpy as np

    from bayesmeta.evaluate.active import ACQUISITIONS
    from bayesmeta.fitted import Fitted

    if out is not None:
        check_out_file(out)
        if Path(out).suffix.lower() not in (".csv", ".json"):
            raise UsageError(f"--out: expected a .csv or .json path, got {str(out)!r}")
    if acquisition not in ACQUISITIONS:
        raise UsageError(f"--acquisition: expected one of {list(ACQUISITIONS)} with --suggest, "
                         f"got {acquisition!r}")  # fmt: skip
    for arg, value in (("--suggest", suggest), ("--samples", samples)):
        check_positive(arg, value)
    spec, method, state, payload = load_run(run_dir, **(access or {}))
    entry = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    group = group if group is not None else entry.get("group")
    x = x if x is not None else entry.get("x")
    y = y if y is not None else entry.get("y")
    for flag, value in (("--group", group), ("--x", x), ("--y", y)):
        if not value:
            raise UsageError(f"{flag}: required (the run in {str(run_dir)!r} records no CSV "
                             "columns to default to)")  # fmt: skip
    xs = [c for c in x.split(",") if c] if isinstance(x, str) else list(x)
    fam = spec.family
    if len(xs) != fam.dx:
        raise UsageError(f"--x: the run's model {spec.name!r} takes Dx={fam.dx} feature "
                         f"column(s), got {len(xs)}: {xs}")  # fmt: skip
    if not fam.likelihood.classifier and fam.dy != 1:
        raise UsageError(f"--y: one target column, but the run's model {spec.name!r} has "
                         f"Dy={fam.dy}")  # fmt: skip
    rows = _ask_tell_rows(data, xs, y, group, str(group_id), fam.likelihood.classifier, cost)
    p = len(rows["lines_candidates"])
    if p == 0:
        raise UsageError(f"--group-id: group {group_id!r} has no candidate rows (rows whose {y!r} "
                         f"cell is empty) in {str(data)!r}")  # fmt: skip
    if suggest > p:
        raise UsageError(f"--suggest: expected at most the {p} candidate rows of group "
                         f"{group_id!r}, got {suggest}")  # fmt: skip
    fitted = Fitted(spec, method, state)
    with warnings.catch_warnings():  # a particle/grid posterior ignores --samples; that's fine
        warnings.simplefilter("ignore", UserWarning)
        loop = fitted.active(rows["x_support"], rows["y_support"], rows["x_candidates"],
                             acquisition, key=jax.random.PRNGKey(seed),
                             num_samples=samples)  # fmt: skip
    try:
        idx = loop.suggest(suggest, cost=rows["costs"])
    except ValueError as err:  # scores a cost cannot divide: name the flag
        raise UsageError(f"--{err}") from None
    scores = loop.scores
    suggestions = [
        {
            "rank": r + 1,
            "line": int(rows["lines_candidates"][i]),
            "x": {c: float(v) for c, v in zip(xs, rows["x_candidates"][i], strict=True)},
            "score": _finite_or_none([scores[i]])[0],
            **({} if rows["costs"] is None else {"cost": float(rows["costs"][i])}),
        }
        for r, i in enumerate(np.asarray(idx).tolist())
    ]
    report = {
        "run_dir": str(run_dir),
        "data": str(data),
        "group": group,
        "group_id": str(group_id),
        "x_columns": xs,
        "y_column": y,
        "acquisition": acquisition,
        "cost_column": cost,
        "method": method.name,
        "model": spec.name,
        "support_size": int(len(rows["lines_support"])),
        "support_lines": [int(v) for v in rows["lines_support"]],
        "candidates": p,
        "samples": int(samples),
        "seed": int(seed),
        "suggestions": suggestions,
    }
    if out is not None:
        _write_suggestions(out, report)
    return report


__all__ = [
    "active",
    "active_run",
    "active_suggest",
    "evaluate_run",
    "linear_baselines",
    "load_tasks_for",
    "make_data_tasks",
    "make_tasks",
    "to_data_units",
]
