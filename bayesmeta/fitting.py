"""The one fit path: a :class:`Run` says what is fitted, :func:`fit_run` fits or resumes it.

``bayesmeta fit``, :func:`bayesmeta.fit`, :meth:`ModelSpec.fit`, the benchmark and the main
job all call :func:`fit_run`; the run directory it writes (when given ``out``) is written by
:mod:`bayesmeta.rundir` alone, so a run saved from a notebook and one fitted on the command
line are the same files.

    run = Run("sinusoid", "bmaml", steps=2000, seed=0)
    fitted = fit_run(run, out="runs/bmaml")          # or resume=True to continue it

θ is initialised from ``PRNGKey(seed)`` split in two (initialisation, training stream), so the
same run gives the same θ on any machine of the same platform.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bayesmeta.checkpoint import BEST_NAME, CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME, as_json
from bayesmeta.datamodels import as_spec
from bayesmeta.errors import UsageError, check_out_dir
from bayesmeta.fitted import Fitted
from bayesmeta.inference.base import Method
from bayesmeta.inference.registry import trainable
from bayesmeta.modelfiles import builtin_models, source_sha256
from bayesmeta.recipes import TRAIN_KEYS, manifest_config
from bayesmeta.rundir import (
    DATA_NAME,
    DataRef,
    check_best,
    data_entry,
    load_run,
    prepare_run_dir,
    run_dir_lock,
    write_run,
    write_run_json,
)
from bayesmeta.zoo import ModelSpec

#: The files of a run; ``--force`` removes them all, so nothing of an old run outlives it.
RUN_FILES = (CHECKPOINT_NAME, BEST_NAME, LEGACY_CHECKPOINT_NAME, "run.json", DATA_NAME)
#: Manifest fields a resumed run must share with the command that resumes it.
RESUME_KEYS = ("model_source", "model_sha256", "method", "seed", "budget", "task_streams", "data")
#: Validation tasks per batch of a data run: memory stays flat in the number of groups.
VALIDATION_BATCH = 256
#: A data fit keeps its empirical-Bayes start unless a later state beats it on the validation
#: groups by more than this many paired standard errors (the one-standard-error rule;
#: :func:`bayesmeta.inference.train.train`'s ``start_margin_se``).
START_MARGIN_SE = 1.0


@dataclass(frozen=True)
class Run:
    """Everything that determines a fitted θ.

    Parameters
    ----------
    model : str, Path, ModelSpec, NumPyro model function or HierarchicalModel
        A built-in model's name or a model file; with ``data``, ``"linear"``, ``"mlp"``, a
        NumPyro model function or a HierarchicalModel sized from the data.
    method : str
        A registered method or ``"reference"`` (nothing to train).
    data : DataRef, str, Rows or Splits, optional
        Grouped data: a file (:class:`~bayesmeta.rundir.DataRef`), a built-in data set's
        name, or rows / splits held in memory.
    budget : {"default", "full", "quick"}
    steps : int, optional
        Meta-training steps (default: the recipe's).
    seed : int
    config : mapping
        Recipe overrides (``lr``, ``max_seconds``, ``inner_steps``, ...); None values are
        skipped, a misspelt name is a ``ConfigError``.
    task_streams : int, optional
        Draw each meta-batch as this many independent streams (distributed training).
    optimizer : optax.GradientTransformation, optional
        Replaces the recipe's Adam.
    """

    model: Any
    method: str
    data: Any = None
    budget: str = "default"
    steps: int | None = None
    seed: int = 0
    config: Mapping[str, Any] = field(default_factory=dict)
    task_streams: int | None = None
    optimizer: Any = None

    def __post_init__(self):
        config = dict(self.config)
        if "steps" in config:  # one home for the step count
            if self.steps is not None and config["steps"] != self.steps:
                raise ValueError(f"steps: given twice ({self.steps} and config "
                                 f"steps={config['steps']})")  # fmt: skip
            object.__setattr__(self, "steps", config.pop("steps"))
        object.__setattr__(self, "config", config)

    @functools.cached_property
    def spec(self) -> ModelSpec:
        """The model and its tasks."""
        if isinstance(self.data, DataRef):
            if isinstance(self.model, str):
                return as_spec(self.model, self.data.splits())
            # a model of the user's own reads the rows as its observation site needs them
            return as_spec(self.model, self.data.rows(), split_seed=self.data.split_seed)
        return as_spec(self.model, self.data)

    def settings(self) -> dict[str, Any]:
        """The resolved recipe as one flat dict (training keys and the method's options)."""
        return self.spec.recipe(self.method, self.budget, steps=self.steps, **self.config)

    @functools.cached_property
    def built(self) -> tuple[Method, dict[str, Any]]:
        """``(Method, training settings)``: built once per Run, so that a caller fitting several
        seeds of one Run's method (:func:`fit_run`'s ``method``) compiles once."""
        return self.spec.build(self.method, self.budget, optimizer=self.optimizer,
                               steps=self.steps, **self.config)  # fmt: skip

    def model_kind(self) -> str:
        """``builtin``, ``file``, ``data`` or ``object`` (:mod:`bayesmeta.rundir`)."""
        source = self.spec.source
        if isinstance(self.model, str | Path) and self.data is not None:
            return "data"
        if source and self.data is None:
            if source in builtin_models():
                return "builtin"
            if Path(source).is_file():
                return "file"
        return "object"

    def manifest(self) -> dict[str, Any]:
        """The run's identity as JSON: what every checkpoint and ``run.json`` records and what
        :func:`~bayesmeta.rundir.load_run` rebuilds the method from."""
        from bayesmeta.checkpoint import file_sha256

        spec, kind = self.spec, self.model_kind()
        method, _ = self.built
        name = getattr(self.model, "__name__", None) or spec.name
        out = {
            "model_source": spec.source if kind != "object" else name,
            "model_kind": kind,
            # the hash of the bytes that were executed (read once: load_model_spec); a spec
            # not made by load_model_spec (dataclasses.replace drops it) hashes the file
            "model_sha256": (source_sha256(spec) or file_sha256(spec.source))
            if kind == "file"
            else None,
            "model_name": spec.name,
            "method": self.method,
            "settings": as_json(self.settings()),
            "method_config": method.config.to_dict() if trainable(self.method) else None,
            "seed": int(self.seed),
            "budget": self.budget,
            "task_streams": int(self.task_streams or 1),
            "optimizer": "recipe" if self.optimizer is None else "custom",
        }
        if self.data is not None:
            out["data"] = data_entry(self.data)
            if spec.splits is not None:
                out["scaler"] = spec.splits.scaler.to_json()
        return out


def check_run_dir(
    out: str | Path, *, resume: bool = False, force: bool = False, resumable: bool = True
) -> list[str]:
    """Refuse a run directory that cannot take a new run, before any work: a path under a
    file, a run already there (unless ``resume`` continues it or ``force`` replaces it), or
    ``resume`` with nothing to continue. Returns the run files already there; ``resumable``
    False for a fit that cannot resume (a search, ``auto``) drops that hint."""
    out_dir = Path(out)
    check_out_dir(out_dir)
    if resume and force:
        raise UsageError("--force: replaces the run in RUN_DIR, --resume continues it; pick one")
    if resume and not out_dir.is_dir():
        raise UsageError(f"--resume: no run directory at {str(out_dir)!r} to continue")
    held = [n for n in RUN_FILES if (out_dir / n).exists()]
    if held and not (resume or force):
        raise UsageError(
            f"--out: {str(out_dir)!r} already holds a run ({', '.join(held)}); pass "
            + ("--resume to continue it or " if resumable else "")
            + "--force to replace it"
        )
    return held


def fit_run(
    run: Run,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    validate: bool | None = None,
    validator: Callable[[Method], Callable] | None = None,
    validate_every: int = 1,
    mesh: Any = None,
    progress: bool | None = None,
    method: Method | None = None,
    sampler: Callable | None = None,
) -> Fitted:
    """Fit ``run`` (or, with ``resume``, continue the run in ``out``) and return a
    :class:`~bayesmeta.fitted.Fitted` whose ``state`` is the best validated state when the fit
    validated, else the last one; ``Fitted.result`` is the training's
    :class:`~bayesmeta.inference.train.TrainResult`.

    Parameters
    ----------
    out : path, optional
        The run directory: checkpoints every few chunks, ``best.npz`` when validating,
        ``run.json`` at the end (:mod:`bayesmeta.rundir`). A directory that already holds a
        run is refused unless ``resume`` (continue it: same model, method, settings and seed;
        reproduces the uninterrupted run) or ``force`` (replace it).
        The directory's lock (``RUN_DIR/.lock``) is held from the checks of the directory
        to the last file written: a second command writing it is refused.
    validate : bool, optional
        Score held-out validation tasks after every ``validate_every``-th chunk and keep the
        best state. Default: when the model has validation tasks of its own (data, a family
        with a ``validation_family``). Data runs score one task per validation group;
        synthetic families their validation stream (:meth:`ModelSpec.validator`).
    validator : ``Method -> (state -> score)``, optional
        Replaces the default validation score (implies ``validate``).
    mesh : jax.sharding.Mesh, optional
        Shard each meta-batch over this mesh (:func:`bayesmeta.parallel.task_mesh`).
    method, sampler : optional
        The run's built method (``run.built[0]``) and an episode sampler already compiled
        against, for a caller fitting many seeds of one method (one compilation).
    """
    from bayesmeta.parallel import is_primary

    out_dir = Path(out) if out is not None else None
    held: list[str] = []
    if out_dir is not None:
        held = check_run_dir(out_dir, resume=resume, force=force)
    elif resume or force:
        raise UsageError("resume, force: they act on a run directory; pass out=")
    spec = run.spec
    if method is None:
        method, cfg = run.built
    else:
        cfg = run.built[1]
        if method.name != run.method:
            raise ValueError(f"method: expected the run's {run.method!r}, got {method.name!r}")
    settings = run.settings()
    manifest = run.manifest()
    if run.task_streams is not None and trainable(run.method):
        mb = settings["meta_batch"]
        if mb % run.task_streams:
            raise UsageError(
                f"--task-streams: expected a divisor of the recipe's meta_batch={mb}, "
                f"got {run.task_streams}"
            )
    if validate is None:
        validate = validator is not None or spec.validation_family is not None
    elif validate and validator is None and spec.splits is None and trainable(run.method):
        try:
            spec.held_out("validation", 1, 1, 1)
        except ValueError as err:
            raise UsageError(f"--validate: {err}") from None
    if validate and validator is None and trainable(run.method):
        validator = default_validator(spec, cfg, run.seed)
    elif not validate:
        validator = None
    with contextlib.ExitStack() as stack:
        if out_dir is not None and is_primary():
            stack.enter_context(run_dir_lock(out_dir, "--out"))
            held = check_run_dir(out_dir, resume=resume, force=force)  # written since?
        return _fit_locked(run, out_dir, manifest, held, resume, force, validator,
                           validate_every, mesh, progress, method, cfg, sampler)  # fmt: skip


def _fit_locked(run, out_dir, manifest, held, resume, force, validator, validate_every, mesh,
                progress, method, cfg, sampler) -> Fitted:  # fmt: skip
    """:func:`fit_run` once its arguments are checked and the run directory's lock is held."""
    from bayesmeta.inference.train import TrainResult, train
    from bayesmeta.parallel import is_primary

    spec, settings = run.spec, run.settings()
    prior: dict[str, list] = {}
    best_validation, resume_from, train_s0 = math.inf, None, 0.0
    # the run directory's identity, shared by its checkpoints and best.npz (a fit without a
    # directory has none: Fitted.save gives the run one)
    run_id = uuid.uuid4().hex if out_dir is not None else None
    if resume and trainable(run.method) and held:
        resume_from, prior, best_validation, train_s0, run_id = _resume_point(
            run, out_dir, manifest
        )
    if run_id is not None:
        manifest = {**manifest, "run_id": run_id}
    if held and force and is_primary():  # every argument checked: replace the old run
        for n in RUN_FILES:
            (out_dir / n).unlink(missing_ok=True)
    if out_dir is not None and is_primary():
        manifest = prepare_run_dir(out_dir, manifest, spec.splits)
    k_init, k_train = jax.random.split(jax.random.PRNGKey(run.seed))
    state = method.init(k_init)
    t0 = time.perf_counter()
    res = None
    if trainable(run.method):
        steps = cfg["steps"]
        if resume_from is not None:
            state, k_train = resume_from
            steps = cfg["steps"] - int(state.step)
        if steps <= 0:
            res = TrainResult(state, k_train, {k: np.asarray(v) for k, v in prior.items()},
                              0.0, 0.0)  # fmt: skip
        else:
            sample = sampler or _sampler(spec, cfg, run.task_streams, mesh)
            res = train(
                method,
                state,
                sample,
                k_train,
                steps,
                chunk_size=cfg["chunk_size"],
                max_seconds=cfg["max_seconds"],
                run_dir=out_dir,
                checkpoint_extra=manifest,
                progress=progress,
                desc=f"{spec.name}/{run.method}",
                mesh=mesh,
                validate=validator(method) if validator is not None else None,
                best_validation=best_validation,
                validate_every=validate_every,
                prior_history=prior,
                # a data fit keeps its best validated state when a later step diverges
                on_divergence="stop",
                # the start is a candidate too: a data model's θ starts at the closed-form
                # empirical-Bayes fit, which training may only move away from; a later state
                # replaces it only when it is better on the validation groups by more than a
                # paired standard error (a few dozen groups' lowest score is often noise)
                validate_start=True,
                start_margin_se=START_MARGIN_SE,
            )
        state = res.state
    info = _record(run, manifest, settings, state, res, time.perf_counter() - t0 + train_s0)
    best = res.best_state if res is not None and res.best_state is not None else None
    if out_dir is not None and is_primary():
        if not trainable(run.method):
            write_run(out_dir, manifest, state, k_train, info)
        else:
            write_run_json(out_dir, info)
    return Fitted(spec, method, best if best is not None else state, info, manifest, res)


def _record(run: Run, manifest: dict, settings: dict, state, res, seconds: float) -> dict:
    """``run.json``: the manifest's identity, the settings, the history and the seconds."""
    import bayesmeta

    history = {k: np.asarray(v).tolist() for k, v in res.history.items()} if res else {}
    info: dict[str, Any] = {
        "model": run.spec.name,
        "model_source": manifest["model_source"],
        "model_kind": manifest["model_kind"],
        "method": run.method,
        "budget": run.budget,
        "seed": int(run.seed),
        "steps": int(state.step),
        "settings": settings,
        "method_config": manifest["method_config"],
        "optimizer": manifest["optimizer"],
        "train_seconds": seconds,
        "compile_seconds": res.compile_seconds if res is not None else 0.0,
        "history": history,
        "task_streams": manifest["task_streams"],
        "processes": jax.process_count(),
        "max_seconds": settings.get("max_seconds"),
        "bayesmeta_version": bayesmeta.__version__,
        "jax_version": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }
    if "data" in manifest:
        info["data"] = manifest["data"]
    if manifest.get("run_id"):
        info["run_id"] = manifest["run_id"]
    if history.get("validation_nll"):
        scores = history["validation_nll"]
        steps = history.get("validation_step") or history["step"]
        best = min(range(len(scores)), key=scores.__getitem__)
        if history.get("best_step") and history["best_step"][-1] in steps:
            # the state training kept (under ``start_margin_se`` not always the lowest score)
            best = steps.index(history["best_step"][-1])
        info["best_step"] = int(steps[best])
        info["best_validation_nll"] = float(scores[best])
    if history.get("diverged_at"):
        info["diverged_at"] = int(history["diverged_at"][0])
    return info


def _resume_point(run: Run, out_dir: Path, manifest: dict):
    """``((state, key), history, best validation score, training seconds, run id)`` of the
    run in ``out_dir``, after checking that it is the run ``run`` describes (a run saved
    before run ids keeps none, so that its best.npz still matches)."""
    from bayesmeta.checkpoint import read_manifest
    from bayesmeta.rundir import read_run_json

    if not any((out_dir / n).exists() for n in (CHECKPOINT_NAME, LEGACY_CHECKPOINT_NAME)):
        return None, {}, math.inf, 0.0, uuid.uuid4().hex
    if not (out_dir / CHECKPOINT_NAME).exists():
        raise UsageError(
            f"--resume: {str(out_dir)!r} holds a legacy pickle checkpoint (checkpoint.pkl), "
            "which can run code when read; for a run you trust, convert it with `bayesmeta "
            "upgrade RUN_DIR`, then resume"
        )
    last = read_manifest(out_dir / CHECKPOINT_NAME)  # its identity first, before any state
    _check_same_run(run, out_dir, manifest, last)
    # the spec is this command's own: resuming runs no model file a second time
    _, _, state, payload = load_run(str(out_dir), spec=run.spec, prefer_best=False,
                                    optimizer=run.optimizer)  # fmt: skip
    _check_same_run(run, out_dir, manifest, payload)
    step0 = int(state.step)
    old = payload.get("history") or {}
    # validation entries carry their own steps (``validate_every``); older runs scored every
    # chunk, so theirs are the chunks' steps
    chunk_steps = old.get("step", [])
    val_steps = old.get("validation_step", chunk_steps)
    prior = {}
    for name, values in old.items():
        if name == "validation_start_per_task":  # per validation group, not per step
            prior[name] = list(values)
            continue
        if name in ("best_step", "diverged_at"):  # a step of their own
            prior[name] = [s for s in values if s <= step0]
            continue
        at = val_steps if name.startswith("validation") else chunk_steps
        prior[name] = [x for x, s in zip(values, at, strict=True) if s <= step0]
    best = math.inf
    if (out_dir / BEST_NAME).exists():
        best_manifest = read_manifest(out_dir / BEST_NAME)
        check_best(str(out_dir), best_manifest, last)
        score = best_manifest.get("validation_nll", math.inf)
        best = float(score) if isinstance(score, int | float) else math.inf
    seconds = float(prior["seconds"][-1]) if prior.get("seconds") else 0.0
    record = read_run_json(out_dir)
    if not prior.get("seconds") and isinstance(record.get("train_seconds"), int | float):
        seconds = float(record["train_seconds"])
    run_id = payload.get("run_id") if isinstance(payload.get("run_id"), str) else None
    return (state, jax.numpy.asarray(payload["key"])), prior, best, seconds, run_id


def _check_same_run(run: Run, out_dir: Path, manifest: dict, payload: dict) -> None:
    """Refuse to resume a run directory that holds another run than ``run``."""
    settings = run.settings()
    where = f"the run in {str(out_dir)!r}"
    for k in RESUME_KEYS:
        want, have = manifest.get(k), payload.get(k, 1 if k == "task_streams" else None)
        if k == "data" and isinstance(want, dict) and isinstance(have, dict):
            # a saved copy's hash is known only once written; the file's identity is its own
            want = {a: b for a, b in want.items() if a != "sha256" or "saved" not in want}
            have = {a: b for a, b in have.items() if a != "sha256" or "saved" not in have}
        if have != want and not (k == "data" and want is None):
            raise UsageError(f"--resume: {where} has {k}={have!r}, this command asks for "
                             f"{want!r}")  # fmt: skip
    if not isinstance(payload.get("settings"), dict):
        return  # load_run names the corrupt field
    old_train = {k: payload["settings"].get(k) for k in TRAIN_KEYS}
    new_train = {k: settings.get(k) for k in TRAIN_KEYS}
    if old_train != new_train:
        raise UsageError(f"--resume: {where} was trained with {old_train}, this command asks "
                         f"for {new_train}")  # fmt: skip
    old_config = manifest_config(payload) if payload.get("method") == run.method else None
    if old_config is not None and old_config != run.built[0].config:
        raise UsageError(f"--resume: {where} has the {run.method} options {old_config}, this "
                         f"command asks for {run.built[0].config}")  # fmt: skip


def _sampler(spec: ModelSpec, cfg: dict, task_streams: int | None, mesh):
    """The episode sampler of a recipe: one stream, or ``task_streams`` independent streams
    (:func:`bayesmeta.parallel.stream_sampler`; with a mesh, each device draws its own)."""
    if task_streams is None:
        return spec.sampler(cfg["meta_batch"], cfg["num_query"], cfg["k_power"])
    from bayesmeta.parallel import stream_sampler

    if task_streams < 1 or cfg["meta_batch"] % task_streams:
        raise ValueError(f"task_streams: expected a positive divisor of meta_batch="
                         f"{cfg['meta_batch']}, got {task_streams}")  # fmt: skip
    per_stream = spec.sampler(cfg["meta_batch"] // task_streams, cfg["num_query"], cfg["k_power"])
    return stream_sampler(per_stream, task_streams, mesh)


#: Support sizes a data run's validation averages over (those up to the recipe's k_max): a
#: new group arrives with one row as often as with five, and a choice scored at one size only
#: can lose at the others.
VALIDATION_KS = (1, 3, 5)


def default_validator(spec: ModelSpec, cfg: dict, seed: int):
    """``Method -> (state -> NLL)``: on data, one task per validation group large enough for
    the recipe's query count, its NLL per query point (standardised units) averaged over the
    support sizes :data:`VALIDATION_KS` up to ``k_max`` (the same draw of each group, its
    first K support rows), adapted in batches of :data:`VALIDATION_BATCH` groups so memory
    does not grow with the number of groups; None when no group is large enough. The returned
    function's ``per_task(state)`` gives each validation group's NLL (for paired
    comparisons). On a synthetic family, its validation stream (:meth:`ModelSpec.validator`)."""
    if spec.splits is None:
        return spec.validator()
    import jax.numpy as jnp

    from bayesmeta.tasks.base import Support, sample_batch
    from bayesmeta.tasks.grouped import eligible_groups

    k, nq = min(max(VALIDATION_KS), spec.k_range[1]), int(cfg["num_query"])
    ks = sorted({min(kk, k) for kk in VALIDATION_KS})
    num = int(eligible_groups(np.asarray(spec.splits.validation.lengths), k, nq).size)
    if num == 0:
        return None
    fam = spec.validation_family or spec.family
    batch = sample_batch(fam, jax.random.PRNGKey(seed + 1), num, (k, k), nq)[0]
    size = min(num, VALIDATION_BATCH)
    pad = -num % size

    def chunks(a):  # (num, ...) -> (num + pad) / size chunks of one shape (one compilation)
        a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, 0)]) if pad else a
        return a.reshape(-1, size, *a.shape[1:])

    xs, ys = chunks(batch.x_support), chunks(batch.y_support)
    first = jnp.arange(k)[None, :]
    masks = [chunks(batch.mask_support * (first < kk).astype(batch.mask_support.dtype))
             for kk in ks]  # fmt: skip
    xq, yq = chunks(batch.x_query), chunks(batch.y_query)
    n_query = int(np.prod(batch.y_query.shape[1:2]))

    def make(method: Method):
        @jax.jit
        def score(state, x, y, m, x_q, y_q):
            post = method.adapt(jax.random.PRNGKey(0), state, Support(x, y, m), 50)
            return post.log_predictive(x_q, y_q)

        def per_task(state) -> np.ndarray:
            out = np.zeros(xs.shape[0] * size)
            for ms in masks:
                lps = [score(state, xs[i], ys[i], ms[i], xq[i], yq[i]) for i in range(xs.shape[0])]
                lp = np.concatenate([np.asarray(a).reshape(size, -1) for a in lps])
                out += -lp.sum(1) / n_query
            return out[:num] / len(masks)

        def validate(state):
            return float(per_task(state).mean())

        validate.per_task = per_task
        return validate

    return make


def join_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    task_streams: int | None = None,
):
    """Join JAX's distributed runtime (:func:`bayesmeta.parallel.initialize_distributed`:
    the arguments, their environment variables or cluster detection) and return ``(mesh,
    task_streams)``: every process's devices, and the streams per meta-batch (default one per
    device; a multiple of the device count)."""
    from bayesmeta.parallel import initialize_distributed, task_mesh

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
        raise UsageError(f"--task-streams: expected a multiple of the {mesh.devices.size} "
                         f"devices of the mesh, got {task_streams}")  # fmt: skip
    return mesh, task_streams


__all__ = ["Run", "check_run_dir", "default_validator", "fit_run", "join_distributed"]
