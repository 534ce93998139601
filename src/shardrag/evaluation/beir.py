"""Reading and writing retrieval test collections in the BEIR layout.

A BEIR dataset is a directory holding::

    corpus.jsonl        {"_id": ..., "title": ..., "text": ..., "metadata": {...}} per line
    queries.jsonl       {"_id": ..., "text": ...} per line
    qrels/<split>.tsv   query-id <TAB> corpus-id <TAB> score, after an optional header

Every problem with the files is reported as ``InvalidInput`` naming the file and, for a bad
line, its 1-based line number, so a broken download is found without a debugger.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardrag.errors import InvalidInput

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_DIR = "qrels"
QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclass(frozen=True)
class BeirDocument:
    """One corpus document: its id, title (possibly empty), body text and free metadata."""

    doc_id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BeirDataset:
    """A corpus, its queries and graded relevance judgements (query id → doc id → grade)."""

    corpus: dict[str, BeirDocument]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def judged_queries(self) -> dict[str, str]:
        """The queries that are evaluated: those with at least one document graded above 0.

        A query without a relevant document cannot be scored by nDCG or recall, so BEIR leaves
        it out of the means; keeping it would pull every mean towards 0.
        """
        return {
            query_id: text
            for query_id, text in self.queries.items()
            if any(grade > 0 for grade in self.qrels.get(query_id, {}).values())
        }


def load_beir(path: Path, split: str = "test") -> BeirDataset:
    """Load the BEIR dataset in directory ``path`` with the judgements of ``split``.

    Raises ``InvalidInput`` when a file is missing, a line is not valid UTF-8 or JSON, a
    required field is missing or not a string, an id repeats, or a qrels line is malformed.
    """
    corpus = _load_corpus(path / CORPUS_FILE)
    queries = _load_queries(path / QUERIES_FILE)
    qrels = _load_qrels(path / QRELS_DIR / f"{split}.tsv")
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


def write_beir(dataset: BeirDataset, path: Path, split: str = "test") -> None:
    """Write ``dataset`` to directory ``path`` (created if needed) in the BEIR layout.

    The judgements go to ``qrels/<split>.tsv``. Ids that could not be read back from the TSV
    (empty, or holding tabs, line breaks or surrounding blanks) raise ``InvalidInput``
    before anything is written.
    """
    for query_id, judged in dataset.qrels.items():
        _check_tsv_id(query_id, "query id")
        for doc_id in judged:
            _check_tsv_id(doc_id, "document id")

    (path / QRELS_DIR).mkdir(parents=True, exist_ok=True)
    _write_jsonl(
        path / CORPUS_FILE,
        (
            {"_id": doc.doc_id, "title": doc.title, "text": doc.text, "metadata": doc.metadata}
            for doc in dataset.corpus.values()
        ),
    )
    _write_jsonl(
        path / QUERIES_FILE,
        ({"_id": query_id, "text": text} for query_id, text in dataset.queries.items()),
    )
    with (path / QRELS_DIR / f"{split}.tsv").open("w", encoding="utf-8", newline="\n") as out:
        out.write("\t".join(QRELS_HEADER) + "\n")
        for query_id, judged in dataset.qrels.items():
            for doc_id, grade in judged.items():
                out.write(f"{query_id}\t{doc_id}\t{grade}\n")


def _load_corpus(file: Path) -> dict[str, BeirDocument]:
    corpus: dict[str, BeirDocument] = {}
    for line_no, record in _read_jsonl(file):
        doc_id = _id_field(record, file, line_no)
        if doc_id in corpus:
            raise _line_error(file, line_no, f"document id {doc_id!r} appears twice")
        metadata = record.get("metadata", {})
        if not isinstance(metadata, dict):
            raise _line_error(file, line_no, "field 'metadata' must be a JSON object")
        corpus[doc_id] = BeirDocument(
            doc_id=doc_id,
            title=_string_field(record, "title", file, line_no, default=""),
            text=_string_field(record, "text", file, line_no),
            metadata=metadata,
        )
    return corpus


def _load_queries(file: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for line_no, record in _read_jsonl(file):
        query_id = _id_field(record, file, line_no)
        if query_id in queries:
            raise _line_error(file, line_no, f"query id {query_id!r} appears twice")
        queries[query_id] = _string_field(record, "text", file, line_no)
    return queries


def _load_qrels(file: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for index, (line_no, line) in enumerate(_read_lines(file)):
        fields = [value.strip() for value in line.split("\t")]
        # The header is optional: BEIR's own files have it, some hand-made qrels do not.
        if index == 0 and tuple(value.lower() for value in fields) == QRELS_HEADER:
            continue
        if len(fields) != 3 or not fields[0] or not fields[1]:
            raise _line_error(
                file, line_no, "expected 3 tab-separated fields: query-id, corpus-id, score"
            )
        query_id, doc_id, score = fields
        try:
            grade = int(score)
        except ValueError:
            raise _line_error(file, line_no, f"score {score!r} is not an integer") from None
        judged = qrels.setdefault(query_id, {})
        if judged.get(doc_id, grade) != grade:
            raise _line_error(
                file, line_no, f"pair ({query_id!r}, {doc_id!r}) is graded twice differently"
            )
        judged[doc_id] = grade
    return qrels


def _read_lines(file: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) for each non-blank line, decoding UTF-8 line by line."""
    try:
        handle = file.open("rb")
    except FileNotFoundError:
        raise InvalidInput(f"{file}: file not found", file=str(file)) from None
    except OSError as exc:
        raise InvalidInput(f"{file}: cannot read: {exc}", file=str(file)) from exc
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise _line_error(file, line_no, "not valid UTF-8") from None
            if line.strip():
                yield line_no, line


def _read_jsonl(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, line in _read_lines(file):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _line_error(file, line_no, f"invalid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise _line_error(file, line_no, "expected a JSON object")
        yield line_no, record


def _string_field(
    record: dict[str, Any], key: str, file: Path, line_no: int, default: str | None = None
) -> str:
    if key not in record:
        if default is None:
            raise _line_error(file, line_no, f"missing field {key!r}")
        return default
    value = record[key]
    if not isinstance(value, str):
        raise _line_error(file, line_no, f"field {key!r} must be a string")
    return value


def _id_field(record: dict[str, Any], file: Path, line_no: int) -> str:
    value = _string_field(record, "_id", file, line_no)
    if not value:
        raise _line_error(file, line_no, "field '_id' is empty")
    return value


def _write_jsonl(file: Path, records: Iterable[dict[str, Any]]) -> None:
    with file.open("w", encoding="utf-8", newline="\n") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _check_tsv_id(value: str, what: str) -> None:
    if not value or value != value.strip() or any(c in value for c in "\t\r\n"):
        raise InvalidInput(f"{what} {value!r} cannot be written to a qrels TSV file", id=value)


def _line_error(file: Path, line_no: int, problem: str) -> InvalidInput:
    return InvalidInput(f"{file}, line {line_no}: {problem}", file=str(file), line=line_no)
