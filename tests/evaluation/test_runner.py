"""``shardrag eval``'s runner: every document indexed or counted as refused."""

from __future__ import annotations

import json
from pathlib import Path

from tests.evaluation.test_beir import make_dataset
from typer.testing import CliRunner

from shardrag.cli import app

CORPUS = (
    '{"_id": "d1", "title": "Replication", "text": "Replicas apply the log in order."}\n'
    '{"_id": "d2", "title": "Kayaks on the fjord", "text": ""}\n'
    '{"_id": "d3", "title": "", "text": "   "}\n'
)
QUERIES = '{"_id": "q1", "text": "kayaks fjord"}\n'
QRELS = "query-id\tcorpus-id\tscore\nq1\td2\t1\n"


def test_a_title_without_a_body_is_indexed_and_an_empty_document_counted_refused(
    tmp_path: Path,
) -> None:
    dataset = make_dataset(tmp_path / "set", CORPUS, QUERIES, QRELS)
    result = CliRunner().invoke(
        app, ["eval", str(dataset), "--data-dir", str(tmp_path / "data"), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["documents"] == 2
    assert report["refused"] == {"empty_document": 1}
    # The title-only document is found by its title.
    assert report["modes"]["keyword"]["ndcg@10"] == 1.0
