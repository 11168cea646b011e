"""Comparing one expected point (a source row mapped like migrate) with the point Qdrant holds.

Pure functions on values: JSON-typed payload equality (with an optional ULP
tolerance for floats), vector equality by kind and distance, and
:func:`compare_points` over a whole batch. No database or Qdrant access here, so
these are usable (and tested) on their own, e.g. by the demo and the test helpers.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pg2qdrant.core.mapping.batch import PointBatch
from pg2qdrant.core.mapping.ids import normalize_point_id
from pg2qdrant.core.mapping.vectors import SparseValue
from pg2qdrant.core.plan import Plan, VectorSpec

# float16 keeps 11 significant bits: after normalisation on either side values can
# differ by one float16 ulp (2^-11 relative) plus float32 rounding.
FLOAT16_RTOL = 2.0 ** -10
COSINE_ATOL = 1e-6  # normalised float32 vectors: Qdrant's migration guide, "allclose(atol=1e-6)"


@dataclass(frozen=True)
class Mismatch:
    point_id: Any
    field: str  # payload field or "vector:<name>" or "point"
    expected: Any
    actual: Any
    reason: str

    def describe(self) -> str:
        return f"point {self.point_id!r}: {self.field}: {self.reason} (expected {_short(self.expected)}, " \
               f"found {_short(self.actual)})"


def _short(v: Any, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def ulps_apart(a: float, b: float) -> int:
    """Distance between two doubles in units in the last place."""
    ia, ib = (struct.unpack("<q", struct.pack("<d", x))[0] for x in (a, b))
    # Map the sign-magnitude bit patterns onto a monotonic integer line.
    ia = ia if ia >= 0 else -(2**63) - ia
    ib = ib if ib >= 0 else -(2**63) - ib
    return abs(ia - ib)


# complexity: JSON equality as the mapping defines it (int vs float, exact numbers as strings, nested lists and
# objects).
def same_json(expected: Any, actual: Any, float_ulps: int = 0) -> str | None:
    """None when equal in value and JSON type (int stays int, null stays null); else why not.

    ``float_ulps`` tolerates floats that differ by that many units in the last place
    (Qdrant Edge re-parses payload floats with serde_json's default parser, which is
    not exact; see docs/targets.md, "Known target limitations").
    """
    te, ta = json_type(expected), json_type(actual)
    if te != ta:
        return f"type {te} became {ta}"
    if te == "list":
        if len(expected) != len(actual):
            return f"list of {len(expected)} became {len(actual)} items"
        for i, (e, a) in enumerate(zip(expected, actual)):
            why = same_json(e, a, float_ulps)
            if why:
                return f"[{i}]: {why}"
        return None
    if te == "object":
        if set(expected) != set(actual):
            missing = sorted(set(expected) - set(actual))
            extra = sorted(set(actual) - set(expected))
            return f"keys differ (missing {missing}, extra {extra})"
        for k in expected:
            why = same_json(expected[k], actual[k], float_ulps)
            if why:
                return f".{k}: {why}"
        return None
    if te == "float" and expected != actual:
        if math.isnan(expected) and math.isnan(actual):
            return None
        if math.isfinite(expected) and math.isfinite(actual):
            n = ulps_apart(expected, actual)
            return None if n <= float_ulps else f"float differs by {n} ULP"
    return None if expected == actual else "value differs"


def _normalized(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def compare_vector(spec: VectorSpec, expected: Any, actual: Any) -> str | None:
    """None when the vector Qdrant holds is the one the row maps to (see module constants)."""
    if spec.is_sparse:
        exp: SparseValue = expected
        idx = np.asarray(getattr(actual, "indices", []), dtype=np.int64)
        val = np.asarray(getattr(actual, "values", []), dtype=np.float32)
        order = np.argsort(idx, kind="stable")
        idx, val = idx[order], val[order]
        if not np.array_equal(idx, exp.indices.astype(np.int64)):
            return "sparse indices differ"
        if not np.array_equal(val, exp.values):
            return "sparse values differ"
        return None
    exp_arr = np.asarray(expected, dtype=np.float32)
    act_arr = np.asarray(actual, dtype=np.float32)
    if exp_arr.shape != act_arr.shape:
        return f"dimension {exp_arr.shape[0]} became {act_arr.shape[0] if act_arr.ndim else 0}"
    if spec.distance == "Cosine":
        # Qdrant normalises cosine vectors on write (a server returns them normalised).
        e, a = _normalized(exp_arr.astype(np.float64)), _normalized(act_arr.astype(np.float64))
        tol = dict(rtol=FLOAT16_RTOL, atol=FLOAT16_RTOL) if spec.datatype == "float16" else dict(rtol=0, atol=COSINE_ATOL)
        return None if np.allclose(e, a, **tol) else "values differ"
    if spec.datatype == "float16":
        return None if np.allclose(exp_arr, act_arr, rtol=FLOAT16_RTOL, atol=0) else "values differ"
    if not np.array_equal(exp_arr, act_arr):
        bad = int(np.flatnonzero(exp_arr != act_arr)[0])
        return f"component {bad} differs ({float(exp_arr[bad])!r} vs {float(act_arr[bad])!r}): not bit-exact"
    return None


# complexity: one comparison per field kind (payload, dense, sparse, missing point, NULL vector) with its own
# tolerance and message.
def compare_points(plan: Plan, batch: PointBatch, records: Iterable[Any], *, float_ulps: int = 0) -> list[Mismatch]:
    """Every expected point of ``batch`` against the records Qdrant returned for their IDs."""
    by_id = {normalize_point_id(r.id): r for r in records}
    specs = {v.name: v for v in plan.vectors}
    out: list[Mismatch] = []
    for i, pid in enumerate(batch.ids):
        rec = by_id.get(normalize_point_id(pid))
        if rec is None:
            out.append(Mismatch(pid, "point", "present", "missing", "point is missing in the collection"))
            continue
        payload = rec.payload or {}
        expected_payload = batch.payloads[i]
        for name, value in expected_payload.items():
            if name not in payload:
                out.append(Mismatch(pid, name, value, "<absent>", "field missing (null dropped?)"
                                    if value is None else "field missing"))
                continue
            why = same_json(value, payload[name], float_ulps)
            if why:
                out.append(Mismatch(pid, name, value, payload[name], why))
        for name in sorted(set(payload) - set(expected_payload)):
            out.append(Mismatch(pid, name, "<absent>", payload[name], "field not in the source row"))
        vectors = rec.vector if isinstance(rec.vector, dict) else ({"": rec.vector} if rec.vector else {})
        expected_vectors = batch.vectors_of(i)
        for name, spec in specs.items():
            exp, act = expected_vectors.get(name), vectors.get(name)
            if exp is None and act is None:
                continue
            if exp is None:
                out.append(Mismatch(pid, f"vector:{name}", None, "present", "vector should be absent (NULL)"))
            elif act is None:
                out.append(Mismatch(pid, f"vector:{name}", "present", None, "vector missing"))
            else:
                why = compare_vector(spec, exp, act)
                if why:
                    out.append(Mismatch(pid, f"vector:{name}", _short([float(x) for x in np.asarray(exp)[:4]] if not
                                        spec.is_sparse else exp), _short(act), why))
    return out
