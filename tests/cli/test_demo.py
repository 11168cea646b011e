"""`pg2qdrant demo` runs end to end (its own PostgreSQL, local-mode Qdrant, verify, sync)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.pg  # the demo starts its own PostgreSQL


def test_demo_runs_and_checks_itself(cli, tmp_path):
    r = cli("demo", "--rows", "400", "--dir", str(tmp_path / "demo"))
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "400 rows in PostgreSQL, 400 points in Qdrant: equal" in out
    assert "compared field by field and vector by vector: identical" in out
    assert "Verdict: PASS" in out
    assert "point 401 is there; point 2's title is 'Renamed document' and it kept its embedding: True; " \
           "point 3 is gone" in out
    assert "QdrantClient(path=" in out
    # No flag was typed: the plan names who decided summary_embedding's distance.
    assert "│ Cosine       │ float16  │ the demo (no index on the column to tell)" in out
    assert "--qdrant.distance-metric" not in out
    # One summary per step; nothing a demo user cannot act on (it stops, and drops its slot, by itself).
    assert [out.count(f"{step} summary") for step in ("Migration", "Sync")] == [1, 1]
    assert "pg2qdrant_documents and publication pg2qdrant_documents: dropped (the demo is done with them)" in out
    for said in ("Ctrl-C", "max_slot_wal_keep_size", "kept: rerun"):
        assert said not in r.output
    assert "warning" not in r.stderr.lower()
