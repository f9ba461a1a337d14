"""The shared meta-training loop.

Steps run in chunks of ``chunk_size`` inside one jitted ``lax.scan`` (batches are sampled
inside the scan, so nothing crosses to the host within a chunk). Between chunks the loop
syncs once: it checks that the loss is finite, updates the progress bar, and writes an atomic
checkpoint every ``checkpoint_every`` chunks. A non-finite loss stops training with
:class:`DivergenceError`; the last good checkpoint on disk is kept.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from bayesmeta.checkpoint import BEST_NAME, CHECKPOINT_NAME, save_checkpoint
from bayesmeta.inference.base import MetaState, Method
from bayesmeta.parallel import check_divisible, is_primary, replicate, shard_tasks
from bayesmeta.tasks.base import TaskBatch

Array = jax.Array


class DivergenceError(RuntimeError):
    """Meta-training produced a non-finite loss or parameters."""


class TrainResult(NamedTuple):
    state: MetaState
    key: Array
    history: dict[str, np.ndarray]
    seconds: float
    compile_seconds: float
    #: the state with the lowest validation NLL (with ``validate``), else None
    best_state: MetaState | None = None


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (where stderr is not a terminal but a bar still shows)."""
    shell = sys.modules.get("IPython")
    try:
        ip = shell.get_ipython() if shell is not None else None
    except Exception:  # an IPython without a running shell
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class ProgressBar:
    """Progress of a long loop through ``tqdm.auto``: a widget in a notebook, a text bar on
    a terminal, nothing when disabled (default: on in a terminal or a notebook)."""

    def __init__(self, total: int, desc: str = "", enabled: bool | None = None):
        self.total, self.desc = total, desc
        self.enabled = (sys.stderr.isatty() or _in_notebook()) if enabled is None else enabled
        self._bar = None
        if self.enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)

    def update(self, done: int, postfix: str = "") -> None:
        """Set the count to ``done`` (absolute) with ``postfix`` (loss, validation NLL)."""
        if self._bar is None:
            return
        self._bar.n = min(done, self.total)
        self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def discard(self) -> None:
        """Close and erase the bar (after an error, so the error is the only line left)."""
        if self._bar is not None:
            self._bar.leave = False
            self.close()


_RUNNERS: OrderedDict[tuple, Callable] = OrderedDict()
_RUNNER_CACHE_SIZE = 32


def make_chunk_runner(
    method: Method,
    sample_batch: Callable[[Array], TaskBatch],
    chunk_size: int,
    mesh: Mesh | None = None,
) -> Callable[[MetaState, Array], tuple[MetaState, Array, Any]]:
    """A jitted ``run(state, key) -> (state, key, infos, theta_finite)`` of ``chunk_size``
    meta-steps. With ``mesh``, every sampled batch is split over its ``"tasks"`` axis
    (:mod:`bayesmeta.parallel`).

    Runners are cached by the identity of ``method.meta_step`` and ``sample_batch`` and by
    ``chunk_size``, so that calling :func:`train` again with the same method and sampler (a
    resumed run, an active-learning loop, a benchmark) reuses the compiled chunk instead of
    tracing and compiling it anew.
    """
    cache_key = (method.meta_step, sample_batch, int(chunk_size), mesh)
    if cache_key in _RUNNERS:
        _RUNNERS.move_to_end(cache_key)
        return _RUNNERS[cache_key]
    if mesh is not None:
        unsharded = sample_batch

        def sample_batch(key):
            return shard_tasks(unsharded(key), mesh)

    run = _build_chunk_runner(method, sample_batch, chunk_size)
    _RUNNERS[cache_key] = run
    if len(_RUNNERS) > _RUNNER_CACHE_SIZE:
        _RUNNERS.popitem(last=False)
    return run


def _build_chunk_runner(method, sample_batch, chunk_size):

    def body(carry, _):
        state, key = carry
        key, k_batch, k_step = jax.random.split(key, 3)
        state, info = method.meta_step(k_step, state, sample_batch(k_batch))
        return (state, key), info

    @jax.jit
    def run(state, key):
        (state, key), infos = jax.lax.scan(body, (state, key), None, length=chunk_size)
        return state, key, infos, _all_finite(state.theta)

    return run


def _all_finite(tree) -> Array:
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves] or [jnp.array(True)]))


def train(
    method: Method,
    state: MetaState,
    sample_batch: Callable[[Array], TaskBatch],
    key: Array,
    num_steps: int,
    *,
    chunk_size: int = 250,
    run_dir: str | Path | None = None,
    checkpoint_every: int = 10,
    checkpoint_extra: dict | None = None,
    max_seconds: float | None = None,
    progress: bool | None = None,
    desc: str | None = None,
    mesh: Mesh | None = None,
    validate: Callable[[MetaState], float | Mapping[str, float]] | None = None,
    best_validation: float = math.inf,
    validate_every: int = 1,
    prior_history: Mapping[str, Sequence[float]] | None = None,
    on_divergence: str = "raise",
    validate_start: bool = False,
    start_margin_se: float = 0.0,
) -> TrainResult:
    """Meta-train ``method`` for ``num_steps`` steps (rounded up to whole chunks).

    Parameters
    ----------
    sample_batch : key -> TaskBatch
        A jittable episode sampler with static shapes.
    run_dir : path, optional
        Where atomic data-only checkpoints (``checkpoint.npz``) are written.
    checkpoint_extra : dict
        Extra fields stored in every checkpoint (model, method config).
    max_seconds : float, optional
        Stop after the chunk during which this wall-clock budget runs out.
    progress : bool, optional
        Show a progress bar (default: only when stderr is a terminal).
    mesh : jax.sharding.Mesh, optional
        Shard each meta-batch's tasks over this mesh (:func:`bayesmeta.parallel.task_mesh`);
        θ, the optimiser state and the key are replicated. The meta-batch size must be a
        multiple of the number of devices. A mesh may span processes started with
        :func:`bayesmeta.parallel.initialize_distributed`; then only process 0 writes
        checkpoints, and :func:`bayesmeta.parallel.stream_sampler` lets each process draw
        its own tasks.
    validate : state -> float or dict, optional
        A held-out score to minimise (e.g. the validation groups' NLL per query point), or a
        dict with that score as ``"nll"`` and other metrics (``validation_<name>`` in the
        history, e.g. ``validation_accuracy``),
        called after every chunk: its values are ``history["validation_nll"]``, the best
        state is ``TrainResult.best_state``, and with ``run_dir`` it is also written to
        ``best.npz`` (atomic, data only), which evaluation prefers to the last state.
    validate_every : int
        Call ``validate`` after every ``validate_every``-th chunk and after the last one (a
        validation pass of a conv net can cost as much as a chunk of training; the history's
        ``validation_step`` says which steps were scored).
    best_validation : float
        The best score so far when resuming a run: ``best.npz`` is replaced only by a state
        that beats it (``TrainResult.best_state`` is ``None`` if none does).
    prior_history : mapping, optional
        A resumed run's history so far: this run's chunks are appended to it (so every
        checkpoint holds the whole history, through any number of resumes) and its training
        seconds continue from the last recorded.
    on_divergence : {"raise", "stop"}
        What a non-finite loss or θ does: ``"raise"`` a :class:`DivergenceError`, or, with
        ``validate``, ``"stop"`` training at the last finite chunk and keep the best validated
        state (early stopping's answer to a diverging run, as Keras' ``TerminateOnNaN`` with
        ``restore_best_weights``), with a warning and the step in ``history["diverged_at"]``.
        Without a validated state to fall back on it raises all the same.
    validate_start : bool
        With ``validate``, also score the starting state when training starts afresh (step 0,
        no ``prior_history``), recorded at ``validation_step`` 0: a θ that starts at a
        closed-form fit (a data model's empirical-Bayes start) may be the best state there
        is, and early stopping can then keep it.
    start_margin_se : float
        With ``validate_start`` and a ``validate`` that has ``per_task(state)`` (each
        validation task's score, e.g. :func:`bayesmeta.fitting.default_validator`'s), a later
        state replaces the start only when its mean paired difference to the start,
        d̄ = mean_i(s_i − s⁰_i), beats it by more than this many standard errors,
        d̄ < −c·se(d), the one-standard-error rule of model selection (Hastie, Tibshirani &
        Friedman, §7.10) for c = 1: the lowest of many validation scores on a few dozen
        groups is often noise. Every validation records ``validation_gain`` (−d̄) and
        ``validation_gain_se``; ``best_step`` is the kept state's step. 0 (default): the
        lowest validation score wins.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps: expected a positive integer, got {num_steps}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size}")
    if validate_every < 1:
        raise ValueError(f"validate_every: expected a positive integer, got {validate_every}")
    if on_divergence not in ("raise", "stop"):
        raise ValueError(f"on_divergence: expected 'raise' or 'stop', got {on_divergence!r}")
    chunk_size = min(chunk_size, num_steps)
    num_chunks = math.ceil(num_steps / chunk_size)
    if mesh is not None:
        num_tasks = jax.eval_shape(sample_batch, key).x_support.shape[0]
        check_divisible(num_tasks, mesh)
        state, key = replicate((state, key), mesh)
    run = make_chunk_runner(method, sample_batch, chunk_size, mesh)
    bar = ProgressBar(num_chunks * chunk_size, desc or method.name, progress)
    # one writer across processes: every process holds the same replicated state
    ckpt = Path(run_dir) / CHECKPOINT_NAME if run_dir is not None and is_primary() else None

    def checkpoint(st, k):
        if ckpt is not None:
            save_checkpoint(
                ckpt,
                {
                    **(checkpoint_extra or {}),
                    "method": method.name,
                    "state": st,
                    "key": k,
                    "step": int(st.step),
                    "history": history,
                },
            )

    # seconds: training time after each chunk, validation excluded (learning curves)
    history: dict[str, list] = {"step": [], "loss": [], "grad_norm": [], "seconds": []}
    if validate is not None:
        history["validation_nll"] = []
        history["validation_step"] = []
        history["validation_seconds"] = []
    for name, values in (prior_history or {}).items():
        history[name] = [float(v) for v in values] + history.get(name, [])
    best_v, best_state = float(best_validation), None
    per_task = getattr(validate, "per_task", None) if start_margin_se > 0 else None
    # the start's per-task scores (kept in the history, so a resumed run compares with them)
    start = history.get("validation_start_per_task")
    start_scores = None if start is None else np.asarray(start, np.float64)

    def eligible(per) -> bool:
        """Whether the state of per-task scores ``per`` may replace the start under the rule."""
        nonlocal start_scores
        if per is None:
            return True
        if start_scores is None:  # this is the start
            start_scores = per
            history["validation_start_per_task"] = [float(v) for v in per]
            gain, se, ok = 0.0, 0.0, True
        else:
            d = per - start_scores
            gain = -float(d.mean())
            se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.inf
            ok = gain > start_margin_se * se
        history.setdefault("validation_gain", []).append(gain)
        history.setdefault("validation_gain_se", []).append(se)
        return ok

    def score(st, k, seconds: float) -> float:
        """Validate ``st``, record it in the history, keep it (and write ``best.npz``) if it
        is the best so far; its validation NLL."""
        nonlocal best_v, best_state
        per = None
        if per_task is not None and (start_scores is not None or int(st.step) == 0):
            per = np.asarray(per_task(st), np.float64)
            scores = float(per.mean())
        else:
            scores = validate(st)
        if isinstance(scores, Mapping):
            v = float(scores["nll"])
            for name, value in scores.items():
                if name != "nll":
                    history.setdefault(f"validation_{name}", []).append(float(value))
        else:
            v = float(scores)
        history["validation_nll"].append(v)
        history["validation_step"].append(int(st.step))
        history["validation_seconds"].append(seconds)
        if eligible(per) and v < best_v:
            best_v, best_state = v, st
            history["best_step"] = [int(st.step)]
            if ckpt is not None:
                save_checkpoint(
                    ckpt.parent / BEST_NAME,
                    {
                        **(checkpoint_extra or {}),
                        "method": method.name,
                        "state": st,
                        "key": k,
                        "step": int(st.step),
                        "validation_nll": v,
                    },
                )
        return v

    t0 = time.perf_counter()
    compile_s = 0.0
    trained_s = float(history["seconds"][-1]) if history["seconds"] else 0.0
    if validate is not None and validate_start and int(state.step) == 0 and not prior_history:
        score(state, key, trained_s)
    for c in range(num_chunks):
        t_chunk = time.perf_counter()
        new_state, new_key, infos, theta_finite = run(state, key)
        loss = np.asarray(infos.loss)
        if c == 0:
            compile_s = time.perf_counter() - t_chunk
        if not (np.all(np.isfinite(loss)) and bool(theta_finite)):
            bad = int(state.step) + int(np.argmax(~np.isfinite(loss))) + 1
            if on_divergence == "stop" and validate is not None and best_state is not None:
                warnings.warn(
                    f"{method.name}: meta-training diverged (non-finite loss near step {bad}); "
                    f"stopped there and kept the best validated state (step "
                    f"{int(best_state.step)}). A lower learning rate may reach further.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                history["diverged_at"] = [bad]
                break
            bar.close()
            where = f"; the last good checkpoint is {ckpt}" if ckpt is not None else ""
            raise DivergenceError(
                f"{method.name}: meta-training diverged (non-finite loss near step {bad}){where}. "
                "Lower the learning rate or the inner step size."
            )
        state, key = new_state, new_key
        trained_s += time.perf_counter() - t_chunk
        history["seconds"].append(trained_s)
        history["step"].append(int(state.step))
        history["loss"].append(float(loss.mean()))
        history["grad_norm"].append(float(np.asarray(infos.grad_norm).mean()))
        postfix = f"loss {history['loss'][-1]:.4f}"
        last = c == num_chunks - 1 or (
            max_seconds is not None and time.perf_counter() - t0 > max_seconds
        )
        if validate is not None and ((c + 1) % validate_every == 0 or last):
            postfix += f" val {score(state, key, trained_s):.4f}"
        bar.update((c + 1) * chunk_size, postfix)
        if ckpt is not None and ((c + 1) % checkpoint_every == 0 or c == num_chunks - 1):
            checkpoint(state, key)
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            if ckpt is not None:
                checkpoint(state, key)
            break
    bar.close()
    hist = {k: np.asarray(v) for k, v in history.items()}
    return TrainResult(state, key, hist, time.perf_counter() - t0, compile_s, best_state)
