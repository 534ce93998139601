"""Loading and writing BEIR-layout datasets, and the errors for broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardrag.errors import InvalidInput
from shardrag.evaluation import BeirDataset, BeirDocument, load_beir, write_beir

CORPUS = (
    '{"_id": "d1", "title": "Replication", "text": "Replicas apply the log."}\n'
    '{"_id": "d2", "text": "No title here.", "metadata": {"lang": "en"}}\n'
)
QUERIES = '{"_id": "q1", "text": "how are shards replicated"}\n{"_id": "q2", "text": "unjudged"}\n'
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n"


def make_dataset(
    root: Path, corpus: str = CORPUS, queries: str = QUERIES, qrels: str = QRELS
) -> Path:
    """Write a small dataset under ``root``; each file's content can be swapped for a bad one."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    (root / "queries.jsonl").write_text(queries, encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return root


def test_load_reads_the_standard_layout(tmp_path: Path) -> None:
    dataset = load_beir(make_dataset(tmp_path))

    assert dataset.corpus == {
        "d1": BeirDocument("d1", "Replication", "Replicas apply the log.", {}),
        "d2": BeirDocument("d2", "", "No title here.", {"lang": "en"}),
    }
    assert dataset.queries == {"q1": "how are shards replicated", "q2": "unjudged"}
    assert dataset.qrels == {"q1": {"d1": 2, "d2": 0}}


def test_judged_queries_need_a_grade_above_zero(tmp_path: Path) -> None:
    qrels = "q1\td1\t1\nq2\td2\t0\n"  # q2 is judged, but nothing is relevant to it
    queries = QUERIES + '{"_id": "q3", "text": "no judgements at all"}\n'
    dataset = load_beir(make_dataset(tmp_path, queries=queries, qrels=qrels))

    assert dataset.judged_queries() == {"q1": "how are shards replicated"}


def test_qrels_header_is_optional_and_blank_lines_and_crlf_are_tolerated(tmp_path: Path) -> None:
    qrels = "\r\nq1\td1\t1\r\n\r\nq1\td2\t3\r\n"
    dataset = load_beir(make_dataset(tmp_path, qrels=qrels, corpus="\n" + CORPUS + "\n"))

    assert dataset.qrels == {"q1": {"d1": 1, "d2": 3}}
    assert set(dataset.corpus) == {"d1", "d2"}


def test_load_reads_the_named_split(tmp_path: Path) -> None:
    root = make_dataset(tmp_path)
    (root / "qrels" / "dev.tsv").write_text("q2\td2\t1\n", encoding="utf-8")

    assert load_beir(root, split="dev").qrels == {"q2": {"d2": 1}}


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    dataset = BeirDataset(
        corpus={
            "doc-1": BeirDocument(
                "doc-1",
                "Répliques et journaux",
                'First paragraph.\n\nSecond paragraph with "quotes" and a\ttab.',
                {"authors": ["Comaromi, J.P.", "Slater, M."], "year": 1971},
            ),
            "doc-2": BeirDocument("doc-2", "", "", {}),
        },
        queries={"q-1": "What is replicated? 日本語", "q-2": "another"},
        qrels={"q-1": {"doc-1": 2, "doc-2": 0}, "q-2": {"doc-2": 1}},
    )
    write_beir(dataset, tmp_path / "out", split="dev")

    assert (
        (tmp_path / "out" / "qrels" / "dev.tsv")
        .read_text(encoding="utf-8")
        .startswith("query-id\tcorpus-id\tscore\n")
    )
    assert load_beir(tmp_path / "out", split="dev") == dataset


@pytest.mark.parametrize("bad_id", ["", "has\ttab", "has\nnewline", " padded"])
def test_write_rejects_ids_the_qrels_file_cannot_hold(tmp_path: Path, bad_id: str) -> None:
    dataset = BeirDataset(corpus={}, queries={}, qrels={"q": {bad_id: 1}})
    with pytest.raises(InvalidInput, match="cannot be written"):
        write_beir(dataset, tmp_path)
    assert not (tmp_path / "corpus.jsonl").exists()


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    root = make_dataset(tmp_path)
    (root / missing).unlink()

    with pytest.raises(InvalidInput, match="file not found") as caught:
        load_beir(root)
    assert caught.value.details["file"] == str(root / missing)
    assert missing in caught.value.message


def test_missing_split_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"dev\.tsv: file not found"):
        load_beir(make_dataset(tmp_path), split="dev")


@pytest.mark.parametrize(
    ("file", "content", "line", "problem"),
    [
        ("corpus.jsonl", CORPUS + '{"_id": "d3", "text": \n', 3, "invalid JSON"),
        ("corpus.jsonl", '["d1", "text"]\n', 1, "expected a JSON object"),
        ("corpus.jsonl", '{"_id": "d1", "title": "t"}\n', 1, "missing field 'text'"),
        ("corpus.jsonl", '{"_id": 7, "text": "t"}\n', 1, "field '_id' must be a string"),
        ("corpus.jsonl", '{"_id": "", "text": "t"}\n', 1, "field '_id' is empty"),
        (
            "corpus.jsonl",
            '{"_id": "d1", "text": "t", "title": null}\n',
            1,
            "'title' must be a string",
        ),
        ("corpus.jsonl", '{"_id": "d1", "text": "t", "metadata": [1]}\n', 1, "'metadata'"),
        ("corpus.jsonl", CORPUS + '{"_id": "d1", "text": "again"}\n', 3, "appears twice"),
        ("queries.jsonl", '{"_id": "q1", "text": "ok"}\n\n{"_id": "q2"}\n', 3, "'text'"),
        ("queries.jsonl", QUERIES + '{"_id": "q1", "text": "again"}\n', 3, "appears twice"),
        ("qrels/test.tsv", QRELS + "q1\td1\n", 4, "expected 3 tab-separated fields"),
        ("qrels/test.tsv", QRELS + "q1 d1 1\n", 4, "expected 3 tab-separated fields"),
        ("qrels/test.tsv", QRELS + "q1\t\t1\n", 4, "expected 3 tab-separated fields"),
        ("qrels/test.tsv", QRELS + "q1\td3\thigh\n", 4, "'high' is not an integer"),
        ("qrels/test.tsv", "q1\td1\t1\nquery-id\tcorpus-id\tscore\n", 2, "not an integer"),
        ("qrels/test.tsv", QRELS + "q1\td1\t1\n", 4, "graded twice differently"),
    ],
)
def test_malformed_line_names_file_and_line(
    tmp_path: Path, file: str, content: str, line: int, problem: str
) -> None:
    root = make_dataset(tmp_path)
    (root / file).write_text(content, encoding="utf-8")

    with pytest.raises(InvalidInput) as caught:
        load_beir(root)
    assert caught.value.message.startswith(f"{root / file}, line {line}: ")
    assert problem in caught.value.message
    assert caught.value.details == {"file": str(root / file), "line": line}


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    root = make_dataset(tmp_path)
    (root / "queries.jsonl").write_bytes(
        b'{"_id": "q1", "text": "ok"}\n{"_id": "q2", "text": "\xff"}\n'
    )

    with pytest.raises(InvalidInput, match=r"queries\.jsonl, line 2: not valid UTF-8"):
        load_beir(root)


def test_repeated_identical_judgement_is_accepted(tmp_path: Path) -> None:
    dataset = load_beir(make_dataset(tmp_path, qrels=QRELS + "q1\td1\t2\n"))
    assert dataset.qrels == {"q1": {"d1": 2, "d2": 0}}
