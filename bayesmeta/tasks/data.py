"""Your own grouped data as tasks: rows ``(x, y, group)`` from arrays, a CSV file, a pandas
DataFrame or a padded pool of tasks.

Each group (a patient, school, sensor, shop, user) is a task. :class:`Rows` holds the rows
as the user gave them; :meth:`Rows.split` divides the *groups* (never rows) into train,
validation and test, fits a :class:`Standardizer` on the training groups only, and returns
:class:`~bayesmeta.tasks.grouped.GroupedData` per split: standardised, padded by group, with
the group sizes. ``GroupedData.family()`` is a task family whose episodes are cut inside the
jitted training scan from device-resident arrays: per task a random support/query split of
one group without replacement, support sizes drawn from the recipe's range, padded and
masked, one compilation for every batch.

    rows = from_groups(x, y, groups)                      # x (N, Dx), y (N,) or (N, Dy)
    rows = from_csv("schools.csv", x=["iq", "ses"], y="score", group="school")
    splits = rows.split(seed=0)                           # .train .validation .test .scaler
    family = splits.train.family()                        # meta-train on this

Labels (integer ``y``) make a classification data set: they are checked to be integers and
are not standardised. A model of the user's own decides how ``y`` is read
(:func:`rows_for_observation`): a count or binary observation site (Poisson, negative
binomial, Bernoulli) takes ``y`` in its own units, never standardised and checked against the
site's support before training; a continuous one takes integers as real values. Integers turn
into class labels by their type alone only for the built-in ``mlp``, and it says so.

Bad input is refused with a ``ValueError`` of one line naming the argument or file, the column
and the row (in a CSV file, the file's line number, the header being line 1): a file that is
not UTF-8 text, a column named twice or in two roles (the target or the group id among the
features), NaN, inf or values beyond float32 range, a missing group id, and a real target that
is constant over the training groups.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bayesmeta.tasks.grouped import GroupedData

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Standardizer:
    """Affine maps to and from standardised units, fitted on the training groups.

    ``x_std = (x − x_mean) / x_scale``; for a real ``y`` likewise with ``y_mean``, ``y_scale``
    (``None`` for labels). A density in standardised units converts back with the Jacobian:
    log p(y) = log p(y_std) − Σ log y_scale.
    """

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray | None
    y_scale: np.ndarray | None

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray | None) -> Standardizer:
        """Means and standard deviations per column; a constant column gets scale 1.

        A column is constant when its largest and smallest values are equal: the computed
        standard deviation of a constant column can be rounding noise rather than zero, and
        dividing by it would blow values up.
        """
        y_mean = y_scale = None
        if y is not None:
            y_mean, y_scale = y.mean(0), _scale(y)
        return cls(x.mean(0), _scale(x), y_mean, y_scale)

    def transform_x(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x) - self.x_mean) / self.x_scale

    def transform_y(self, y: np.ndarray) -> np.ndarray:
        return y if self.y_mean is None else (np.asarray(y) - self.y_mean) / self.y_scale

    def inverse_y(self, y_std: np.ndarray) -> np.ndarray:
        """Values (means, draws) from standardised units back to the data's own units."""
        return y_std if self.y_mean is None else np.asarray(y_std) * self.y_scale + self.y_mean

    def log_jacobian(self) -> float:
        """Σ log y_scale: subtract from a standardised log density to get the data's units."""
        return 0.0 if self.y_scale is None else float(np.sum(np.log(self.y_scale)))

    def to_json(self) -> dict[str, Any]:
        def lst(a):
            return None if a is None else np.asarray(a, np.float64).tolist()

        return {k: lst(getattr(self, k)) for k in ("x_mean", "x_scale", "y_mean", "y_scale")}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Standardizer:
        def arr(v):
            return None if v is None else np.asarray(v, np.float64)

        return cls(*(arr(d[k]) for k in ("x_mean", "x_scale", "y_mean", "y_scale")))


def _scale(a: np.ndarray) -> np.ndarray:
    """Standard deviation per column, 1 where the column is constant.

    The deviations are divided by the column's range before squaring, so that neither tiny
    values (whose squares underflow to 0) nor huge ones (whose squares overflow) break it.
    """
    lo, span = a.min(0), np.ptp(a, 0)
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, ((a - lo) / safe).std(0) * span, 1.0)


@dataclass(frozen=True)
class Splits:
    """The three group-disjoint splits of a data set and the training groups' standardiser."""

    train: GroupedData
    validation: GroupedData
    test: GroupedData
    scaler: Standardizer

    def __getitem__(self, name: str) -> GroupedData:
        if name not in SPLITS:
            raise ValueError(f"split: expected one of {list(SPLITS)}, got {name!r}")
        return getattr(self, name)


@dataclass(frozen=True)
class Rows:
    """Grouped rows in the data's own units: ``x (N, Dx)`` float, ``y (N, Dy)`` float or
    ``(N,)`` integer labels, ``groups (N,)`` (any labels)."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    features: tuple[str, ...]
    target: str
    name: str = "data"
    #: ``y`` are labels only because its values were integers (``labels=None``): a model
    #: whose observation site is real or a count may read them as such
    #: (:func:`rows_for_observation`)
    labels_inferred: bool = False

    @property
    def classification(self) -> bool:
        return self.y.ndim == 1

    def as_real(self) -> Rows:
        """The same rows with ``y`` as one real column ``(N, 1)`` (labels read as numbers)."""
        if not self.classification:
            return self
        y = self.y.astype(np.float64)[:, None]
        return Rows(self.x, y, self.groups, self.features, self.target, self.name)

    @property
    def group_labels(self) -> np.ndarray:
        return np.unique(self.groups)

    def split(
        self,
        seed: int = 0,
        fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        min_group_size: int = 2,
        standardize_y: bool = True,
    ) -> Splits:
        """Split the groups (never their rows) into train / validation / test.

        The sorted group labels are permuted by ``numpy.random.default_rng(seed)`` and cut by
        ``fractions``; each split gets at least one group and train at least two. Groups with
        fewer than ``min_group_size`` rows are left out first (an episode needs at least one
        support and one query point). The standardiser is fitted on the training groups' rows;
        ``standardize_y=False`` keeps a real ``y`` in its own units (counts for a Poisson
        model, where an affine map would break the likelihood).

        Raises
        ------
        ValueError
            For bad ``fractions`` or ``min_group_size``, too few groups, a real ``y`` column
            that is constant over the training groups (nothing to learn, and no scale to
            standardise by), or a value that standardises beyond float32 range (a column
            whose training groups barely vary while other groups lie far away).
        """
        fr = np.asarray(fractions, np.float64)
        if fr.shape != (3,) or np.any(fr <= 0) or not np.isclose(fr.sum(), 1.0):
            raise ValueError(
                f"fractions: expected three positive numbers summing to 1 (train, validation, "
                f"test), got {tuple(fractions)}"
            )
        if int(min_group_size) < 2:
            raise ValueError(f"min_group_size: expected at least 2, got {min_group_size}")
        labels, counts = np.unique(self.groups, return_counts=True)
        keep = labels[counts >= min_group_size]
        if keep.size < 4:
            small = int((counts < min_group_size).sum())
            raise ValueError(
                f"groups: expected at least 4 groups with >= {min_group_size} rows (two to "
                f"train, one to validate, one to test), got {keep.size} of {labels.size}"
                + (f" ({small} are smaller; lower min_group_size)" if small else "")
            )
        perm = keep[np.random.default_rng(seed).permutation(keep.size)]
        n_val = max(1, int(round(fr[1] * keep.size)))
        n_test = max(1, int(round(fr[2] * keep.size)))
        n_train = keep.size - n_val - n_test
        if n_train < 2:
            raise ValueError(
                f"fractions: {tuple(fractions)} of {keep.size} groups leaves {n_train} training "
                "groups; at least 2 are needed"
            )
        parts = {
            "train": np.sort(perm[:n_train]),
            "validation": np.sort(perm[n_train : n_train + n_val]),
            "test": np.sort(perm[n_train + n_val :]),
        }
        in_train = np.isin(self.groups, parts["train"])
        if not self.classification:
            y_train = self.y[in_train]
            flat = np.flatnonzero(np.ptp(y_train, 0) == 0)
            if flat.size:
                j = int(flat[0])
                raise ValueError(
                    f"y: column {self._y_names()[j]!r} has zero spread in the {n_train} training "
                    f"groups (every value is {y_train[0, j]:g}); expected a target that varies"
                )
        y_fit = None if self.classification or not standardize_y else self.y[in_train]
        scaler = Standardizer.fit(self.x[in_train], y_fit)
        self._check_standardised(scaler)
        return Splits(
            **{name: self._padded(name, g, scaler) for name, g in parts.items()}, scaler=scaler
        )

    def _y_names(self) -> list[str]:
        """Names of the columns of a real ``y`` for error messages."""
        return _y_columns(self.target, self.y.shape[1])

    def _check_standardised(self, scaler: Standardizer) -> None:
        """Refuse a value whose standardised form does not fit the float32 the device uses."""
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            parts = [("x", scaler.transform_x(self.x), scaler.x_scale, self.features)]
            if not self.classification and scaler.y_scale is not None:
                parts.append(("y", scaler.transform_y(self.y), scaler.y_scale, self._y_names()))
            for arg, a, scale, names in parts:
                bad = ~(np.abs(a) <= _F32_MAX)
                if bad.any():
                    r, j = (int(i) for i in np.argwhere(bad)[0])
                    raise ValueError(
                        f"{arg}: expected values that standardise within float32 range, got "
                        f"{a[r, j]:g} in column {names[j]!r} (group {_id(self.groups[r])}): its "
                        f"spread over the training groups ({scale[j]:g}) is too small for the "
                        "values of other groups"
                    )

    def _padded(self, split: str, labels: np.ndarray, scaler: Standardizer) -> GroupedData:
        rows = [np.flatnonzero(self.groups == g) for g in labels]
        lengths = np.array([r.size for r in rows])
        n_max, dx = int(lengths.max()), self.x.shape[1]
        xs = scaler.transform_x(self.x)
        xp = np.zeros((labels.size, n_max, dx), np.float32)
        if self.classification:
            yp = np.zeros((labels.size, n_max), np.int32)
            ys = self.y
        else:
            yp = np.zeros((labels.size, n_max, self.y.shape[1]), np.float32)
            ys = scaler.transform_y(self.y)
        for i, r in enumerate(rows):
            xp[i, : r.size] = xs[r]
            yp[i, : r.size] = ys[r]
        return GroupedData(
            name=self.name,
            split=split,
            x=xp,
            y=yp,
            lengths=lengths,
            groups=labels,
            features=self.features,
            target=self.target,
            x_mean=scaler.x_mean,
            x_std=scaler.x_scale,
            y_mean=scaler.y_mean,
            y_std=scaler.y_scale,
        )


#: Largest magnitude a value may have: the device computes in float32, and task files store
#: the data's own units as float32.
_F32_MAX = float(np.finfo(np.float32).max)

#: Where a row is, for error messages: row index -> "at row 5" / "on line 7 of 'a.csv'".
_Where = Callable[[int], str]


def _at_row(r: int) -> str:
    return f"at row {r}"


def _y_columns(target: str, dy: int) -> list[str]:
    """Names of the columns of a real ``y`` (``target``, or ``target[j]`` for several)."""
    return [target] if dy == 1 else [f"{target}[{j}]" for j in range(dy)]


def _count(k: int, one: str, many: str) -> str:
    """``"1 row"``, ``"3 rows"``."""
    return f"{k} {one if k == 1 else many}"


def _id(value: Any) -> str:
    """A group id for messages: ``'s1'``, ``7`` (not ``np.int64(7)``)."""
    return _short(value.item() if isinstance(value, np.generic) else value)


def _short(value: Any, limit: int = 40) -> str:
    """``repr`` of a value, cut to ``limit`` characters (a cell of a binary file can be long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_values(name: str, arr: np.ndarray, columns: Sequence[str] | None,
                  where: _Where = _at_row) -> None:  # fmt: skip
    """Refuse NaN, inf and finite values beyond float32 range in a 2-D float array.

    Parameters
    ----------
    name : str
        The argument (``"x"``, ``"--y"``) the message starts with.
    arr : numpy.ndarray
        ``(N, D)`` float64 values.
    columns : sequence of str or None
        The name of each column (``None``: columns are named by their index).
    where : callable
        Row index -> its place in the user's input (a row index, a file's line).

    Raises
    ------
    ValueError
        Naming the column and the first bad row, with the number of bad entries.
    """

    def column(j: int) -> str:
        return repr(columns[j]) if columns is not None and j < len(columns) else str(j)

    bad = ~np.isfinite(arr)
    if bad.any():
        r, j = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}: expected finite values in column {column(j)}, got {arr[r, j]} "
            f"{where(r)} ({_count(int(bad.sum()), 'NaN/inf entry', 'NaN/inf entries')} in all)"
        )
    huge = np.abs(arr) > _F32_MAX
    if huge.any():
        r, j = (int(i) for i in np.argwhere(huge)[0])
        raise ValueError(
            f"{name}: expected values within float32 range (|v| <= {_F32_MAX:.3g}) in column "
            f"{column(j)}, got {arr[r, j]:g} {where(r)}"
        )


def _as_2d_float(name: str, a: Any, n: int | None = None,
                 columns: Sequence[str] | None = None) -> np.ndarray:  # fmt: skip
    """``a`` as ``(N, D)`` float64 (a 1-D ``a`` is one column), checked by
    :func:`_check_values`; ``n`` is the number of rows it must have."""
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected numbers, got {np.asarray(a).dtype} values") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected shape (N,) or (N, D), got {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} rows (one per row of x), got {arr.shape[0]}")
    _check_values(name, arr, columns)
    return arr


def _missing_id(value: Any) -> bool:
    """Whether one group id is missing: ``None``, NaN/inf or a blank string."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float | np.floating):
        return not np.isfinite(value)
    return False


def _check_groups(g: np.ndarray, name: str, column: str | None = None,
                  where: _Where = _at_row) -> None:  # fmt: skip
    """Refuse a missing group id (``None``, NaN/inf, a blank string) and ids of mixed types.

    Raises
    ------
    ValueError
        Naming ``name`` (and ``column``) and the first row without an id.
    """
    if g.dtype.kind == "f":
        missing = ~np.isfinite(g)
    elif g.dtype.kind in "US":
        missing = np.char.str_len(np.char.strip(g)) == 0
    elif g.dtype.kind == "O":
        missing = np.fromiter((_missing_id(v) for v in g), bool, count=g.size)
    else:
        missing = np.zeros(g.shape, bool)
    place = f" in column {column!r}" if column is not None else " on every row"
    if missing.any():
        r = int(np.flatnonzero(missing)[0])
        got = "an empty one" if isinstance(g[r], str | bytes) else _id(g[r])
        raise ValueError(
            f"{name}: expected a group id{place}, got {got} {where(r)} "
            f"({_count(int(missing.sum()), 'row', 'rows')} without one)"
        )
    if g.dtype.kind == "O":
        try:
            np.unique(g)
        except TypeError:
            kinds = sorted({type(v).__name__ for v in g})
            msg = f"{name}: expected group ids of one type{place}, got {kinds}"
            raise ValueError(msg) from None


def from_groups(
    x: Any,
    y: Any,
    groups: Any,
    *,
    features: Sequence[str] | None = None,
    target: str = "y",
    name: str = "data",
    labels: bool | None = None,
) -> Rows:
    """Grouped rows from arrays: ``x (N, Dx)`` (or ``(N,)``), ``y (N,)``/``(N, Dy)`` real or
    ``(N,)`` integer labels, and a group id per row.

    ``labels=None`` treats an integer-typed 1-D ``y`` as class labels for a classifier and as
    numbers for a model whose observation site is real or a count (``Rows.labels_inferred``);
    pass ``labels=True`` (labels stored as floats that must be whole numbers) or ``False``
    (numbers) to choose.

    Raises
    ------
    ValueError
        For mismatched shapes; NaN, inf or values beyond float32 range (naming the column of
        ``features`` or ``target`` and the row); a missing group id; labels that are not
        non-negative whole numbers.
    """
    feats = tuple(features) if features is not None else None
    xa = _as_2d_float("x", x, columns=feats)
    n = xa.shape[0]
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(f"groups: expected shape ({n},) (one id per row of x), got {g.shape}")
    _check_groups(g, "groups")
    ya = np.asarray(y)
    inferred = labels is None and ya.ndim == 1 and ya.dtype.kind in "iub"
    if labels is None:
        labels = inferred
    if labels:
        if ya.ndim != 1 or ya.shape[0] != n:
            raise ValueError(f"y: expected integer labels of shape ({n},), got {ya.shape}")
        yf = _as_2d_float("y", ya, n, columns=[target])[:, 0]
        if not np.all(yf == np.round(yf)) or (yf < 0).any():
            raise ValueError("y: expected non-negative integer class labels, got "
                             f"{yf[(yf != np.round(yf)) | (yf < 0)][:3].tolist()}")  # fmt: skip
        ya = yf.astype(np.int64)
    else:
        dy = ya.shape[1] if ya.ndim == 2 else 1
        ya = _as_2d_float("y", ya, n, columns=_y_columns(target, dy))
    if feats is None:
        feats = tuple(f"x{i}" for i in range(xa.shape[1]))
    if len(feats) != xa.shape[1]:
        raise ValueError(f"features: expected {xa.shape[1]} names, got {len(feats)}")
    return Rows(xa, ya, g, feats, target, name, labels_inferred=bool(inferred))


def observation_kind(support: Any) -> str:
    """``"real"`` for a continuous observation site's support, ``"discrete"`` for counts,
    binary or bounded integers (NumPyro's ``constraint.is_discrete``)."""
    return "discrete" if getattr(support, "is_discrete", False) else "real"


def rows_for_observation(rows: Rows, support: Any, what: str) -> tuple[Rows, bool]:
    """The rows as a model whose observation site ``y`` has ``support`` reads them, and
    whether to standardise ``y``.

    A discrete site (Poisson, negative binomial, Bernoulli, binomial counts) takes ``y`` in
    its own units as one column, never standardised (an affine map breaks a count
    likelihood), and every value must lie in the support; integer values that ``from_groups``
    took for labels only because of their type are read as counts. A continuous site takes a
    real, standardised ``y``; integer values become real numbers unless labels were asked for
    explicitly.

    Parameters
    ----------
    rows : Rows
    support : numpyro.distributions.constraints.Constraint
        The support of the model's observation site.
    what : str
        The site for messages (e.g. ``"Poisson"``).

    Raises
    ------
    ValueError
        One line naming the column, the value and its group: a value outside a discrete
        support, or class labels (``labels=True``) for a model with a real or count site.
    """
    kind = observation_kind(support)
    if rows.classification and not rows.labels_inferred:
        raise ValueError(
            f"y: the model's observation site 'y' is {what} ({kind}), but column "
            f"{rows.target!r} was read as class labels (labels=True); pass labels=False"
        )
    rows = rows.as_real()
    if kind == "real":
        return rows, True
    if rows.y.shape[1] != 1 and not getattr(support, "event_dim", 0):
        raise ValueError(f"y: expected one column for {what} counts, got {rows.y.shape[1]}")
    ok = np.asarray(support.check(rows.y), bool).reshape(rows.y.shape[0], -1).all(-1)
    if not ok.all():
        r = int(np.flatnonzero(~ok)[0])
        raise ValueError(
            f"y: the model's observation site 'y' is {what} (discrete support {support}), got "
            f"{rows.y[r, 0]:g} in column {rows.target!r} {_at_row(r)} (group "
            f"{_id(rows.groups[r])}; {int((~ok).sum())} such rows)"
        )
    return rows, False


def check_splits_for_observation(splits: Splits, support: Any, what: str) -> None:
    """Refuse splits whose ``y`` a model with this observation ``support`` cannot read:
    standardised or out-of-support values for a discrete site, labels for a real one."""
    kind = observation_kind(support)
    if splits.train.classification:
        raise ValueError(
            f"data: the model's observation site 'y' is {what} ({kind}), but the splits hold "
            "class labels; build the rows with labels=False"
        )
    if kind == "real":
        return
    if splits.scaler.y_mean is not None:
        raise ValueError(
            f"data: the model's observation site 'y' is {what} (discrete), but these splits "
            "standardised y; split the rows with standardize_y=False (or pass the Rows)"
        )
    for name in SPLITS:
        part = splits[name]
        real = np.arange(part.y.shape[1])[None, :] < part.lengths[:, None]
        y = part.y[real]
        ok = np.asarray(support.check(y), bool).reshape(y.shape[0], -1).all(-1)
        if not ok.all():
            raise ValueError(
                f"data: the model's observation site 'y' is {what} (discrete support "
                f"{support}), got {float(y[~ok][0, 0]):g} in the {name} split"
            )


def _check_roles(xs: Sequence[str], y: str, group: str, args: tuple[str, str, str]) -> None:
    """Refuse a column named in two roles: a feature twice, the target or the group id among
    the features (a target leak; group ids are no features).

    ``args`` names the three arguments (``("--x", "--y", "--group")``) in the messages.
    """
    ax, ay, ag = args
    seen: set[str] = set()
    for c in xs:
        if c in seen:
            raise ValueError(f"{ax}: column {c!r} is listed twice, got {list(xs)}")
        seen.add(c)
    if y in seen:
        raise ValueError(
            f"{ax}: column {y!r} is also {ay} (the target would leak into the inputs); "
            f"expected {ax} without it"
        )
    if group in seen:
        raise ValueError(
            f"{ax}: column {group!r} is also {ag} (group ids are no features); "
            f"expected {ax} without it"
        )


def _columns(header: Sequence[str], names: Sequence[str], arg: str, source: str) -> list[int]:
    header = list(header)
    out = []
    for c in names:
        if c not in header:
            shown = ", ".join(_short(h) for h in header[:20])
            more = f", ... ({len(header) - 20} more)" if len(header) > 20 else ""
            raise ValueError(f"{arg}: no column {c!r} in {source} (columns: [{shown}{more}])")
        out.append(header.index(c))
    return out


def _line_at(text: str, pos: int) -> int:
    """The 1-based line of ``text`` holding character ``pos`` (``\\n``, ``\\r\\n``, ``\\r``)."""
    head = text[:pos]
    return 1 + head.count("\n") + head.count("\r") - head.count("\r\n")


def _read_csv(path: Path, src: str) -> tuple[list[str], list[list[str]], list[int]]:
    """The header and the non-blank rows of a UTF-8 CSV file, with the file's line number
    (1-based; a quoted cell may span lines: the line the row starts on) of each row.

    A UTF-8 byte-order mark is dropped. Text that is not UTF-8 (Latin-1, a binary file), a
    NUL character and a malformed CSV are refused with one line naming the file.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"--data: expected a readable file, got {src} ({err.strerror})") from None
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        head = raw[: err.start].decode("utf-8")
        line = _line_at(head, len(head))
        raise ValueError(
            f"--data: expected UTF-8 text in {src}, got byte 0x{raw[err.start]:02x} on line "
            f"{line} (save the file as UTF-8)"
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        raise ValueError(
            f"--data: expected UTF-8 text in {src}, got a NUL character on line "
            f"{_line_at(text, nul)} (a binary file?)"
        )
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        start = 1
        for r in reader:
            if r and header is None:
                header = [h.strip() for h in r]
            elif r:
                rows.append(r)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as err:
        raise ValueError(
            f"--data: expected a CSV file, got {err} on line {reader.line_num} of {src}"
        ) from None
    if header is None:
        raise ValueError(f"FILE: {src} is empty")
    first: dict[str, int] = {}
    for i, h in enumerate(header):
        if h and h in first:
            raise ValueError(
                f"--data: column {h!r} appears twice in the header of {src} (columns "
                f"{first[h] + 1} and {i + 1}); expected unique column names"
            )
        first.setdefault(h, i)
    return header, rows, lines


def from_csv(
    path: str | os.PathLike,
    *,
    x: Sequence[str] | str,
    y: str,
    group: str,
    labels: bool | None = None,
) -> Rows:
    """Grouped rows from a CSV file with a header row (read with the standard library; pandas
    is not needed). ``x`` names one or more feature columns, ``y`` the target, ``group`` the
    group id. ``labels=True`` makes ``y`` class labels (a classification data set): whole
    numbers 0..C−1, or names, coded 0..C−1 in sorted order; otherwise ``y`` is real.

    The file must be UTF-8 text (a byte-order mark is dropped) with unique header names.

    Raises
    ------
    ValueError
        One line naming the file, the column and the file's line number (the header is
        line 1): text that is not UTF-8; a column named twice or in two roles (``y`` or
        ``group`` among ``x``); a missing, non-numeric, NaN, infinite or out-of-float32-range
        value; a missing group id.
    """
    xs = [x] if isinstance(x, str) else list(x)
    _check_roles(xs, y, group, ("--x", "--y", "--group"))
    path = Path(path)
    src = repr(str(path))
    header, rows, lines = _read_csv(path, src)
    ix = _columns(header, xs, "--x", src)
    (iy,) = _columns(header, [y], "--y", src)
    (ig,) = _columns(header, [group], "--group", src)
    if not rows:
        raise ValueError(f"FILE: {src} has a header but no rows")

    def where(i: int) -> str:
        return f"on line {lines[i]} of {src}"

    def cells(col: int, name: str, arg: str) -> list[str]:
        try:
            return [r[col] for r in rows]
        except IndexError:
            i = next(i for i, r in enumerate(rows) if col >= len(r))
            raise ValueError(
                f"{arg}: expected a value in column {name!r}, got a row of {len(rows[i])} "
                f"fields (the header has {len(header)}) {where(i)}"
            ) from None

    def numeric(col: int, name: str, arg: str) -> np.ndarray:
        column = cells(col, name, arg)
        try:
            values = np.array([float(c) for c in column])
        except ValueError:
            i = next(i for i, c in enumerate(column) if not _is_number(c))
            raise ValueError(
                f"{arg}: column {name!r} is not numeric (line {lines[i]} of {src} has "
                f"{_short(column[i])})"
            ) from None
        _check_values(arg, values[:, None], [name], where)
        return values

    xa = np.stack([numeric(i, n, "--x") for i, n in zip(ix, xs, strict=True)], 1)
    if labels and not all(_is_number(c) for c in cells(iy, y, "--y")):
        # Named classes ("setosa", "virginica"): codes in sorted order of the names, which
        # depends on the file only, so fit, tasks and evaluate agree.
        names = [c.strip() for c in cells(iy, y, "--y")]
        ya = np.unique(names, return_inverse=True)[1].astype(np.int64)
    else:
        ya = numeric(iy, y, "--y")
    if labels is None:
        labels = False
    ga = np.array(cells(ig, group, "--group"))
    _check_groups(ga, "--group", group, where)
    return from_groups(xa, ya, ga, features=xs, target=y, name=path.stem, labels=labels)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def from_dataframe(df: Any, *, x: Sequence[str] | str, y: str, group: str,
                   labels: bool | None = None, name: str = "data") -> Rows:  # fmt: skip
    """Grouped rows from a pandas DataFrame's named columns (pandas is optional).

    Raises
    ------
    ValueError
        Naming the column: a column missing, named twice, in two roles (``y`` or ``group``
        among ``x``) or duplicated in the DataFrame; a non-numeric feature; a NaN, infinite
        or out-of-float32-range value or a missing group id (with its row position).
    """
    xs = [x] if isinstance(x, str) else list(x)
    _check_roles(xs, y, group, ("x", "y", "group"))
    cols = list(df.columns)
    _columns(cols, xs, "x", "the DataFrame")
    _columns(cols, [y, group], "y/group", "the DataFrame")
    twice = next((c for c in [*xs, y, group] if cols.count(c) > 1), None)
    if twice is not None:
        raise ValueError(
            f"x/y/group: column {twice!r} appears {cols.count(twice)} times in the DataFrame; "
            "expected unique column names"
        )
    non_numeric = [c for c in xs if df[c].dtype.kind not in "biuf"]
    if non_numeric:
        raise ValueError(
            f"x: column {non_numeric[0]!r} is not numeric ({df[non_numeric[0]].dtype})"
        )
    g = np.asarray(df[group].to_numpy())
    _check_groups(g, "group", group)
    return from_groups(df[xs].to_numpy(), df[y].to_numpy(), g, features=xs, target=y,
                       name=name, labels=labels)  # fmt: skip


def from_pool(x: Any, y: Any, n: Any, *, name: str = "pool") -> Rows:
    """Grouped rows from a padded pool of tasks: ``x (T, N, Dx)``, ``y (T, N[, Dy])`` and
    ``n (T,)`` real points per task (rows past ``n[t]`` are padding and are dropped)."""
    xa, ya, na = np.asarray(x), np.asarray(y), np.asarray(n)
    if xa.ndim != 3:
        raise ValueError(f"x: expected a pool of shape (T, N, Dx), got {xa.shape}")
    t, nmax = xa.shape[:2]
    if ya.shape[:2] != (t, nmax) or ya.ndim not in (2, 3):
        raise ValueError(f"y: expected shape ({t}, {nmax}) or ({t}, {nmax}, Dy), got {ya.shape}")
    if na.shape != (t,) or na.dtype.kind not in "iu" or (na < 1).any() or (na > nmax).any():
        raise ValueError(f"n: expected ({t},) integers in [1, {nmax}], got {na.shape} {na.dtype}")
    keep = np.arange(nmax)[None, :] < na[:, None]
    groups = np.broadcast_to(np.arange(t)[:, None], (t, nmax))[keep]
    return from_groups(xa[keep], ya[keep], groups, name=name)


def load_pool_file(path: str | os.PathLike) -> Rows:
    """A training-pool task file (``x (T,N,Dx)``, ``y``, ``n (T,)``; docs/formats.md), read
    without pickle."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise ValueError(
            f"FILE: {str(path)!r} is not a readable .npz ({type(err).__name__})"
        ) from None
    missing = [k for k in ("x", "y", "n") if k not in arrays]
    if missing:
        raise ValueError(f"FILE: {str(path)!r} lacks {missing} (a pool holds x, y and n)")
    return from_pool(arrays["x"], arrays["y"], arrays["n"], name=path.stem)


def load_rows(
    path: str | os.PathLike,
    *,
    x: Sequence[str] | str | None = None,
    y: str | None = None,
    group: str | None = None,
    labels: bool = False,
) -> Rows:
    """Grouped rows from a ``.csv`` (``x``, ``y`` and ``group`` name its columns; ``labels``:
    ``y`` holds class labels) or a training-pool ``.npz`` (the column names are not needed;
    integer ``y`` are labels)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--data: no file at {str(path)!r}")
    if path.suffix.lower() == ".npz":
        return load_pool_file(path)
    if path.suffix.lower() != ".csv":
        raise ValueError(f"--data: expected a .csv or a pool .npz, got {str(path)!r}")
    missing = [f for f, v in (("--group", group), ("--x", x), ("--y", y)) if not v]
    if missing:
        raise ValueError(f"{missing[0]}: a CSV needs --group COL, --x COL[,COL...] and --y COL")
    return from_csv(path, x=x, y=y, group=group, labels=labels)


def held_out_tasks(
    rows: Rows, groups: np.ndarray, k: int, seed: int = 0, min_group_size: int | None = None
) -> dict[str, np.ndarray]:
    """A task file (docs/formats.md) in the data's own units: one task per group of
    ``groups``, ``k`` support points drawn without replacement (``numpy`` generator
    ``seed``), the rest of the group as query points, padded with ``mask_query``.

    Every group needs at least ``k + 1`` rows; with ``min_group_size`` the smaller groups
    are left out instead of refused.
    """
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"--k: expected a positive integer, got {k!r}")
    rows_of = [np.flatnonzero(rows.groups == g) for g in groups]
    sizes = np.array([r.size for r in rows_of])
    need = max(k + 1, min_group_size or 0)
    small = sizes < need
    if small.any() and min_group_size is None:
        raise ValueError(
            f"--k: {int(small.sum())} of {len(groups)} groups have fewer than K + 1 = {k + 1} "
            f"rows (smallest: {int(sizes.min())}); lower --k or pass --min-group-size "
            f"{k + 1} to leave them out"
        )
    rows_of = [r for r, s in zip(rows_of, small, strict=True) if not s]
    if not rows_of:
        raise ValueError(f"--min-group-size: no group has {need} rows or more")
    rng = np.random.default_rng(seed)
    q_max = max(r.size for r in rows_of) - k
    t, dx = len(rows_of), rows.x.shape[1]
    ydims = () if rows.classification else (rows.y.shape[1],)
    ydt = np.int32 if rows.classification else np.float32
    out = {
        "x_support": np.zeros((t, k, dx), np.float32),
        "y_support": np.zeros((t, k, *ydims), ydt),
        "x_query": np.zeros((t, q_max, dx), np.float32),
        "y_query": np.zeros((t, q_max, *ydims), ydt),
        "mask_query": np.zeros((t, q_max), np.float32),
    }
    for i, r in enumerate(rows_of):
        perm = r[rng.permutation(r.size)]
        s, q = perm[:k], perm[k:]
        out["x_support"][i], out["y_support"][i] = rows.x[s], rows.y[s]
        out["x_query"][i, : q.size], out["y_query"][i, : q.size] = rows.x[q], rows.y[q]
        out["mask_query"][i, : q.size] = 1.0
    from bayesmeta.tasks.base import TaskSet

    return TaskSet(out, units="data")


__all__ = [
    "SPLITS",
    "Rows",
    "Splits",
    "Standardizer",
    "from_csv",
    "from_dataframe",
    "from_groups",
    "from_pool",
    "held_out_tasks",
    "load_pool_file",
    "load_rows",
    "observation_kind",
    "rows_for_observation",
]
