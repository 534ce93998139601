"""The bundled demo: a small operations handbook to ingest, and a question to ask it.

The corpus is the handbook of a fictional company running a sharded search service, in the
formats users bring (Markdown, HTML with page chrome, plain text), so the demo exercises the
parsers as well as retrieval.
"""

from pathlib import Path

CORPUS_DIR: Path = Path(__file__).resolve().parent / "corpus"
DEMO_QUESTION = "How are shards replicated?"

__all__ = ["CORPUS_DIR", "DEMO_QUESTION"]
