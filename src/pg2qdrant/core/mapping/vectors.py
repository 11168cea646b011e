"""Vectors: pgvector's binary wire formats, decoded a batch at a time with numpy.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from pg2qdrant.core.plan import VectorKind, VectorSpec


@dataclass
class DenseColumn:
    """One named dense vector for a batch: rows in ``values``, ``present[i]`` False for NULL."""

    values: np.ndarray  # (n, dim) float32, or uint8 for bit vectors; NULL rows are zeros
    present: np.ndarray  # (n,) bool

    @property
    def all_present(self) -> bool:
        return bool(self.present.all())


@dataclass(frozen=True)
class SparseValue:
    indices: np.ndarray  # uint32, 0-based, ascending
    values: np.ndarray  # float32


class DimensionMismatch(Exception):
    """Raised by a decoder with the row positions whose dimension differs."""

    def __init__(self, rows: list[int], dims: list[int], expected: int):
        self.rows, self.dims, self.expected = rows, dims, expected
        super().__init__(f"dimension {dims[0]} != {expected}")


def _dense_from_blobs(blobs: list[bytes | None], dim: int, header: int, dtype: str) -> DenseColumn:
    """vector: int16 dim, int16 unused, dim x float32; halfvec: same with float16 (big-endian)."""
    n = len(blobs)
    present = np.fromiter((b is not None for b in blobs), dtype=bool, count=n)
    itemsize = np.dtype(dtype).itemsize
    row_bytes = header + dim * itemsize
    if present.all() and n:
        sizes = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=n)
        if (sizes == row_bytes).all():
            buf = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(n, row_bytes)
            dims = buf[:, 0].astype(np.int32) << 8 | buf[:, 1]
            if (dims == dim).all():
                values = buf[:, header:].copy().view(dtype).astype(np.float32)
                return DenseColumn(values, present)
    values = np.zeros((n, dim), dtype=np.float32)
    if present.any():
        live = [b for b in blobs if b is not None]
        sizes = np.fromiter((len(b) for b in live), dtype=np.int64, count=len(live))
        if (sizes != row_bytes).any():
            _raise_dimension(blobs, present, sizes, row_bytes, header, itemsize, dim)
        buf = np.frombuffer(b"".join(live), dtype=np.uint8).reshape(len(live), row_bytes)
        dims = buf[:, 0].astype(np.int32) << 8 | buf[:, 1]
        if (dims != dim).any():
            _raise_dimension(blobs, present, dims * itemsize + header, row_bytes, header, itemsize, dim)
        values[present] = buf[:, header:].copy().view(dtype).astype(np.float32)
    return DenseColumn(values, present)


def _raise_dimension(blobs, present, sizes, row_bytes, header, itemsize, dim) -> None:
    live_rows = np.flatnonzero(present)
    bad = np.flatnonzero(sizes != row_bytes)
    rows = [int(live_rows[i]) for i in bad[:5]]
    dims = [int((sizes[i] - header) // itemsize) for i in bad[:5]]
    raise DimensionMismatch(rows, dims, dim)


def decode_dense(blobs: list[bytes | None], dim: int) -> DenseColumn:
    return _dense_from_blobs(blobs, dim, 4, ">f4")


def decode_half(blobs: list[bytes | None], dim: int) -> DenseColumn:
    # float16 -> float32 is exact, and Qdrant stores the column as float16 again.
    return _dense_from_blobs(blobs, dim, 4, ">f2")


def decode_bit(blobs: list[bytes | None], nbits: int) -> DenseColumn:
    """bit(n): int32 bit count, then ceil(n/8) bytes, most significant bit first -> 0/1 uint8."""
    n = len(blobs)
    present = np.fromiter((b is not None for b in blobs), dtype=bool, count=n)
    values = np.zeros((n, nbits), dtype=np.uint8)
    nbytes = (nbits + 7) // 8
    row_bytes = 4 + nbytes
    live = [b for b in blobs if b is not None]
    if live:
        sizes = np.fromiter((len(b) for b in live), dtype=np.int64, count=len(live))
        counts = np.array([int.from_bytes(b[:4], "big") for b in live], dtype=np.int64)
        if (sizes != row_bytes).any() or (counts != nbits).any():
            live_rows = np.flatnonzero(present)
            bad = np.flatnonzero((sizes != row_bytes) | (counts != nbits))
            raise DimensionMismatch([int(live_rows[i]) for i in bad[:5]], [int(counts[i]) for i in bad[:5]], nbits)
        buf = np.frombuffer(b"".join(live), dtype=np.uint8).reshape(len(live), row_bytes)
        values[present] = np.unpackbits(buf[:, 4:], axis=1)[:, :nbits]
    return DenseColumn(values, present)


_SPARSE_HEAD = struct.Struct(">iii")


def decode_sparse_one(blob: bytes) -> SparseValue:
    """sparsevec: int32 dim, int32 nnz, int32 unused, nnz x int32 index (0-based), nnz x float32."""
    _dim, nnz, _ = _SPARSE_HEAD.unpack_from(blob, 0)
    indices = np.frombuffer(blob, dtype=">i4", count=nnz, offset=12).astype(np.uint32)
    values = np.frombuffer(blob, dtype=">f4", count=nnz, offset=12 + 4 * nnz).astype(np.float32)
    return SparseValue(indices, values)


def decode_sparse(blobs: list[bytes | None]) -> list[SparseValue | None]:
    return [None if b is None else decode_sparse_one(b) for b in blobs]


def decode_vector_column(spec: VectorSpec, blobs: list[bytes | None]):
    if spec.kind == VectorKind.SPARSE:
        return decode_sparse(blobs)
    if spec.size is None:
        raise ValueError(f"vector {spec.name} has no size yet")  # the planner fills it first
    if spec.kind == VectorKind.DENSE:
        return decode_dense(blobs, spec.size)
    if spec.kind == VectorKind.HALF:
        return decode_half(blobs, spec.size)
    return decode_bit(blobs, spec.size)
