"""Typed, frozen, versioned method configurations.

Every method's options are one frozen dataclass (``MAMLConfig``, ``ABMLConfig``, ...), built
once and read by its factory::

    cfg = ABMLConfig(inner_steps=3)            # a typo is a ValueError here, not later
    cfg = dataclasses.replace(cfg, lr=3e-4)    # overrides
    method = abml(model, cfg)                  # or abml(model, inner_steps=3, lr=3e-4)

A checkpoint stores :meth:`MethodConfig.to_dict` (the fields and the class's ``VERSION``);
:meth:`MethodConfig.from_dict` reads any earlier version through the class's ``MIGRATIONS``,
so that renaming an option does not orphan the runs fitted before the rename.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import optax

C = TypeVar("C", bound="MethodConfig")


class ConfigError(ValueError):
    """A method option that does not exist, or a value it cannot take."""


def _rename(mapping: dict[str, str], values: dict[str, dict] | None = None):
    """A migration that renames options (``old -> new``) and, per option, old values."""

    def migrate(d: dict) -> dict:
        out = {mapping.get(k, k): v for k, v in d.items()}
        for key, table in (values or {}).items():
            if key in out and out[key] in table:
                out[key] = table[out[key]]
        return out

    return migrate


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Options every gradient-trained method shares: the default meta-optimiser.

    Attributes
    ----------
    lr : float
        Adam's step size.
    lr_decay_steps : int or None
        Length of the cosine decay of the step size (to ``lr / 10``); None keeps it constant.
    grad_clip : float or None
        Global-norm clip of the meta-gradient.

    Class attributes
    ----------------
    METHOD : str
        The registry name (in error messages).
    VERSION : int
        Bumped whenever an option is renamed or changes meaning.
    MIGRATIONS : dict
        ``version -> (dict -> dict)``: turns the options of ``version`` into those of
        ``version + 1``.
    """

    METHOD: ClassVar[str] = "method"
    VERSION: ClassVar[int] = 1
    MIGRATIONS: ClassVar[Mapping[int, Callable[[dict], dict]]] = {}

    lr: float = 1e-3
    lr_decay_steps: int | None = None
    grad_clip: float | None = 10.0

    def __post_init__(self) -> None:
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ConfigError(f"{self.METHOD}: lr: expected > 0, got {self.lr!r}")
        if self.lr_decay_steps is not None and not (
            isinstance(self.lr_decay_steps, int) and self.lr_decay_steps > 0
        ):
            raise ConfigError(
                f"{self.METHOD}: lr_decay_steps: expected a positive integer or None, "
                f"got {self.lr_decay_steps!r}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(
                f"{self.METHOD}: grad_clip: expected > 0 or None, got {self.grad_clip!r}"
            )

    # -- construction ------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def make(cls: type[C], config: C | Mapping[str, Any] | None = None, **options: Any) -> C:
        """``config`` (an instance, a mapping of options or None for the defaults) with
        ``options`` replaced; an option the class does not have is a :class:`ConfigError`
        naming the valid ones."""
        target = type(config) if isinstance(config, cls) else cls  # keeps a subclass
        if config is None:
            config = {}
        if isinstance(config, MethodConfig):
            if not isinstance(config, cls):
                raise ConfigError(
                    f"config: expected a {cls.__name__} for {cls.METHOD!r}, got a "
                    f"{type(config).__name__}"
                )
            base = dataclasses.asdict(config)
        elif isinstance(config, Mapping):
            base = dict(config)
        else:
            raise ConfigError(
                f"config: expected a {cls.__name__}, a dict of options or None, got "
                f"{type(config).__name__}"
            )
        merged = {**base, **options}
        unknown = sorted(set(merged) - set(target.field_names()))
        if unknown:
            raise ConfigError(
                f"{target.METHOD}: unknown option(s) {unknown}; its options are "
                f"{sorted(target.field_names())}"
            )
        return target(**merged)

    # -- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values, with ``"version"``."""
        out = {"version": self.VERSION}
        for k, v in dataclasses.asdict(self).items():
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], version: int | None = None) -> C:
        """An instance from :meth:`to_dict`'s output of any version up to ``VERSION``
        (``version`` overrides the one recorded; none recorded means 1)."""
        d = dict(data)
        v = d.pop("version", 1) if version is None else version
        d.pop("version", None)
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"{cls.METHOD}: config version: expected >= 1, got {v!r}")
        if v > cls.VERSION:
            raise ConfigError(
                f"{cls.METHOD}: config version {v} was written by a newer bayesmeta; this one "
                f"reads versions up to {cls.VERSION}"
            )
        while v < cls.VERSION:
            d = cls.MIGRATIONS.get(v, dict)(d)
            v += 1
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for k, val in list(d.items()):  # JSON turns tuples into lists
            if k in fields and isinstance(val, list) and "tuple" in str(fields[k].type):
                d[k] = tuple(tuple(x) if isinstance(x, list) else x for x in val)
        return cls.make(d)

    def default_optimizer(self) -> optax.GradientTransformation:
        """Adam with this config's step size, schedule and clipping."""
        from bayesmeta.inference.base import make_optimizer

        return make_optimizer(self.lr, self.grad_clip, self.lr_decay_steps)


def check_choice(cfg: MethodConfig, name: str, choices: tuple) -> None:
    """Raise a :class:`ConfigError` unless option ``name`` is one of ``choices``."""
    value = getattr(cfg, name)
    if value not in choices:
        raise ConfigError(f"{cfg.METHOD}: {name}: expected one of {list(choices)}, got {value!r}")


def check_positive_int(cfg: MethodConfig, *names: str, allow_zero: bool = False) -> None:
    """Raise a :class:`ConfigError` unless each option is an integer > 0 (or >= 0)."""
    for name in names:
        value = getattr(cfg, name)
        low = 0 if allow_zero else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            kind = "a non-negative" if allow_zero else "a positive"
            raise ConfigError(f"{cfg.METHOD}: {name}: expected {kind} integer, got {value!r}")


def check_positive(cfg: MethodConfig, *names: str) -> None:
    """Raise a :class:`ConfigError` unless each option is a number > 0."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"{cfg.METHOD}: {name}: expected > 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How long and on what a method is meta-trained (the recipe's training half).

    Attributes
    ----------
    steps : int
        Meta-training steps.
    meta_batch : int
        Tasks per meta-step.
    num_query : int
        Query points per training task.
    chunk_size : int
        Steps per jitted ``lax.scan`` chunk (progress, checkpoints and validation happen
        between chunks).
    max_seconds : float or None
        An explicit wall-clock cap (recorded in the run; no default recipe has one).
    k_power : float
        Support sizes K are drawn with probability ∝ K^k_power.
    """

    steps: int = 10_000
    meta_batch: int = 25
    num_query: int = 10
    chunk_size: int = 250
    max_seconds: float | None = None
    k_power: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "meta_batch", "num_query", "chunk_size"):
            value = getattr(self, name)
            low = 0 if name == "steps" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"max_seconds: expected > 0 or None, got {self.max_seconds!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


__all__ = [
    "ConfigError",
    "MethodConfig",
    "TrainConfig",
    "check_choice",
    "check_positive",
    "check_positive_int",
]
