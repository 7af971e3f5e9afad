"""Value ranges of numeric config fields and options: every int / float field of a config is
annotated with one, e.g. `latent_dim: PositiveInt`, and parsing refuses a value outside it, naming
the field's path. Floats must also be finite: NaN and infinity are never valid."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Range:
    """The values a numeric field accepts: `low` .. `high` (None: unbounded), each end included
    unless `low_open` / `high_open`. Attach it with `Annotated[int, Range(1)]`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self, kind: type = float) -> str:
        """E.g. "an integer >= 1", "a number in [0, 1)", "a finite number > 0"."""
        noun = "an integer" if kind is int else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{noun} in {left}{_number(self.low)}, {_number(self.high)}{right}"
        noun = noun if kind is int else "a finite number"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None:
            return f"{noun} {'<' if self.high_open else '<='} {_number(self.high)}"
        return noun

    def check(self, kind: type, value: Any, where: str) -> int | float:
        """`value` as a `kind` (int or float) within the range, or a ConfigError that names `where`,
        the range and the value."""
        if kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                try:
                    value = float(value)
                except OverflowError:  # an integer beyond the float range
                    ok = False
                ok = ok and math.isfinite(value)
        if not (ok and self.contains(value)):
            raise ConfigError(f"{where}: expected {self.describe(kind)}, got {brief_repr(value)}")
        return value


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def brief_repr(value: Any, limit: int = 80) -> str:
    """repr(value), cut to at most `limit` characters: error messages quote untrusted values."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def range_of(tp: Any) -> tuple[type, Range] | None:
    """(int or float, its Range) of an annotated numeric type such as `PositiveInt`, else None."""
    if typing.get_origin(tp) is Annotated:
        inner, *extras = typing.get_args(tp)
        bounds = next((e for e in extras if isinstance(e, Range)), None)
        if inner in (int, float) and bounds is not None:
            return inner, bounds
    return None


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
# Seeds go to numpy's generators (numpy.random.seed takes 0 .. 2**32 - 1; accelerate adds the
# process index to the training seed), so they are non-negative and well inside 32 bits.
Seed = Annotated[int, Range(0, 2**31 - 1)]
PositiveFloat = Annotated[float, Range(0, low_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Fraction = Annotated[float, Range(0, 1)]  # [0, 1]
FractionBelowOne = Annotated[float, Range(0, 1, high_open=True)]  # [0, 1): dropout, decay, beta
EfficientNetBlock = Annotated[int, Range(0, 15)]  # EfficientNet-Lite0 has 16 blocks
