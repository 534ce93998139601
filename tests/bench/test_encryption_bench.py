"""bench/encryption.py runs to the end on a small corpus, both variants, and what it reports
is what it measured (the sealed variant's documents are as many, its searches find hits)."""

from __future__ import annotations

from bench.encryption import run_variant


def test_both_variants_ingest_and_search_the_same_corpus() -> None:
    plain = run_variant("plain", copies=1, queries=5)
    sealed = run_variant("sealed", copies=1, queries=5)
    assert plain["documents"] == sealed["documents"] == 173
    for figures in (plain, sealed):
        assert figures["ingest_docs_per_s"] > 0
        for case in ("keyword", "hybrid", "keyword_filtered"):
            assert 0 < figures[f"{case}_p50_ms"] <= figures[f"{case}_p99_ms"]
