"""json/jsonb values: integers stay integers while they fit int64, numbers keep their digits.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from pg2qdrant.core.mapping.ids import INT64_MAX, INT64_MIN


def json_loads(data: str | bytes) -> Any:
    """JSON parser for json/jsonb, numbers by numeric's rule (docs/mapping.md).

    An integer stays an int when it fits int64 (what Qdrant stores); a number with
    a fraction or exponent becomes a float when the float's shortest decimal equals
    it. Any other number (2**64, 1e-400 that would become 0.0, 1e400 that would
    become infinity) keeps its text exactly as PostgreSQL gave it, as a string.
    """
    return json.loads(data, parse_float=_json_float, parse_int=_json_int)


def _json_int(text: str) -> int | str:
    i = int(text)
    return i if INT64_MIN <= i <= INT64_MAX else text


def _json_float(text: str) -> float | str:
    f = float(text)
    if math.isfinite(f):
        shortest = repr(f)
        # repr(f) == text is the common case (2.5, 0.1); Decimal decides the rest (1.50, 1E2).
        if shortest == text or Decimal(shortest) == Decimal(text):
            return f
    return text
