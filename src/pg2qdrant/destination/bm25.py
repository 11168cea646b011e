"""Qdrant's BM25 (``qdrant_edge.Bm25``, the model behind the server's ``qdrant/bm25`` inference).

``--qdrant.bm25`` computes its sparse document vectors where the rows are mapped, for every target,
so the model is imported here (qdrant-edge-py is only imported in destination/) and handed to the
row mapping as plain callables (:func:`document_encoders`): core/ stays free of it. The token ids
are ``abs(murmur3_32(token))``, as FastEmbed's ``Qdrant/bm25`` computes them, so the query vectors of
``Bm25.embed_query``, of FastEmbed's ``Qdrant/bm25`` and of the server's inference match.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache

import numpy as np

from pg2qdrant.core.errors import InputError
from pg2qdrant.core.mapping.vectors import SparseValue
from pg2qdrant.core.options import Bm25Options
from pg2qdrant.core.plan import Bm25Spec

TextEncoder = Callable[[str], SparseValue | None]


def _module():
    try:
        import qdrant_edge
    except ImportError:
        raise InputError("--qdrant.bm25 computes Qdrant's BM25 with the qdrant-edge-py package, "
                         "which is not installed.", fix="pip install 'pg2qdrant[edge]'") from None
    return qdrant_edge


def bm25_config(options: Bm25Options):
    """The ``qdrant_edge.Bm25Config`` of ``options`` (None where Qdrant's default applies)."""
    edge = _module()
    return edge.Bm25Config(
        k=options.k, b=options.b, avg_len=options.avg_len, language=options.language,
        lowercase=options.lowercase, ascii_folding=options.ascii_folding,
        stemmer=None if options.stemming else edge.DisabledStemmer(),
        stopwords=None if options.stopwords else edge.StopwordsSet())


@lru_cache(maxsize=16)
def model(options: Bm25Options):
    """A ``qdrant_edge.Bm25`` for ``options`` (one per process and setting)."""
    try:
        return _module().Bm25(bm25_config(options))
    except ValueError as exc:
        raise InputError(f"Qdrant's BM25 refuses these options: {exc}.",
                         fix="check --qdrant.bm25-language (e.g. english, german, french, spanish, russian) "
                             "and --qdrant.bm25-k / -b / -avg-len.") from None


def _sparse(vector) -> SparseValue | None:
    """A BM25 vector as the mapping holds it, None when the text has no token (empty, punctuation)."""
    indices = vector.indices
    if not len(indices):
        return None
    return SparseValue(np.asarray(indices, dtype=np.uint32), np.asarray(vector.values, dtype=np.float32))


def document_encoder(options: Bm25Options) -> TextEncoder:
    bm25 = model(options)
    return lambda text: _sparse(bm25.embed_document(text))


def query_encoder(options: Bm25Options) -> TextEncoder:
    """Query vectors (each distinct token weighs 1; the collection's IDF modifier weighs them)."""
    bm25 = model(options)
    return lambda text: _sparse(bm25.embed_query(text))


def document_encoders(specs: Iterable[Bm25Spec]) -> dict[str, TextEncoder]:
    """Vector name -> its document encoder, for mapping.RowMapper."""
    return {s.name: document_encoder(s.options) for s in specs}


def check_encoders(specs: Iterable[Bm25Spec]) -> None:
    """Raise the InputError a run would meet later (qdrant-edge-py missing, options refused)."""
    document_encoders(specs)
