"""Numbers and lists as users write them: ``8/255`` or ``0.0314``, ``a,b,c``; parsed once for configs, flags and run files."""
from __future__ import annotations

import math
import re
from typing import Any, List, Optional

from wsol.errors import ConfigError

MAX_SEED = 2**63 - 1
"""Seeds are 0..2^63−1 (flags and configs): numpy refuses a negative seed and torch one past 64 bits."""

_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


def parse_number(value: Any, key: str = "value") -> float:
    """A finite float from a number or a string like ``'8/255'`` or ``'0.0314'``; NaN and ±inf are refused."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    number: Optional[float] = None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = _FRACTION.match(value)
        try:
            if match:
                den = float(match.group(2))
                if den == 0:
                    raise ConfigError(f"{key}: division by zero in {value!r}; write a number such as 0.03 or 8/255")
                number = float(match.group(1)) / den
            else:
                number = float(value)
        except ValueError:
            pass
    if number is None:
        raise ConfigError(f"{key}: expected a number such as 0.03 or 8/255, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return number


def counted(n: int, one: str, many: Optional[str] = None) -> str:
    """``n`` with its noun in the number it takes: ``1 sample``, ``2 samples`` (``many`` for an irregular plural:
    ``query``/``queries``)."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def comma_list(text: str, key: str) -> List[str]:
    """The stripped entries of a comma list such as ``apgd-ce,fab``. A trailing or leading comma is forgiven;
    an empty entry between two values (``apgd-ce,,fab``: a name deleted or not typed) is refused, since
    dropping it would run something else than the user meant."""
    parts = [p.strip() for p in str(text).split(",")]
    while parts and not parts[-1]:
        parts.pop()
    while parts and not parts[0]:
        parts.pop(0)
    if any(not p for p in parts):
        raise ConfigError(f"{key} {text!r} has an empty entry between two commas; fill in the missing value or drop the extra comma")
    return parts
