"""A pool of many small groups on disk, memory-mapped and streamed into training.

Amortized methods make a million groups feasible only if the groups never have to sit in
memory together. A *pool* is a folder of three NumPy arrays and a manifest,

    x.npy (G, N, Dx) float32,   y.npy (G, N, Dy) float32,   lengths.npy (G,) int32,
    pool.json  {"format": "bayesmeta-pool", "version": 1, "groups": G, "max_rows": N, ...},

group g's real rows being ``x[g, :lengths[g]]`` (the rest is padding). :func:`write_pool`
writes one chunk of groups at a time (from arrays or an iterator of chunks) into a temporary
folder that is renamed into place, so a pool is complete or absent. :func:`open_pool` maps the
arrays read-only (``numpy.load(mmap_mode="r")``); :meth:`GroupPool.family` is a
:class:`~bayesmeta.tasks.base.TaskFamily` whose episodes are drawn inside the jitted training
loop: the group indices and the row orders are drawn by JAX from the step's key, and only the
T groups of the batch are read from the mapped files (``jax.pure_callback``), so the memory a
training step uses does not depend on G, and the same key gives the same episode.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.tasks.base import TaskBatch, TaskFamily, split_episode

FORMAT, VERSION = "bayesmeta-pool", 1
Chunk = tuple[np.ndarray, np.ndarray, np.ndarray]

__all__ = ["GroupPool", "open_pool", "write_pool"]


def _check_chunk(chunk: Chunk, where: str) -> Chunk:
    try:
        x, y, lengths = chunk
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected (x, y, lengths) arrays, got {chunk!r}") from None
    x, y, lengths = np.asarray(x), np.asarray(y), np.asarray(lengths)
    if y.ndim == 2:
        y = y[..., None]
    if x.ndim != 3 or y.ndim != 3 or lengths.ndim != 1:
        raise ValueError(
            f"{where}: expected x (G, N, Dx), y (G, N) or (G, N, Dy) and lengths (G,), got "
            f"shapes {x.shape}, {y.shape}, {lengths.shape}"
        )
    if not (x.shape[:2] == y.shape[:2] and x.shape[0] == lengths.shape[0]):
        raise ValueError(
            f"{where}: x, y and lengths disagree on G or N: shapes {x.shape}, {y.shape}, "
            f"{lengths.shape}"
        )
    if (
        lengths.dtype.kind not in "iu"
        or lengths.min(initial=0) < 0
        or (lengths.size and lengths.max() > x.shape[1])
    ):
        raise ValueError(
            f"{where}: lengths: expected integers in [0, N={x.shape[1]}], got dtype "
            f"{lengths.dtype} with range [{lengths.min(initial=0)}, {lengths.max(initial=0)}]"
        )
    for name, a in (("x", x), ("y", y)):
        real = np.arange(a.shape[1])[None, :] < lengths[:, None]
        if not np.all(np.isfinite(a[real])):
            raise ValueError(f"{where}: {name}: expected finite values in the real rows")
    return x.astype(np.float32), y.astype(np.float32), lengths.astype(np.int32)


def write_pool(
    path: str | os.PathLike,
    chunks: Chunk | Iterable[Chunk],
    num_groups: int | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a pool folder at ``path`` from ``(x, y, lengths)`` arrays, or from an iterator of
    such chunks (``num_groups`` then gives their total, so that the files are allocated once
    and each chunk is written where it belongs). Nothing but one chunk is held in memory.

    The pool is written into a temporary folder beside ``path`` and renamed into place: a
    stopped write leaves no pool. An existing ``path`` is an error unless ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"path: {str(path)!r} exists; pass overwrite=True to replace it")
    if isinstance(chunks, tuple) and len(chunks) == 3 and not isinstance(chunks[0], tuple):
        chunks = [chunks]
        if num_groups is None:
            num_groups = int(np.shape(chunks[0][2])[0])
    if not isinstance(num_groups, int | np.integer) or num_groups < 1:
        raise ValueError(
            f"num_groups: expected a positive integer (the groups of all chunks), got "
            f"{num_groups!r}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        arrays, start = None, 0
        for i, chunk in enumerate(chunks):
            x, y, lengths = _check_chunk(chunk, f"chunks[{i}]")
            g = x.shape[0]
            if arrays is None:
                shapes = {
                    "x": (num_groups, *x.shape[1:]),
                    "y": (num_groups, *y.shape[1:]),
                    "lengths": (num_groups,),
                }
                dtypes = {"x": np.float32, "y": np.float32, "lengths": np.int32}
                arrays = {
                    k: np.lib.format.open_memmap(tmp / f"{k}.npy", "w+", dtypes[k], shapes[k])
                    for k in shapes
                }
            elif x.shape[1:] != arrays["x"].shape[1:] or y.shape[1:] != arrays["y"].shape[1:]:
                raise ValueError(
                    f"chunks[{i}]: expected groups of shape {arrays['x'].shape[1:]} and "
                    f"{arrays['y'].shape[1:]} like the first chunk, got {x.shape[1:]} and "
                    f"{y.shape[1:]}"
                )
            if start + g > num_groups:
                raise ValueError(
                    f"num_groups: the chunks hold more than the {num_groups} groups announced"
                )
            arrays["x"][start : start + g] = x
            arrays["y"][start : start + g] = y
            arrays["lengths"][start : start + g] = lengths
            start += g
        if arrays is None or start != num_groups:
            raise ValueError(f"num_groups: expected {num_groups} groups, the chunks held {start}")
        for a in arrays.values():
            a.flush()
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "groups": int(num_groups),
            "max_rows": int(arrays["x"].shape[1]),
            "dx": int(arrays["x"].shape[2]),
            "dy": int(arrays["y"].shape[2]),
            "rows": int(np.sum(arrays["lengths"], dtype=np.int64)),
        }
        del arrays
        (tmp / "pool.json").write_text(json.dumps(meta, indent=1) + "\n")
        if path.exists():  # overwrite: move the old pool aside, then drop it
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "pool")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


@dataclass(frozen=True, eq=False)
class GroupPool:
    """A pool opened by :func:`open_pool`: read-only memory maps of its arrays.

    Attributes
    ----------
    path : Path
    x, y : numpy.memmap ``(G, N, Dx)``, ``(G, N, Dy)``
    lengths : numpy.memmap ``(G,)``
    meta : dict
        The manifest ``pool.json``.
    """

    path: Path
    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray
    meta: dict

    @property
    def num_groups(self) -> int:
        return int(self.x.shape[0])

    @property
    def dx(self) -> int:
        return int(self.x.shape[2])

    @property
    def dy(self) -> int:
        return int(self.y.shape[2])

    def read(self, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The padded rows of ``groups`` (host arrays): only their pages of the files are read."""
        g = np.asarray(groups, np.int64)
        order = np.argsort(g, kind="stable")  # read in file order, return in the asked order
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        gs = g[order]
        return (
            np.asarray(self.x[gs])[inv],
            np.asarray(self.y[gs])[inv],
            np.asarray(self.lengths[gs])[inv],
        )

    def family(self, *, min_rows: int = 1, name: str | None = None) -> TaskFamily:
        """A Gaussian-likelihood :class:`TaskFamily` whose episodes stream from this pool.

        ``sample_episode(key, T, (k_min, k_max), Q)`` draws T groups uniformly (with
        replacement) and, for each, a uniformly random order of its rows: the first ``k_max``
        rows are the support set (the first k real), the next Q the query set. Groups shorter
        than ``k_max + Q`` rows are never drawn; rows are drawn within a group without
        replacement. No exact reference (``mean_fn`` is None).
        """
        n_max = int(self.x.shape[1])
        label = name or f"pool-{self.path.name}"
        pool = self

        def eligible_for(need: int) -> np.ndarray:
            # a pass over lengths (4 bytes per group), once per episode size
            idx = np.flatnonzero(np.asarray(pool.lengths) >= max(need, min_rows))
            if idx.size == 0:
                raise ValueError(
                    f"k_range, num_query: an episode needs {need} rows of one group, but no "
                    f"group of the pool {str(pool.path)!r} has as many (the most is "
                    f"{int(np.max(pool.lengths))})"
                )
            return idx

        cache: dict[int, np.ndarray] = {}

        def sample_episode(key, num_tasks, k_range, num_query):
            k_min, k_max = (int(v) for v in k_range)
            need = k_max + int(num_query)
            if need > n_max:
                raise ValueError(
                    f"k_range, num_query: an episode needs k_max + num_query = {need} rows, but "
                    f"the pool's groups hold at most {n_max}"
                )
            if need not in cache:
                cache[need] = eligible_for(need)
            eligible = cache[need]
            k_group, k_perm, k_k = jax.random.split(key, 3)
            pick = jax.random.randint(k_group, (num_tasks,), 0, eligible.size)
            shapes = (
                jax.ShapeDtypeStruct((num_tasks, n_max, pool.dx), jnp.float32),
                jax.ShapeDtypeStruct((num_tasks, n_max, pool.dy), jnp.float32),
                jax.ShapeDtypeStruct((num_tasks,), jnp.int32),
                jax.ShapeDtypeStruct((num_tasks,), jnp.int32),
            )

            def gather(p):
                g = eligible[np.asarray(p)]
                x, y, lengths = pool.read(g)
                return x, y, lengths, g.astype(np.int32)

            x_all, y_all, lengths, groups = jax.pure_callback(
                gather, shapes, pick, vmap_method="sequential"
            )

            def points(k, xg, yg, n):
                u = jax.random.uniform(k, (n_max,))
                u = jnp.where(jnp.arange(n_max) < n, u, 2.0)  # padding sorts last
                idx = jnp.argsort(u)[:need]
                return xg[idx], yg[idx]

            x, y = jax.vmap(points)(jax.random.split(k_perm, num_tasks), x_all, y_all, lengths)
            batch: TaskBatch = split_episode(k_k, x, y, k_min, k_max)
            return batch, groups.astype(jnp.float32)[:, None]

        def sample_params(key, n):
            return jax.random.randint(key, (n, 1), 0, pool.num_groups).astype(jnp.float32)

        return TaskFamily(
            name=label,
            dx=self.dx,
            dy=self.dy,
            sample_params=sample_params,
            mean_fn=None,
            noise_fn=None,
            x_range=(-1.0, 1.0),
            likelihood="gaussian",
            sample_episode=sample_episode,
        )


def open_pool(path: str | os.PathLike) -> GroupPool:
    """Open the pool folder ``path`` (from :func:`write_pool`) read-only, memory-mapped; its
    manifest and the arrays' shapes are checked against each other."""
    path = Path(path)
    manifest = path / "pool.json"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"path: expected a pool folder with pool.json (bayesmeta.tasks.pool.write_pool), "
            f"got {str(path)!r}"
        )
    meta = json.loads(manifest.read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"path: expected a {FORMAT} version {VERSION} manifest, got format "
            f"{meta.get('format')!r} version {meta.get('version')!r}"
        )
    arrays = {k: np.load(path / f"{k}.npy", mmap_mode="r") for k in ("x", "y", "lengths")}
    g, n = meta["groups"], meta["max_rows"]
    want = {"x": (g, n, meta["dx"]), "y": (g, n, meta["dy"]), "lengths": (g,)}
    for k, shape in want.items():
        if tuple(arrays[k].shape) != shape:
            raise ValueError(
                f"path: {k}.npy has shape {tuple(arrays[k].shape)}, the manifest says {shape}"
            )
    return GroupPool(path, arrays["x"], arrays["y"], arrays["lengths"], meta)


def iter_chunks(x: np.ndarray, y: np.ndarray, lengths: np.ndarray, size: int) -> Iterator[Chunk]:
    """``(x, y, lengths)`` in chunks of ``size`` groups (for :func:`write_pool`)."""
    for s in range(0, len(lengths), size):
        yield x[s : s + size], y[s : s + size], lengths[s : s + size]
