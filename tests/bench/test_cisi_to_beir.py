"""The CISI converter: the real collection, small hand-made ones, and the command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from shardrag.errors import InvalidInput
from shardrag.evaluation import BeirDataset, load_beir

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    # pytest puts only this test's folder on sys.path, and bench/ sits at the repository root.
    sys.path.insert(0, str(REPO_ROOT))

from bench.cisi_to_beir import DEFAULT_SOURCE, convert_cisi, main  # noqa: E402


@pytest.fixture(scope="module")
def cisi_source() -> Path:
    """The shared CISI collection; CI must have it, a laptop may skip without it."""
    if not (DEFAULT_SOURCE / "CISI.ALL").is_file():
        message = f"CISI collection not found at {DEFAULT_SOURCE}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return DEFAULT_SOURCE


@pytest.fixture(scope="module")
def converted(
    cisi_source: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BeirDataset, Path]:
    """The collection converted once for all tests of this module, and where it was written."""
    target = tmp_path_factory.mktemp("cisi-beir")
    return convert_cisi(cisi_source, target), target


def test_counts_match_the_collection(converted: tuple[BeirDataset, Path]) -> None:
    dataset, _ = converted
    assert len(dataset.corpus) == 1460
    assert len(dataset.queries) == 112
    assert len(dataset.judged_queries()) == 76
    assert sum(len(judged) for judged in dataset.qrels.values()) == 3114
    assert {grade for judged in dataset.qrels.values() for grade in judged.values()} == {1}


def test_first_document_has_title_authors_and_text_without_cross_references(
    converted: tuple[BeirDataset, Path],
) -> None:
    doc = converted[0].corpus["1"]
    assert doc.title == "18 Editions of the Dewey Decimal Classifications"
    assert doc.metadata == {"authors": ["Comaromi, J.P."]}
    assert doc.text.startswith(
        "The present study is a history of the DEWEY Decimal Classification."
    )
    assert doc.text.endswith("librarianship in this country and abroad.")
    # Doc 1's .X field lists references such as "92 1 1", "262 1 1" and "1024 1 1".
    for reference in ("92", "262", "556", "1004", "1024", ".X"):
        assert reference not in doc.text


def test_indented_lines_open_paragraphs(converted: tuple[BeirDataset, Path]) -> None:
    paragraphs = converted[0].corpus["6"].text.split("\n\n")
    assert [p.split(".")[0] for p in paragraphs] == [
        "Graduate library school study of abstracting should be more than a how-to-do-it course",
        "The text includes a methods section containing instructions for writing various types "
        "of abstracts, and for editing and preparing abstracting publications",
        "Research on automation has been treated extensively in this work, for we believe that "
        "the topic deserves greater emphasis than it has received in the past",
        "Abstracting is a key segment of the information industry",
    ]
    assert all("  " not in p and "\n" not in p for p in paragraphs)


def test_wrapped_titles_and_repeated_author_fields(converted: tuple[BeirDataset, Path]) -> None:
    corpus = converted[0].corpus
    assert corpus["5"].title == "A Library Management Game: a report on a research project"
    assert corpus["15"].metadata["authors"] == ["Allen, Thomas J.", "Cohen, Stephen I."]
    assert corpus["33"].metadata["authors"] == ["Burton, R.E.", "Kebler, R.W."]


def test_query_text_includes_the_title(converted: tuple[BeirDataset, Path]) -> None:
    queries = converted[0].queries
    assert queries["3"] == "What is information science? Give definitions where possible."
    assert queries["112"].startswith(
        "A Fast Procedure for the Calculation of Similarity Coefficients in in Automatic "
        "Classification. A fast algorithm is described"
    )
    # .B (publication) is not query text.
    assert "JASIS" not in queries["58"]


def test_written_dataset_loads_back_identical(converted: tuple[BeirDataset, Path]) -> None:
    dataset, target = converted
    assert load_beir(target) == dataset


def test_command_line_uses_the_shared_collection_by_default(
    cisi_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "out")]) == 0
    assert "1460 documents, 112 queries (76 judged), 3114 judgements" in capsys.readouterr().out
    assert len(load_beir(tmp_path / "out").corpus) == 1460


def write_collection(root: Path, documents: bytes, queries: bytes, judgements: bytes) -> Path:
    """Write a tiny CISI-style collection under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "CISI.ALL").write_bytes(documents)
    (root / "CISI.QRY").write_bytes(queries)
    (root / "CISI.REL").write_bytes(judgements)
    return root


DOCUMENTS = (
    b".I 1\n.T\nCaf\xe9 Catalogues\n.A\nDupont, A.\n.W\n  First para\n"
    b"goes on.\n  Second para.\n.X\n1\t1\t1\n"
    b".I 2\n.T\nUntitled Notes\n.W\nJust text.\n"
)
QUERIES = b".I 1\n.W\nWhat about cafes?\n.I 2\n.T\nA Titled Query\n.A\nX, Y.\n.W\nIts text.\n"
JUDGEMENTS = b"     1      2\t0\t0.000000\n     1      1\t0\t0.000000\n"


def test_latin1_bytes_are_decoded_and_fields_mapped(tmp_path: Path) -> None:
    source = write_collection(tmp_path / "src", DOCUMENTS, QUERIES, JUDGEMENTS)
    dataset = convert_cisi(source, tmp_path / "out")

    assert dataset.corpus["1"].title == "Café Catalogues"
    assert dataset.corpus["1"].text == "First para goes on.\n\nSecond para."
    assert dataset.corpus["2"].metadata == {"authors": []}
    assert dataset.queries == {"1": "What about cafes?", "2": "A Titled Query. Its text."}
    assert dataset.qrels == {"1": {"2": 1, "1": 1}}
    assert dataset.judged_queries() == {"1": "What about cafes?"}


@pytest.mark.parametrize(
    ("file", "content", "problem"),
    [
        ("CISI.ALL", b"stray text\n.I 1\n.W\nx\n", "line 1: text outside any field"),
        ("CISI.ALL", b".T\nTitle\n", "line 1: field before the first .I record"),
        ("CISI.ALL", b".I 1\n.W\nx\n.I 1\n.W\ny\n", "line 4: record 1 appears twice"),
        ("CISI.REL", b"1 1 0 0\n1 x 0 0\n", "line 2: expected a query id and a document id"),
        ("CISI.REL", b"1 9 0 0\n", "line 1: unknown document 9"),
        ("CISI.REL", b"7 1 0 0\n", "line 1: unknown query 7"),
    ],
)
def test_malformed_collection_names_file_and_line(
    tmp_path: Path, file: str, content: bytes, problem: str
) -> None:
    source = write_collection(tmp_path, DOCUMENTS, QUERIES, JUDGEMENTS)
    (source / file).write_bytes(content)

    with pytest.raises(InvalidInput) as caught:
        convert_cisi(source, tmp_path / "out")
    assert caught.value.message.startswith(f"{source / file}, {problem}")


def test_command_line_reports_a_missing_collection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1
    assert "CISI.ALL: file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
