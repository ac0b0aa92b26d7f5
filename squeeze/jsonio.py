"""Strict JSON for the files people and other tools read back (metrics.json, run configs).

Python's json module writes NaN and infinities as bare `NaN` / `Infinity`, which is not JSON: jq, JavaScript's
JSON.parse and most other readers refuse the whole file. Undefined values are written as null instead.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def finite_or_none(value: Any) -> Any:
    """`value` with every NaN or infinite float (also inside dicts, lists, tuples, numpy scalars and arrays) as None.

    Containers become dicts and lists; numpy scalars become Python numbers; anything else is returned as it is.
    """
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite_or_none(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """json.dumps of finite_or_none(value): NaN and infinities become null; refuses to write anything else non-JSON."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
