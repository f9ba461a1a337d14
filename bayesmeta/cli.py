"""The ``bayesmeta`` command: fit, evaluate, active, tasks, run (see DESIGN.md section 4).

Errors in the input exit with status 2 and one line on stderr naming the problem; no partial
output file is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import numbers
import os
import sys
import time
from pathlib import Path

from bayesmeta.atomic import save_npz, write_text
from bayesmeta.runs import DataRef, load_run

CLI_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError)
SEED_LIMIT = 2**32  # jax.random.PRNGKey folds larger seeds onto others


class UsageError(ValueError):
    """Bad input on the command line."""


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


def _check_out_file(path: str, arg: str = "--out") -> None:
    """Refuse an output file path that can never be written, before any work is done."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{arg}: expected a file path, got the existing directory {path!r}")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(
                    f"{arg}: expected a file path in a directory, but {str(parent)!r} in "
                    f"{path!r} is a file"
                )
            break


def _check_out_dir(path: str, arg: str = "--out") -> None:
    """Refuse an output directory path that is an existing file (or lies under one)."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                raise UsageError(
                    f"{arg}: expected a directory, but {str(q)!r} in {path!r} is a file"
                )
            break


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


def _check_positive(arg: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UsageError(f"{arg}: expected a positive integer, got {value!r}")


@contextlib.contextmanager
def _progress(total: int, desc: str, quiet: bool):
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


def _load_tasks_for(spec, tasks: str) -> dict:
    """Read a task file and check it against a model: Dx, Dy (regression) or the number of
    classes (classification)."""
    from bayesmeta.tasks.io import TaskFileError, load_tasks

    model = spec.model
    try:
        if model.likelihood == "categorical":
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


# -- run directories ----------------------------------------------------------------------------
def fit(
    model: str,
    method_name: str,
    out: str,
    steps: int | None = None,
    seed: int = 0,
    budget: str = "default",
    quiet: bool = False,
    resume: bool = False,
    task_streams: int | None = None,
    distributed: bool = False,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    data: DataRef | None = None,
    max_seconds: float | None = None,
    validate: bool = False,
    force: bool = False,
) -> dict:
    """Meta-train ``method_name`` on ``model`` and write ``out/checkpoint.npz`` and
    ``out/run.json``. A directory that already holds a run is refused unless ``resume``
    (continue it) or ``force`` (replace it: once the arguments are checked, its checkpoints and
    ``run.json`` are removed, so no stale ``best.npz`` outlives its run). Recipes are step
    counts; ``max_seconds`` is an explicit wall-clock cap
    (recorded in ``run.json``: with it the same command may stop at a different step on
    another machine). ``validate`` scores a fixed validation task set (the family's validation
    stream, :meth:`ModelSpec.held_out`) after every chunk and keeps ``best.npz``; data runs
    always validate, on their validation groups. With ``resume``, continue the run in ``out``
    from its checkpoint (same model, method, settings and seed), reproducing the uninterrupted
    run's parameters.

    With ``distributed``, join JAX's distributed runtime first
    (:func:`bayesmeta.parallel.initialize_distributed`: ``coordinator``, ``num_processes``,
    ``process_id`` or their environment variables or cluster detection) and shard each
    meta-batch over every process's devices; ``task_streams`` (default: the device count)
    splits the batch into independently drawn streams, and the same ``task_streams`` on one
    process gives the same θ. Process 0 writes the checkpoint and ``run.json``.

    With ``data`` (the user's own grouped rows, :class:`DataRef`), ``model`` is a built-in
    data model (``linear``, ``mlp``) sized from the data; the groups are split train /
    validation / test by ``data.split_seed``, and the data file's path, SHA-256, columns and
    the training groups' standardiser are recorded in the run.
    """
    from math import inf

    import jax

    from bayesmeta.checkpoint import (
        BEST_NAME,
        CHECKPOINT_NAME,
        as_json,
        file_sha256,
        load_checkpoint,
        save_checkpoint,
    )
    from bayesmeta.parallel import initialize_distributed, is_primary, task_mesh
    from bayesmeta.zoo import TRAIN_KEYS, builtin_models, load_model_spec, manifest_config

    _check_out_dir(out)
    run_files = [Path(out) / n for n in (CHECKPOINT_NAME, BEST_NAME, "checkpoint.pkl", "run.json")]
    if resume and force:
        raise UsageError("--force: replaces the run in RUN_DIR, --resume continues it; pick one")
    held = [f.name for f in run_files if f.exists()]
    if held and not (resume or force):
        raise UsageError(
            f"--out: {out!r} already holds a run ({', '.join(held)}); pass --resume to "
            "continue it or --force to replace it"
        )
    mesh = None
    distributed = distributed or any(
        v is not None for v in (coordinator, num_processes, process_id)
    )
    if distributed:
        try:
            initialize_distributed(coordinator, num_processes, process_id)
        except (RuntimeError, ValueError) as err:
            raise UsageError(
                f"--distributed: could not join the distributed runtime "
                f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
            ) from None
        mesh = task_mesh()
        task_streams = task_streams or mesh.devices.size
        if task_streams % mesh.devices.size:
            raise UsageError(
                f"--task-streams: expected a multiple of the {mesh.devices.size} devices "
                f"of the mesh, got {task_streams}"
            )
    if data is not None:
        spec, splits = data.spec(model)
    else:
        spec = load_model_spec(model)
    method, cfg = spec.build(method_name, budget, steps=steps, max_seconds=max_seconds)
    out_dir = Path(out)
    settings = spec.recipe(method_name, budget, steps=steps, max_seconds=max_seconds)
    if validate and data is None:
        try:
            spec.held_out("validation", 1, 1, 1)
        except ValueError as err:
            raise UsageError(f"--validate: {err}") from None
    model_file = data is None and spec.source not in builtin_models()
    extra = {
        "model_source": spec.source,
        "model_sha256": file_sha256(spec.source) if model_file else None,
        "model_name": spec.name,
        "settings": as_json(settings),
        "method_config": None if method_name == "reference" else method.config.to_dict(),
        "seed": seed,
        "budget": budget,
        "task_streams": task_streams or 1,
    }
    if data is not None:
        extra["data"] = data.manifest()
        extra["scaler"] = splits.scaler.to_json()
    if task_streams is not None:
        mb = method_name != "reference" and settings["meta_batch"]
        if mb and mb % task_streams:
            raise UsageError(
                f"--task-streams: expected a divisor of the recipe's meta_batch={mb}, "
                f"got {task_streams}"
            )
    if held and force and is_primary():  # every argument checked: replace the old run
        for f in run_files:
            f.unlink(missing_ok=True)
    key_init, key_train = jax.random.split(jax.random.PRNGKey(seed))
    state = method.init(key_init)
    t0 = time.perf_counter()
    history: dict[str, list] = {}
    if method_name == "reference":
        if is_primary():
            save_checkpoint(
                out_dir / CHECKPOINT_NAME,
                {**extra, "method": "reference", "state": state, "key": key_train, "step": 0},
            )
    else:
        resume_from, prior_history, best_validation = None, {}, float("inf")
        # a legacy pickle is refused by load_run (not silently trained over)
        if resume and any((out_dir / n).exists() for n in (CHECKPOINT_NAME, "checkpoint.pkl")):
            _, _, old_state, payload = load_run(
                str(out_dir), model=model if model_file else None, prefer_best=False
            )
            old_train = {k: payload["settings"].get(k) for k in TRAIN_KEYS}
            if old_train != {k: settings.get(k) for k in TRAIN_KEYS}:
                raise UsageError(
                    f"--resume: the run in {out!r} was trained with {old_train}, this command "
                    f"asks for { {k: settings.get(k) for k in TRAIN_KEYS} }"
                )
            if manifest_config(payload) != method.config:
                raise UsageError(
                    f"--resume: the run in {out!r} has the {method_name} options "
                    f"{manifest_config(payload)}, this command asks for {method.config}"
                )
            for k in (
                "model_source",
                "method",
                "seed",
                "budget",
                "task_streams",
                "data",
            ):
                want = method_name if k == "method" else extra.get(k)
                if payload.get(k, 1 if k == "task_streams" else None) != want and not (
                    k == "data" and want is None
                ):
                    raise UsageError(
                        f"--resume: the run in {out!r} has {k}={payload.get(k)!r}, "
                        f"this command asks for {want!r}"
                    )
            resume_from = (old_state, jax.numpy.asarray(payload["key"]))
            # The run so far: its chunks' history up to the checkpoint, and the best
            # validation score that a new best.npz must beat.
            step0 = int(old_state.step)
            old_hist = payload.get("history") or {}
            # validation entries carry their own steps (``validate_every``); older runs
            # scored every chunk, so theirs are the chunks' steps
            chunk_steps = old_hist.get("step", [])
            val_steps = old_hist.get("validation_step", chunk_steps)
            prior_history = {}
            for name, values in old_hist.items():
                at = val_steps if name.startswith("validation") else chunk_steps
                prior_history[name] = [x for x, s in zip(values, at, strict=True) if s <= step0]
            best_path = out_dir / BEST_NAME
            if best_path.exists():
                best_validation = float(load_checkpoint(best_path).get("validation_nll", inf))
        _, res = spec.fit(
            method_name,
            budget,
            seed,
            progress=False if quiet else None,
            run_dir=out_dir,
            checkpoint_extra=extra,
            resume=resume_from,
            steps=steps,
            max_seconds=max_seconds,
            mesh=mesh,
            task_streams=task_streams,
            validate=_validation_nll(spec, splits.validation, cfg, seed)
            if data
            else (spec.validator() if validate and method_name != "reference" else None),
            best_validation=best_validation,
        )
        state = res.state
        history = {k: list(prior_history.get(k, [])) + v.tolist() for k, v in res.history.items()}
    info = {
        "model": spec.name,
        "model_source": spec.source,
        "method": method_name,
        "budget": budget,
        "seed": seed,
        "steps": int(state.step),
        "settings": settings,
        "method_config": extra["method_config"],
        "train_seconds": time.perf_counter() - t0,
        "history": history,
        "task_streams": task_streams or 1,
        "processes": jax.process_count(),
        "max_seconds": settings.get("max_seconds"),
    }
    if history.get("validation_nll"):
        best = min(range(len(history["validation_nll"])), key=history["validation_nll"].__getitem__)
        info["best_step"] = (history.get("validation_step") or history["step"])[best]
        info["best_validation_nll"] = history["validation_nll"][best]
    if is_primary():
        write_text(out_dir / "run.json", json.dumps(info, indent=2, default=str))
    return info


def run_info(run_dir: str | None = None, access: dict | None = None) -> dict:
    """Versions of Python and the numerical stack, JAX's devices, and (with ``run_dir``) the
    run's model, method, seed, step and settings."""
    import importlib.metadata as md
    import platform

    import jax

    out: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {},
        "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()],
    }
    for pkg in ("bayesmeta", "jax", "jaxlib", "numpyro", "optax", "arviz", "numpy", "matplotlib"):
        try:
            out["versions"][pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out["versions"][pkg] = None
    if run_dir is not None:
        _, _, state, payload = load_run(run_dir, **(access or {}))
        out["run"] = {
            k: payload.get(k) for k in ("model_name", "model_source", "method", "seed", "budget")
        }
        out["run"]["step"] = int(state.step)
        out["run"]["settings"] = payload.get("settings")
    return out


def evaluate(
    run_dir: str,
    tasks: str,
    out: str,
    samples: int = 1000,
    predictive: str | None = None,
    seed: int = 0,
    quiet: bool = False,
    access: dict | None = None,
) -> dict:
    """Adapt a fitted run to the support sets of a task file and score the query sets.

    Both outputs (``out`` and ``predictive``) are written only once everything is computed,
    so a failure leaves neither behind."""
    import jax
    import jax.numpy as jnp

    from bayesmeta.evaluate import evaluate as score
    from bayesmeta.evaluate import predictive_arrays
    from bayesmeta.tasks.base import Support

    _check_out_file(out)
    if predictive:
        _check_out_file(predictive, "--predictive")
        if Path(predictive).resolve() == Path(out).resolve():
            raise UsageError(f"--predictive: expected a path other than --out, got {predictive!r}")
    _check_positive("--samples", samples)
    spec, method, state, payload = load_run(run_dir, **(access or {}))
    data = _load_tasks_for(spec, tasks)
    # a run on the user's own data works in its training groups' standardised units; the
    # task file and every reported number are in the data's own units
    scaler = None
    if isinstance(payload.get("scaler"), dict):
        from bayesmeta.tasks.data import Standardizer

        scaler = Standardizer.from_json(payload["scaler"])
        y_raw = data["y_query"]
        for key in ("x_support", "x_query"):
            data[key] = scaler.transform_x(data[key]).astype("float32")
        for key in ("y_support", "y_query"):
            data[key] = scaler.transform_y(data[key]).astype(data[key].dtype)
    x_s, y_s = jnp.asarray(data["x_support"]), jnp.asarray(data["y_support"])
    support = Support(x_s, y_s, jnp.ones(x_s.shape[:2], x_s.dtype))
    k_adapt, k_pred = jax.random.split(jax.random.PRNGKey(seed))
    xq, yq = jnp.asarray(data["x_query"]), jnp.asarray(data["y_query"])
    arrays = None
    with _progress(3 if predictive else 2, f"evaluate {spec.name}/{method.name}", quiet) as bar:
        post = method.adapt(k_adapt, state, support, samples)
        bar.update(1, "adapted")
        report = score(post, xq, yq, mask_query=data.get("mask_query"))
        bar.update(2, "scored")
        if predictive:
            arrays = predictive_arrays(post, k_pred, xq, yq, samples)
            bar.update(3, "predictive")
    if scaler is not None and scaler.y_mean is not None:
        _to_data_units(report, arrays, post, xq, y_raw, data.get("mask_query"), scaler)
        if int(yq.shape[-1]) == 1:
            report["baselines"] = _linear_baselines(payload, data, scaler, report["nll_per_task"])
    report.update(
        {
            "model": spec.name,
            "k": int(x_s.shape[1]),
            "samples": samples,
            "run_dir": str(run_dir),
            "tasks": str(tasks),
        }
    )
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


def _validation_nll(spec, validation, cfg: dict, seed: int):
    """``Method -> (state -> NLL)`` on a fixed batch of the validation groups: one task per
    group large enough for the recipe's query count, support size ``min(5, k_max)``; NLL per
    query point in standardised units. None when no validation group is large enough."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bayesmeta.tasks.base import Support, sample_batch
    from bayesmeta.tasks.grouped import eligible_groups

    k, nq = min(5, spec.k_range[1]), int(cfg["num_query"])
    num = int(eligible_groups(np.asarray(validation.lengths), k, nq).size)
    if num == 0:
        return None
    fam = spec.validation_family or spec.family
    batch = sample_batch(fam, jax.random.PRNGKey(seed + 1), num, (k, k), nq)[0]
    support = Support(batch.x_support, batch.y_support, batch.mask_support)

    def make(method):
        adapt = jax.jit(method.adapt, static_argnums=3)

        def validate(state):
            post = adapt(jax.random.PRNGKey(0), state, support, 50)
            return float(-jnp.mean(post.log_predictive(batch.x_query, batch.y_query)))

        return validate

    return make


def _to_data_units(report, arrays, post, xq, y_raw, mask, scaler) -> None:
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


def _linear_baselines(payload: dict, data: dict, scaler, method_per_task=None) -> dict:
    """NLL per query point (data units) of the pooled and the per-group empirical-Bayes
    linear regressions (:mod:`bayesmeta.evaluate.baselines`), fitted on the run's training
    groups and scored on the same task file as the method: per task, with its standard error
    over tasks, and ``diff_se``, the paired standard error of the method's per-task NLL minus
    the baseline's."""
    import numpy as np

    from bayesmeta.evaluate import task_nll
    from bayesmeta.evaluate.baselines import baseline_log_predictive, fit_linear_baselines

    train = DataRef.from_manifest(payload["data"]).spec(payload["model_source"])[1].train
    real = np.arange(train.x.shape[1])[None, :] < train.lengths[:, None]
    ids = np.broadcast_to(np.arange(train.num_groups)[:, None], real.shape)[real]
    fit = fit_linear_baselines(train.x[real], train.y[real][:, 0], ids)
    xs = data["x_support"]
    lps = baseline_log_predictive(fit, xs, data["y_support"], np.ones(xs.shape[:2]),
                                  data["x_query"], data["y_query"])  # fmt: skip
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
    return out


def make_data_tasks(
    data: DataRef, split: str, out: str, k: int, seed: int, min_group_size: int | None = None
) -> int:
    """Write a task file of one split of the user's own data, in its own units: one task per
    group, ``k`` support points, the rest of the group as (masked) query points. Returns the
    number of tasks."""
    from bayesmeta.tasks.data import SPLITS, held_out_tasks
    from bayesmeta.tasks.io import save_tasks

    _check_out_file(out)
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

    from bayesmeta.tasks.base import make_task_set
    from bayesmeta.tasks.io import save_tasks
    from bayesmeta.zoo import load_model_spec

    _check_out_file(out)
    for arg, value in (("--k", k), ("--num-tasks", num_tasks), ("--queries", num_query)):
        _check_positive(arg, value)
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


def _num(v) -> str:
    return "nan" if v is None else f"{v:.4f}"


def active(
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

    _check_out_file(out)
    if acquisition != "all" and acquisition not in ACQUISITIONS:
        raise UsageError(
            f"--acquisition: expected one of {[*ACQUISITIONS, 'all']}, got {acquisition!r}"
        )
    for arg, value in (("--queries", queries), ("--samples", samples), ("--batch", batch)):
        _check_positive(arg, value)
    names = list(ACQUISITIONS) if acquisition == "all" else [acquisition]
    spec, method, state, _ = load_run(run_dir, **(access or {}))
    classification = spec.model.likelihood == "categorical"
    data = _load_tasks_for(spec, tasks)
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
    with _progress(len(names), f"active {spec.name}/{method.name}", quiet) as bar:
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


# -- argument parsing ---------------------------------------------------------------------------
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


def upgrade(run_dir: str) -> dict:
    """Convert ``RUN_DIR/checkpoint.pkl`` (format 1, a pickle) to ``checkpoint.npz``.

    Reading the pickle can run code: this is for runs you trust. The state is checked against
    its method's template before anything is written, a model file's SHA-256 is recorded
    (hashing the file as it is now), and the pickle is kept as ``checkpoint.pkl.bak``.
    """
    from bayesmeta.checkpoint import (
        CHECKPOINT_NAME,
        LEGACY_CHECKPOINT_NAME,
        as_json,
        file_sha256,
        load_legacy_checkpoint,
        save_checkpoint,
    )
    from bayesmeta.zoo import builtin_models

    path = Path(run_dir)
    if not path.is_dir():
        raise UsageError(f"RUN_DIR: expected a run directory, got {run_dir!r}")
    legacy = path / LEGACY_CHECKPOINT_NAME
    if not legacy.is_file():
        what = (
            "is already in the data-only format"
            if (path / CHECKPOINT_NAME).is_file()
            else ("has no checkpoint.pkl")
        )
        raise UsageError(f"RUN_DIR: {run_dir!r} {what}; nothing to upgrade")
    payload = load_legacy_checkpoint(legacy)
    source = payload.get("model_source")
    if isinstance(source, str) and source not in builtin_models():
        if not Path(source).is_file():
            raise UsageError(
                f"RUN_DIR: the run's model file {source!r} is gone, so its hash cannot be "
                "recorded; put it back and upgrade again"
            )
        payload["model_sha256"] = file_sha256(source)
    else:
        payload["model_sha256"] = None
    payload.pop("format_version", None)
    payload["settings"] = as_json(payload.get("settings"))
    # the state must rebuild from its method's template before the new file is written
    _, _, state, _ = load_run(run_dir, trust_model_file=True, allow_pickle=True)
    payload["state"] = state
    payload["upgraded_from"] = "checkpoint.pkl (format 1)"
    save_checkpoint(path / CHECKPOINT_NAME, payload)
    os.replace(legacy, path / (LEGACY_CHECKPOINT_NAME + ".bak"))
    return {"run_dir": run_dir, "step": int(payload.get("step", 0)), "method": payload["method"]}


def build_parser() -> argparse.ArgumentParser:
    from bayesmeta.zoo import BUDGETS, METHOD_NAMES

    p = _Parser(
        prog="bayesmeta",
        description="Probabilistic meta-learning: task posteriors from a few examples.",
    )
    from bayesmeta import __version__

    p.add_argument("--version", action="version", version=f"bayesmeta {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="meta-train a method on a model")
    f.add_argument(
        "model", metavar="MODEL", help="model file (models/sinusoid.py) or built-in name"
    )
    f.add_argument("--method", required=True, choices=METHOD_NAMES)
    f.add_argument("--steps", type=_positive("--steps"), default=None)
    f.add_argument(
        "--max-seconds",
        type=_positive("--max-seconds"),
        default=None,
        metavar="S",
        help="also stop after S seconds of training (recorded; a run stopped by it depends "
        "on the machine)",
    )
    f.add_argument(
        "--validate",
        action="store_true",
        help="score held-out validation tasks after every chunk and keep the best state "
        "(best.npz); data runs always do",
    )
    f.add_argument("--seed", type=_seed, default=0)
    f.add_argument("--budget", choices=BUDGETS, default="default")
    f.add_argument("--out", required=True, metavar="RUN_DIR")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.add_argument(
        "--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint"
    )
    f.add_argument(
        "--force",
        action="store_true",
        help="replace the run already in RUN_DIR (without it such a directory is refused)",
    )
    _add_data_args(f)
    f.add_argument(
        "--task-streams",
        type=_positive("--task-streams"),
        default=None,
        metavar="S",
        help="draw each meta-batch as S independent task streams (default with --distributed: "
        "one per device); the same S gives the same run on any number of processes",
    )
    f.add_argument(
        "--distributed",
        action="store_true",
        help="train across processes on JAX's distributed runtime (docs/distributed.md)",
    )
    f.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="process 0's address (default: JAX_COORDINATOR_ADDRESS or the cluster's)",
    )
    f.add_argument(
        "--num-processes",
        type=_positive("--num-processes"),
        default=None,
        metavar="N",
        help="default: JAX_NUM_PROCESSES or the cluster's",
    )
    f.add_argument(
        "--process-id",
        type=int,
        default=None,
        metavar="I",
        help="this process, 0..N-1 (default: JAX_PROCESS_ID or the cluster's)",
    )

    e = sub.add_parser("evaluate", help="score a fitted run on a task file")
    e.add_argument("run_dir", metavar="RUN_DIR")
    _add_access_args(e)
    e.add_argument("--tasks", required=True, metavar="FILE.npz")
    e.add_argument("--samples", type=_positive("--samples"), default=1000)
    e.add_argument("--seed", type=_seed, default=0)
    e.add_argument("--out", required=True, metavar="REPORT.json")
    e.add_argument("--predictive", default=None, metavar="PRED.npz")
    e.add_argument("--quiet", action="store_true", help="no progress bar")

    a = sub.add_parser("active", help="active learning from a pool: learning curves")
    a.add_argument("run_dir", metavar="RUN_DIR")
    _add_access_args(a)
    a.add_argument(
        "--tasks", required=True, metavar="FILE.npz", help="task file with x_pool and y_pool"
    )
    a.add_argument(
        "--acquisition",
        required=True,
        metavar="A",
        help="variance, entropy, bald, random, or all (every one, paired, into one file)",
    )
    a.add_argument("--queries", required=True, type=_positive("--queries"), metavar="N")
    a.add_argument("--batch", type=_positive("--batch"), default=1, help="labels per query")
    a.add_argument(
        "--samples",
        type=_positive("--samples"),
        default=100,
        help="posterior samples per adaptation (ignored by particle and grid methods)",
    )
    a.add_argument("--seed", type=_seed, default=0)
    a.add_argument("--out", required=True, metavar="CURVE.json")
    a.add_argument("--quiet", action="store_true", help="no progress bar")

    t = sub.add_parser(
        "tasks", help="write a held-out task file from a model's task family or your data"
    )
    t.add_argument("model", metavar="MODEL", nargs="?", default=None)
    _add_data_args(t)
    t.add_argument(
        "--split",
        choices=["train", "validation", "test"],
        default="test",
        help="with --data: whose groups become tasks",
    )
    t.add_argument(
        "--min-group-size",
        type=_positive("--min-group-size"),
        default=None,
        help="with --data: leave out groups with fewer rows (default: refuse groups < K + 1)",
    )
    t.add_argument("--k", type=_positive("--k"), default=5, help="support points per task")
    t.add_argument("--num-tasks", type=_positive("--num-tasks"), default=200)
    t.add_argument("--queries", type=_positive("--queries"), default=50)
    t.add_argument(
        "--pool",
        type=_positive("--pool"),
        default=None,
        help="also write x_pool/y_pool with this many candidates per task (active learning)",
    )
    t.add_argument("--seed", type=_seed, default=12345)
    t.add_argument("--out", required=True, metavar="FILE.npz")

    i = sub.add_parser("info", help="versions, devices, and a run's configuration")
    i.add_argument("run_dir", nargs="?", default=None, metavar="RUN_DIR")
    _add_access_args(i)

    u = sub.add_parser(
        "upgrade",
        help="convert a run you trust from the legacy pickle checkpoint to the data-only format",
    )
    u.add_argument("run_dir", metavar="RUN_DIR")

    r = sub.add_parser("run", help="the main job: ABML and MAML on the sinusoid, beside the oracle")
    r.add_argument("--out", default="bayesmeta-out", metavar="DIR")
    r.add_argument(
        "--seconds",
        type=_positive("--seconds"),
        default=None,
        help="also stop each method after S seconds of training (default: its embedded step count)",
    )
    r.add_argument("--num-tasks", type=_positive("--num-tasks"), default=200)
    r.add_argument("--seed", type=_seed, default=0)
    r.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")

    from bayesmeta.bench import BUDGETS as BENCH_BUDGETS
    from bayesmeta.bench import FAMILIES, METHODS
    from bayesmeta.zoo import METHOD_NAMES

    b = sub.add_parser("bench", help="benchmark suites (calibration of every method and family)")
    b.add_argument(
        "suite",
        choices=["calibration", "merge"],
        help="calibration: run the suite (or this shard of it); merge: join shard folders",
    )
    b.add_argument("shards", nargs="*", metavar="SHARD_DIR", help="merge: the shards' --out")
    b.add_argument(
        "--budget",
        choices=list(BENCH_BUDGETS),
        default="small",
        help="small: 6 s per run, a smoke test (under 30 minutes on 2 CPU cores); standard: "
        "step counts, 3 seeds, about 4 hours of 2-core time (shard it); classification: the "
        "few-shot classifiers on glyphs and digits, 600 test tasks, temperatures fitted on "
        "validation classes; full: the papers' steps",
    )
    b.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="run every N-th training run from the I-th (a job array's share); join the "
        "shards' folders with `bayesmeta bench merge DIR... --out DIR`",
    )
    b.add_argument(
        "--no-resume",
        action="store_true",
        help="recompute the runs whose rows are already in --out (default: skip them)",
    )
    b.add_argument("--families", nargs="+", choices=list(FAMILIES), default=None)
    b.add_argument(
        "--methods", nargs="+", choices=[m for m in METHOD_NAMES if m != "reference"],
        default=None, help=f"default: the budget's ({', '.join(METHODS)}; classification: "
        "the few-shot classifiers)",
    )  # fmt: skip
    b.add_argument("--seeds", nargs="+", type=_seed, default=None)
    b.add_argument(
        "--seconds", type=_positive("--seconds"), default=None, help="training seconds per run"
    )
    b.add_argument("--out", default="bench-out", metavar="DIR")
    b.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    return p


def _is_bad_input(err: BaseException) -> bool:
    """Whether ``err`` is bayesmeta saying the input is wrong (exit 2, one line), rather than
    a bug (exit 1, with the traceback): the error was raised by a ``raise`` statement in
    bayesmeta's own code (or argparse's), not from inside JAX, NumPy or another library, and
    not by Python itself (a wrong call, a missing key)."""
    import linecache

    if isinstance(err, UsageError | FileNotFoundError):
        return True
    tb = err.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    package = str(Path(__file__).resolve().parent)
    if not str(Path(filename).resolve()).startswith(package):
        return False
    return linecache.getline(filename, tb.tb_lineno).strip().startswith("raise")


def _report_bug(err: BaseException) -> int:
    """Print the traceback of an unexpected error and ask for a report; exit status 1."""
    import traceback

    traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    print(
        f"bayesmeta: internal error ({type(err).__name__}); this is a bug in bayesmeta or one "
        "of its dependencies, not in your input: please report it with the traceback above",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from bayesmeta.checkpoint import CheckpointError
    from bayesmeta.inference.train import DivergenceError

    try:
        if args.command == "fit":
            info = fit(
                args.model,
                args.method,
                args.out,
                args.steps,
                args.seed,
                args.budget,
                args.quiet,
                args.resume,
                args.task_streams,
                args.distributed,
                args.coordinator,
                args.num_processes,
                args.process_id,
                _data_ref(args),
                args.max_seconds,
                args.validate,
                args.force,
            )
            print(
                f"fitted {info['method']} on {info['model']}: {info['steps']} steps in "
                f"{info['train_seconds']:.1f}s -> {args.out}"
            )
        elif args.command == "evaluate":
            rep = evaluate(
                args.run_dir,
                args.tasks,
                args.out,
                args.samples,
                args.predictive,
                args.seed,
                args.quiet,
                _access(args),
            )
            keys = [k for k in ("nll", "mse", "accuracy", "calibration_error", "ece") if k in rep]
            print(" ".join(f"{k}={rep[k]:.4f}" for k in keys) + f" -> {args.out}")
        elif args.command == "tasks" and args.data is not None:
            if args.model is not None:
                raise UsageError(f"MODEL: not with --data (got {args.model!r}); the data's "
                                 "groups are the tasks")  # fmt: skip
            n = make_data_tasks(_data_ref(args), args.split, args.out, args.k, args.seed,
                                args.min_group_size)  # fmt: skip
            print(f"wrote {n} {args.split} groups as tasks (K={args.k}) -> {args.out}")
        elif args.command == "tasks":
            if args.model is None:
                raise UsageError("MODEL: expected a model file or name, or --data FILE")
            _data_ref(args)
            make_tasks(
                args.model,
                args.out,
                args.k,
                args.num_tasks,
                args.queries,
                args.seed,
                args.pool or 0,
            )
            pool = f", P={args.pool}" if args.pool else ""
            print(
                f"wrote {args.num_tasks} tasks (K={args.k}, Q={args.queries}{pool}) -> {args.out}"
            )
        elif args.command == "active":
            rep = active(
                args.run_dir,
                args.tasks,
                args.acquisition,
                args.queries,
                args.out,
                args.samples,
                args.batch,
                args.seed,
                args.quiet,
                _access(args),
            )
            for name, c in (
                rep["curves"] if "curves" in rep else {rep["acquisition"]: rep}
            ).items():
                m = "accuracy" if "accuracy" in c else "mse"
                print(
                    f"{name}: {m} {_num(c[m][0])} -> {_num(c[m][-1])}, nll {_num(c['nll'][0])}"
                    f" -> {_num(c['nll'][-1])} after {args.queries} queries"
                )
            print(f"-> {args.out}")
        elif args.command == "info":
            print(json.dumps(run_info(args.run_dir, _access(args)), indent=2, default=str))
        elif args.command == "upgrade":
            done = upgrade(args.run_dir)
            print(
                f"upgraded {done['method']} at step {done['step']}: {args.run_dir}/checkpoint.npz "
                "(the pickle is kept as checkpoint.pkl.bak)"
            )
        elif args.command == "run":
            from bayesmeta.main_job import run_main_job

            _check_out_dir(args.out)
            run_main_job(
                args.out,
                seconds=args.seconds,
                num_tasks=args.num_tasks,
                seed=args.seed,
                quiet=args.quiet,
            )
        elif args.command == "bench":
            from bayesmeta.bench import merge, parse_shard, run_calibration

            _check_out_dir(args.out)
            if args.suite == "merge":
                if not args.shards:
                    raise UsageError("SHARD_DIR: bench merge needs at least one shard folder")
                rows = merge(args.shards, args.out)
            else:
                if args.shards:
                    raise UsageError(
                        f"SHARD_DIR: only bench merge takes folders, got {args.shards}"
                    )
                try:
                    shard = parse_shard(args.shard)
                except ValueError as err:
                    raise UsageError(f"--{err}") from None
                rows = run_calibration(
                    args.budget,
                    out=args.out,
                    families=args.families,
                    methods=args.methods,
                    seeds=args.seeds,
                    seconds=args.seconds,
                    progress=False if args.quiet else None,
                    log=None if args.quiet else print,
                    shard=shard,
                    resume=not args.no_resume,
                    command="bayesmeta " + " ".join(sys.argv[1:] if argv is None else argv),
                )
            print(f"{len(rows)} rows -> {Path(args.out) / 'calibration.json'}, calibration.md")
    except DivergenceError as err:
        print(f"bayesmeta: error: {err}", file=sys.stderr)
        return 1
    except (CheckpointError, *CLI_ERRORS) as err:
        if not _is_bad_input(err):
            return _report_bug(err)
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
