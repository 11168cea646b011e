"""pg2qdrant: move pgvector tables into Qdrant, prove the copy, keep it in sync."""

__version__ = "0.1.0"
