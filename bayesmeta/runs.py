"""Fit, adapt, evaluate, save and load in a few lines: the notebook's entry points.

    import bayesmeta as bm

    fitted = bm.fit("sinusoid", "bmaml", steps=2000)           # a built-in model, its recipe
    tasks = fitted.held_out(k=5, num_tasks=50)                 # test tasks never trained on
    post = fitted.adapt(tasks["x_support"], tasks["y_support"])  # a TaskPosterior
    report = fitted.evaluate(tasks)                            # NLL, MSE, coverage, ...
    fitted.plot(tasks)                                         # bands beside the reference
    fitted.save("runs/bmaml"); fitted = bm.load("runs/bmaml")

``model`` is a built-in model's name or a model file, a :class:`~bayesmeta.zoo.ModelSpec`, or
with ``data`` (grouped rows, :mod:`bayesmeta.tasks.data`) ``"linear"``, ``"mlp"``, a NumPyro
model function or a :class:`~bayesmeta.model.HierarchicalModel`. A saved run is the command
line's run directory (``checkpoint.npz``, ``run.json``), so ``bayesmeta evaluate`` reads it
too.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.inference.base import MetaState, Method
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks.base import Support, padded_support
from bayesmeta.zoo import (
    DATA_MODELS,
    ModelSpec,
    _data_splits,
    data_model_spec,
    data_recipe,
    held_out_tasks,
    load_model_spec,
)


@dataclass(frozen=True)
class Fitted:
    """A meta-trained method: its model spec, the method's pure functions, the trained state
    and the run's provenance (``info``: model, method, seed, steps, settings, seconds,
    history, versions).

    ``state`` is the best validated state when the fit validated, else the last one.
    """

    spec: ModelSpec
    method: Method
    state: MetaState
    info: dict = field(default_factory=dict)

    @functools.cached_property
    def _adapt(self):
        return jax.jit(self.method.adapt, static_argnums=3)

    def adapt(
        self,
        x_support: Any,
        y_support: Any,
        num_samples: int = 100,
        *,
        mask: Any = None,
        key: jax.Array | None = None,
    ) -> TaskPosterior:
        """The task posterior given support sets.

        Parameters
        ----------
        x_support : (K, Dx) for one task or (T, K, Dx) for T tasks; (K,) when Dx = 1
        y_support : (K,) or (K, Dy) for one task, (T, K) or (T, K, Dy) for T; class labels
            (K,) or (T, K) for a classifier
        num_samples : int
            Posterior samples (particles, draws) per task.
        mask : (K,) or (T, K) of 0/1, optional
            Which support points are real (default: all).
        key : PRNG key, optional
            Default ``PRNGKey(0)``: the same call gives the same samples.

        Returns
        -------
        TaskPosterior
            For T tasks (T = 1 for a single task).
        """
        support = self._support(x_support, y_support, mask)
        key = jax.random.PRNGKey(0) if key is None else key
        return self._adapt(key, self.state, support, int(num_samples))

    def _support(self, x_support, y_support, mask) -> Support:
        fam = self.spec.family
        classify = fam.likelihood == "categorical"
        x = np.asarray(x_support, np.float32)
        if x.ndim == 1 and fam.dx == 1:
            x = x[:, None]
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[-1] != fam.dx:
            raise ValueError(
                f"x_support: expected (K, {fam.dx}) or (T, K, {fam.dx}), got {np.shape(x_support)}"
            )
        t, k = x.shape[:2]
        y = np.asarray(y_support)
        if classify:
            if y.ndim == 1:
                y = y[None]
            if y.shape != (t, k) or y.dtype.kind not in "iu":
                raise ValueError(
                    f"y_support: expected integer labels of shape ({k},) or ({t}, {k}), got "
                    f"{np.shape(y_support)} {y.dtype}"
                )
            y = y.astype(np.int32)
        else:
            y = y.astype(np.float32)
            if y.ndim == 1 and fam.dy == 1 and y.shape[0] == k:
                y = y[:, None]
            if y.ndim == 2 and y.shape == (k, fam.dy) and t == 1:
                y = y[None]
            if y.ndim == 2 and y.shape == (t, k) and fam.dy == 1:
                y = y[..., None]
            if y.shape != (t, k, fam.dy):
                raise ValueError(
                    f"y_support: expected ({k},) or ({k}, {fam.dy}) for one task, or "
                    f"({t}, {k}, {fam.dy}), got {np.shape(y_support)}"
                )
        if mask is None:
            m = np.ones((t, k), np.float32)
        else:
            m = np.asarray(mask, np.float32)
            m = m[None] if m.ndim == 1 else m
            if m.shape != (t, k):
                raise ValueError(f"mask: expected ({k},) or ({t}, {k}), got {np.shape(mask)}")
        return Support(jnp.asarray(x), jnp.asarray(y), jnp.asarray(m))

    def held_out(
        self, k: int, num_tasks: int = 100, num_query: int = 50, split: str = "test"
    ) -> dict[str, np.ndarray]:
        """A task set (docs/formats.md) of tasks no training step saw: ``split="test"`` for
        reports, ``"validation"`` for choices (:meth:`ModelSpec.held_out`)."""
        return self.spec.held_out(split, k, num_tasks, num_query)

    def evaluate(
        self,
        tasks: dict | str | Path,
        num_samples: int = 100,
        *,
        key: jax.Array | None = None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        """Adapt to a task set's support sets and score its query sets
        (:func:`bayesmeta.evaluate.evaluate`). ``tasks`` is a dict from :meth:`held_out` or
        :func:`~bayesmeta.tasks.io.load_tasks`, or a task file's path. A classifier's
        ``temperature`` (:meth:`temperature`) adds the temperature-scaled metrics beside its
        own."""
        from bayesmeta.evaluate import evaluate

        if not isinstance(tasks, dict):
            from bayesmeta.tasks.io import load_tasks

            tasks = load_tasks(tasks)
        post = self.adapt(
            tasks["x_support"],
            tasks["y_support"],
            num_samples,
            mask=tasks.get("mask_support"),
            key=key,
        )
        report = evaluate(post, tasks["x_query"], tasks["y_query"],
                          mask_query=tasks.get("mask_query"), temperature=temperature)  # fmt: skip
        report.update(model=self.spec.name, k=int(np.shape(tasks["x_support"])[1]),
                      samples=int(num_samples))  # fmt: skip
        return report

    def temperature(
        self, k: int, num_tasks: int = 200, num_query: int | None = None, num_samples: int = 100
    ) -> float:
        """The temperature T that minimises a classifier's NLL on validation tasks with ``k``
        shots (:func:`~bayesmeta.evaluate.metrics.fit_temperature`; classes no test task
        uses): pass it to :meth:`evaluate` for the post-hoc calibrated baseline."""
        from bayesmeta.evaluate import fit_temperature

        if self.spec.family.likelihood != "categorical":
            raise ValueError("temperature: temperature scaling is for classifiers; this model's "
                             f"likelihood is {self.spec.family.likelihood!r}")  # fmt: skip
        if num_query is None:
            num_query = int(self.info.get("settings", {}).get("num_query", 50))
        tasks = self.held_out(k, num_tasks, num_query, split="validation")
        post = self.adapt(tasks["x_support"], tasks["y_support"], num_samples,
                          mask=tasks.get("mask_support"))  # fmt: skip
        probs = np.asarray(post.probs(jnp.asarray(tasks["x_query"])))
        return fit_temperature(probs, tasks["y_query"])

    def plot(
        self,
        tasks: dict,
        num_samples: int = 100,
        *,
        reference: bool = True,
        task_indices=(0, 1, 2),
        path: str | Path | None = None,
    ):
        """Predictive bands of a few tasks (1-D regression), beside the exact reference when
        the model has one (:func:`bayesmeta.plots.predictive_bands`); returns the figure."""
        from bayesmeta import plots

        fam = self.spec.family
        if fam.likelihood == "categorical" or fam.dx != 1 or fam.dy != 1:
            raise ValueError(
                "tasks: predictive bands are for 1-D regression (Dx = Dy = 1); use "
                "bayesmeta.plots.reliability_diagram or calibration_curves for this model"
            )
        support = self._support(tasks["x_support"], tasks["y_support"], tasks.get("mask_support"))
        posts = {self.method.name: self._adapt(jax.random.PRNGKey(0), self.state, support,
                                               int(num_samples))}  # fmt: skip
        if reference and self.method.name != "reference":
            try:
                ref, _ = self.spec.build("reference")
            except ValueError:  # no exact reference for this model
                ref = None
            if ref is not None:
                posts["reference"] = ref.adapt(jax.random.PRNGKey(1), ref.init(None), support,
                                               int(num_samples))  # fmt: skip
        return plots.predictive_bands(
            posts,
            support.x,
            support.y,
            support.mask,
            task_indices=task_indices,
            x_range=tuple(fam.x_range),
            path=path,
        )

    def save(self, run_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write the run directory (``checkpoint.npz`` data only, atomic; ``run.json``) that
        :func:`load` and ``bayesmeta evaluate`` read. A model given as an object rather than
        a built-in name or model file must be given again to :func:`load`."""
        from bayesmeta.atomic import write_text
        from bayesmeta.checkpoint import CHECKPOINT_NAME, as_json, file_sha256, save_checkpoint
        from bayesmeta.zoo import builtin_models

        out = Path(run_dir)
        if (out / CHECKPOINT_NAME).exists() and not overwrite:
            raise FileExistsError(
                f"run_dir: {str(out)!r} already holds a run; pass overwrite=True to replace it"
            )
        out.mkdir(parents=True, exist_ok=True)
        source = self.spec.source
        is_file = bool(source) and source not in builtin_models() and Path(source).is_file()
        save_checkpoint(
            out / CHECKPOINT_NAME,
            {
                "model_source": source,
                "model_sha256": file_sha256(source) if is_file else None,
                "model_name": self.spec.name,
                "settings": as_json(self.info.get("settings", {})),
                "method_config": self.info.get("method_config"),
                "seed": self.info.get("seed", 0),
                "budget": self.info.get("budget", "default"),
                "task_streams": 1,
                "method": self.method.name,
                "state": self.state,
                "key": jax.random.PRNGKey(self.info.get("seed", 0)),
                "step": int(self.state.step),
            },
        )
        write_text(out / "run.json", json.dumps(self.info, indent=2, default=str))
        return out


# -- the user's own data ------------------------------------------------------------------------
class DataRef:
    """A grouped data file and how to read and split it (``--data``, ``--group``, ``--x``,
    ``--y``, ``--split-seed``). Reading it runs no code. The split depends only on the file
    and ``split_seed``, so ``fit`` and ``tasks`` see the same train / validation / test
    groups."""

    def __init__(self, path, group=None, x=None, y=None, split_seed=0, sha256=None,
                 labels=False):  # fmt: skip
        self.path = str(Path(path).resolve()) if Path(path).exists() else str(path)
        self.group, self.y, self.labels = group, y, bool(labels)
        self.x = [c for c in x.split(",") if c] if isinstance(x, str) else x
        self.split_seed, self.sha256 = split_seed, sha256

    def rows(self):
        from bayesmeta.checkpoint import file_sha256
        from bayesmeta.tasks.data import load_rows

        rows = load_rows(self.path, x=self.x, y=self.y, group=self.group, labels=self.labels)
        digest = file_sha256(self.path)
        if self.sha256 is not None and digest != self.sha256:
            raise ValueError(
                f"--data: {self.path!r} has SHA-256 {digest[:16]}..., but the run was fitted on "
                f"{self.sha256[:16]}...: the data file has changed since the run"
            )
        self.sha256 = digest
        return rows

    def spec(self, model: str):
        from bayesmeta.zoo import data_model_spec

        rows = self.rows()
        splits = rows.split(seed=self.split_seed)
        return data_model_spec(model, splits, name=rows.name), splits

    def manifest(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "group": self.group,
            "x": self.x,
            "y": self.y,
            "split_seed": self.split_seed,
            "labels": self.labels,
        }

    @classmethod
    def from_manifest(cls, d: dict) -> DataRef:
        return cls(d["path"], d.get("group"), d.get("x"), d.get("y"), d.get("split_seed", 0),
                   d.get("sha256"), d.get("labels", False))  # fmt: skip


def evaluate_methods(
    spec,
    fitted: dict,
    ks,
    num_tasks: int,
    num_samples: int = 100,
    seed: int = 0,
    train_seconds: dict | None = None,
):
    """Rows of metrics for every fitted ``{name: (method, state)}`` at each K, plus the
    posteriors (for plots)."""
    from bayesmeta.evaluate import calibration_curve, compare, evaluate

    rows, posts, tasks_by_k = [], {}, {}
    # every K's support is padded to the same size, so each method compiles its adapt once
    adapt = {name: jax.jit(m.adapt, static_argnums=3) for name, (m, _) in fitted.items()}
    for k in ks:
        ts = held_out_tasks(spec, k, num_tasks)
        tasks_by_k[k] = ts
        sup = padded_support(ts, max(spec.k_range[1], k))
        reports = {}
        for name, (_, state) in fitted.items():
            post = adapt[name](jax.random.PRNGKey(seed + k), state, sup, num_samples)
            rep = evaluate(post, ts["x_query"], ts["y_query"], return_pit=True)
            rep["calibration_curve"] = [c.tolist() for c in calibration_curve(rep["pit"])]
            reports[name] = rep
            posts[(name, k)] = post
        for row in compare(reports):
            row["k"] = k
            if train_seconds and row["method"] in train_seconds:
                row["train_s"] = train_seconds[row["method"]]
            rows.append(row)
    return rows, posts, tasks_by_k


def load_run(
    run_dir: str,
    *,
    model: str | None = None,
    trust_model_file: bool = False,
    allow_pickle: bool = False,
    prefer_best: bool = True,
    spec=None,
    optimizer=None,
):
    """``(spec, method, state, manifest)`` of a fitted run directory, without running code
    the user did not ask for. ``spec`` (a ModelSpec) replaces the one the manifest names (a
    run whose model was an object, :func:`bayesmeta.load`); ``optimizer`` is the run's own
    when it was not the recipe's (the state holds its shape).

    The checkpoint is data only (:mod:`bayesmeta.checkpoint`). A run fitted with a built-in
    model loads that model by name. A run fitted with a model file records the file's path
    and SHA-256: it is executed only when the user names it (``model``, ``--model FILE``) or
    passes ``trust_model_file``, and only if its hash still matches. A legacy pickle
    checkpoint (``checkpoint.pkl``) is read only with ``allow_pickle`` (unsafe). A run that
    was validated during training holds ``best.npz`` (the lowest validation NLL), which is
    loaded unless ``prefer_best`` is False (``fit --resume`` continues from the last state).

    Raises
    ------
    ValueError
        ``run_dir`` is not a directory.
    CheckpointError
        Its checkpoint is missing, corrupt, unsafe to read without a flag, names a model or
        method that cannot be built, names a model file that was not trusted or has changed,
        or holds parameters whose shapes do not match that model (or that are not finite).
    """
    import jax
    import numpy as np

    from bayesmeta.checkpoint import (
        BEST_NAME,
        CHECKPOINT_NAME,
        LEGACY_CHECKPOINT_NAME,
        CheckpointError,
        file_sha256,
        load_checkpoint,
        load_legacy_checkpoint,
        restore_state,
        state_arrays,
    )
    from bayesmeta.zoo import builtin_models

    path = Path(run_dir)
    if not path.exists():
        raise ValueError(f"RUN_DIR: no run directory at {run_dir!r}")
    if not path.is_dir():
        raise ValueError(
            f"RUN_DIR: expected a run directory (from bayesmeta fit --out), got the file "
            f"{run_dir!r}"
        )
    legacy = path / LEGACY_CHECKPOINT_NAME
    if not (path / CHECKPOINT_NAME).exists() and legacy.exists():
        if not allow_pickle:
            raise CheckpointError(
                f"checkpoint: {run_dir!r} holds a legacy pickle checkpoint (checkpoint.pkl), "
                "which can run code when read; for a run you trust, convert it with "
                "`bayesmeta upgrade RUN_DIR` or pass --allow-pickle (unsafe)"
            )
        payload = load_legacy_checkpoint(legacy)
        if "state" not in payload:
            raise CheckpointError(f"checkpoint: {run_dir!r} lacks 'state'; not a bayesmeta run")
        payload["arrays"] = state_arrays(payload.pop("state"))
        source = payload.get("model_source")
        if isinstance(source, str) and source not in builtin_models() and Path(source).is_file():
            # format 1 recorded no hash; the user trusts this run, so trust its file as it is
            payload.setdefault("model_sha256", file_sha256(source))
    elif prefer_best and (path / BEST_NAME).is_file():
        payload = load_checkpoint(path / BEST_NAME)
    else:
        payload = load_checkpoint(path / CHECKPOINT_NAME)
    for key, kind in (("model_source", str), ("method", str), ("settings", dict)):
        if key not in payload:
            raise CheckpointError(f"checkpoint: {run_dir!r} lacks {key!r}; not a bayesmeta run")
        if not isinstance(payload[key], kind):
            raise CheckpointError(
                f"checkpoint: {run_dir!r} has {key}={payload[key]!r}; expected a "
                f"{kind.__name__}, so it is corrupt"
            )
    if spec is None:
        spec = _spec_of_run(run_dir, payload, model, trust_model_file or allow_pickle)
    try:
        method, _ = spec.build_from_manifest(payload, optimizer=optimizer)
    except (ValueError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint: {run_dir!r} names model {payload['model_source']!r} / method "
            f"{payload['method']!r}, which cannot be built ({str(err).splitlines()[0]})"
        ) from None
    template = method.init(jax.random.PRNGKey(0))
    state = restore_state(
        template,
        payload.pop("arrays"),
        f"checkpoint: {run_dir!r} (model {spec.name!r} / method {payload['method']!r})",
    )
    for b in jax.tree_util.tree_leaves(getattr(state, "theta", state)):
        b = np.asarray(b)
        if b.dtype.kind == "f" and not np.isfinite(b).all():
            raise CheckpointError(
                f"checkpoint: {run_dir!r} holds non-finite parameters "
                f"({int((~np.isfinite(b)).sum())} NaN/inf of {b.size} in an array of shape "
                f"{b.shape}); the run diverged or the file is corrupt"
            )
    state = jax.tree_util.tree_map(jax.numpy.asarray, state)
    return spec, method, state, payload


def _spec_of_run(run_dir: str, payload: dict, model: str | None, trusted: bool):
    """The run's ModelSpec: a built-in by name; a model file only when named or trusted, and
    only if its SHA-256 matches the one recorded at fit time."""
    from bayesmeta.checkpoint import CheckpointError, file_sha256
    from bayesmeta.zoo import builtin_models, load_model_spec

    source, digest = payload["model_source"], payload.get("model_sha256")
    if isinstance(payload.get("data"), dict):
        try:
            return DataRef.from_manifest(payload["data"]).spec(source)[0]
        except KeyError as err:
            raise CheckpointError(
                f"checkpoint: {run_dir!r} has a corrupt data entry ({err})"
            ) from None
    if digest is None:
        if source not in builtin_models():
            raise CheckpointError(
                f"checkpoint: {run_dir!r} names the model {source!r}, which is neither a "
                "built-in model nor a model file with a recorded SHA-256"
            )
        if model is not None and model != source:
            raise ValueError(
                f"--model: the run in {run_dir!r} was fitted with the built-in model "
                f"{source!r}, got {model!r}"
            )
        try:
            return load_model_spec(source)
        except ValueError as err:
            raise CheckpointError(f"checkpoint: {run_dir!r}: {err}") from None
    if model is None and not trusted:
        raise CheckpointError(
            f"checkpoint: {run_dir!r} was fitted with the model file {source!r}; loading it "
            "runs that file, so name it with --model FILE or pass --trust-model-file"
        )
    file = Path(model if model is not None else source)
    if not file.is_file():
        raise CheckpointError(
            f"checkpoint: {run_dir!r} was fitted with the model file {source!r}, which is not "
            f"at {str(file)!r}; name it with --model FILE"
        )
    actual = file_sha256(file)
    if actual != digest:
        raise CheckpointError(
            f"checkpoint: the model file {str(file)!r} has SHA-256 {actual[:16]}..., but the "
            f"run in {run_dir!r} was fitted with {source!r} at {digest[:16]}...: the file has "
            "changed since the run, so it was not run"
        )
    return load_model_spec(str(file))


def _as_spec(model: Any, data: Any) -> ModelSpec:
    if isinstance(model, ModelSpec):
        if data is not None:
            raise ValueError("data: a ModelSpec already names its tasks; pass one or the other")
        return model
    if data is not None:
        splits = _data_splits(data)
        if isinstance(model, str):
            if model not in DATA_MODELS:
                raise ValueError(
                    f"model: with data, expected one of {list(DATA_MODELS)}, a NumPyro model "
                    f"function or a HierarchicalModel, got {model!r}"
                )
            return data_model_spec(model, splits, name=splits.train.name)
        name = getattr(model, "__name__", type(model).__name__)
        return ModelSpec(name=f"{splits.train.name}/{name}", data=splits, model=model,
                         **data_recipe(splits))  # fmt: skip
    if isinstance(model, str | Path):
        return load_model_spec(str(model))
    raise TypeError(
        "model: expected a built-in model's name, a model file, a ModelSpec, or (with data) "
        f"'linear', 'mlp', a NumPyro model function or a HierarchicalModel; got "
        f"{type(model).__name__}"
    )


def task_set(
    source: Any,
    k: int = 5,
    num_tasks: int = 100,
    *,
    num_query: int | None = None,
    split: str = "test",
) -> dict[str, np.ndarray]:
    """Held-out tasks of a model or a data set: ``bayesmeta.tasks(source, k=..., num_tasks=...)``.

    Parameters
    ----------
    source : Fitted, ModelSpec, model name or file, data set name, Rows or Splits
        Whose tasks: a fitted run's (:meth:`Fitted.held_out`), a model's (built-in name or
        file), or grouped data's (a built-in data set's name, the user's ``Rows`` split by
        group, or ``Splits``), in the units the model is fitted in (standardised for data).
    k : int
        Support points per task.
    num_tasks : int
        Tasks in the set (a data set's test split gives at most one task per group and
        draw, so groups repeat with different support points when there are fewer groups).
    num_query : int, optional
        Query points per task: default 50, and for data at most what the largest group of
        the split holds beyond ``k`` (rows a smaller group lacks are masked).
    split : {"test", "validation"}
        ``"test"`` for what is reported, ``"validation"`` for choices; neither shares a task
        with training.

    Returns
    -------
    dict
        A task set (docs/formats.md): ``x_support`` (T, K, Dx), ``y_support``, ``x_query``,
        ``y_query`` and, where groups are ragged, ``mask_support`` / ``mask_query``.
    """
    if isinstance(source, Fitted):
        spec = source.spec
    elif _is_data(source):
        spec = _as_spec("linear", source)
    else:
        spec = _as_spec(source, None)
    if num_query is None:
        num_query = 50
        if spec.splits is not None:
            part = spec.splits.validation if split == "validation" else spec.splits.test
            num_query = max(1, min(num_query, int(np.max(part.lengths)) - int(k)))
    if int(k) < 1 or int(num_tasks) < 1 or int(num_query) < 1:
        raise ValueError(
            f"k, num_tasks, num_query: expected positive integers, got {k}, {num_tasks}, "
            f"{num_query}"
        )
    return spec.held_out(split, int(k), int(num_tasks), int(num_query))


def _is_data(source: Any) -> bool:
    from bayesmeta.tasks.data import Rows, Splits
    from bayesmeta.tasks.grouped import DATASETS
    from bayesmeta.zoo import builtin_models

    if isinstance(source, Rows | Splits):
        return True
    # a built-in model of the same name (nlschools) is that data set's own model file
    return isinstance(source, str) and source in DATASETS and source not in builtin_models()


def fit(
    model: Any,
    method: str = "abml",
    data: Any = None,
    *,
    steps: int | None = None,
    seed: int = 0,
    budget: str = "default",
    optimizer: Any = None,
    progress: bool | None = None,
    validate: bool | None = None,
    **config: Any,
) -> Fitted:
    """Meta-train ``method`` on ``model`` with its recipe and return a :class:`Fitted`.

    Parameters
    ----------
    model : str, Path, ModelSpec, NumPyro model function or HierarchicalModel
        See the module docstring.
    method : str
        A registered method (``maml``, ``meta-sgd``, ``abml``, ``emaml``, ``bmaml``,
        ``platipus``, ``neural-process``) or ``reference`` (nothing to train).
    data : str, Rows or Splits, optional
        Grouped data: a built-in data set's name or the user's rows, split by group.
    steps : int, optional
        Meta-training steps (default: the recipe's).
    seed : int
        θ's initialisation and the training stream.
    optimizer : optax.GradientTransformation, optional
        Replaces the recipe's Adam (learning rate, schedule and clipping).
    progress : bool, optional
        A progress bar (``tqdm.auto``: a widget in a notebook); default on in a terminal or a
        notebook.
    validate : bool, optional
        Score the validation tasks after every chunk and keep the best state (default: when
        the model has validation groups, i.e. on data).
    **config
        Recipe overrides (``lr``, ``meta_batch``, ``inner_steps``, ``num_particles``, ...);
        a misspelt one is a ``ValueError`` naming it.
    """
    import bayesmeta

    spec = _as_spec(model, data)
    t0 = time.perf_counter()
    settings = spec.recipe(method, budget, steps=steps, **config)
    if method == "reference":
        ref, _ = spec.build("reference")
        state, res = ref.init(jax.random.PRNGKey(seed)), None
        m = ref
    else:
        if validate is None:
            validate = spec.validation_family is not None
        validator = None
        if validate:
            k_val, nq = min(5, spec.k_range[1]), int(settings["num_query"])
            if spec.splits is not None:  # as many points as the largest validation group has
                largest = int(np.max(spec.splits.validation.lengths))
                k_val = max(1, min(k_val, largest - 1))
                nq = max(1, min(nq, largest - k_val))
            validator = spec.validator(k=k_val, num_tasks=50, num_query=nq)
        m, res = spec.fit(method, budget, seed, progress=progress, validate=validator,
                          optimizer=optimizer, steps=steps, **config)  # fmt: skip
        state = res.best_state if res.best_state is not None else res.state
    info: dict[str, Any] = {
        "model": spec.name,
        "model_source": spec.source,
        "method": method,
        "budget": budget,
        "seed": int(seed),
        "steps": int(res.state.step) if res is not None else 0,
        "settings": settings,
        "method_config": None if method == "reference" else m.config.to_dict(),
        "optimizer": "recipe" if optimizer is None else "custom",
        "train_seconds": time.perf_counter() - t0,
        "compile_seconds": res.compile_seconds if res is not None else 0.0,
        "history": {k: np.asarray(v).tolist() for k, v in res.history.items()} if res else {},
        "bayesmeta_version": bayesmeta.__version__,
        "jax_version": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }
    if res is not None and res.best_state is not None:
        info["best_step"] = int(res.best_state.step)
        info["best_validation_nll"] = float(np.min(res.history["validation_nll"]))
    return Fitted(spec, m, state, info)


def load(
    run_dir: str | Path,
    *,
    model: Any = None,
    optimizer: Any = None,
    trust_model_file: bool = False,
) -> Fitted:
    """A saved run (from :meth:`Fitted.save` or ``bayesmeta fit --out``) as a
    :class:`Fitted`: its best state when it validated, else its last.

    ``model`` is needed when the run's model was given as an object (a ModelSpec or a
    function); for a model file it is the file's path (or pass ``trust_model_file``: loading
    runs the file). ``optimizer``: the one the run was fitted with, if not the recipe's (its
    state has that optimiser's shape).
    """

    path = Path(run_dir)
    info_path = path / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if info.get("optimizer") == "custom" and optimizer is None:
        raise ValueError(
            f"optimizer: the run in {str(path)!r} was fitted with its own optimizer; pass the "
            "same optimizer= to load it (its state has that optimizer's shape)"
        )
    spec = model if isinstance(model, ModelSpec) else None
    spec, method, state, _ = load_run(
        str(path),
        model=None if model is None or spec is not None else str(model),
        trust_model_file=trust_model_file,
        spec=spec,
        optimizer=optimizer,
    )
    return Fitted(spec, method, state, info)


__all__ = ["Fitted", "fit", "load"]
