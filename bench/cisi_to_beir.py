"""Convert the CISI test collection to the BEIR layout read by the quality benchmarks.

    python -m bench.cisi_to_beir [SOURCE] TARGET

SOURCE holds ``CISI.ALL`` (documents), ``CISI.QRY`` (queries) and ``CISI.REL`` (judgements);
it defaults to the shared copy next to the repository. Records start with ``.I <id>``, followed
by fields ``.T`` title, ``.A`` authors (one per line, the field may repeat), ``.W`` text and
others: ``.X`` (cross-references), ``.B`` (publication), ``.K`` and ``.C`` (index terms) are
dropped, so that only text written for readers is searched.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shardrag.errors import InvalidInput, ShardragError
from shardrag.evaluation import BeirDataset, BeirDocument, write_beir

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "datasets" / "cisi"

_RECORD_START = re.compile(r"\.I\s+(\d+)\s*")
_FIELD_START = re.compile(r"\.([A-Z])\s*")


@dataclass
class _Record:
    """One ``.I`` record: each field letter maps to its blocks of raw lines, in file order."""

    record_id: str
    fields: dict[str, list[list[str]]] = field(default_factory=dict)

    def lines(self, letter: str) -> list[str]:
        """All lines of the field ``letter``, its repeated blocks concatenated."""
        return [line for block in self.fields.get(letter, []) for line in block]


def convert_cisi(source: Path, target: Path) -> BeirDataset:
    """Read the CISI collection in ``source``, write it to ``target`` as BEIR, and return it.

    Every judged pair in ``CISI.REL`` gets grade 1 (CISI judgements are binary). Raises
    ``InvalidInput`` naming file and line when a file is missing or malformed, or when a
    judgement names a query or document that does not exist.
    """
    corpus = {
        record.record_id: BeirDocument(
            doc_id=record.record_id,
            title=_single_line(record.lines("T")),
            text=_paragraphs(record.lines("W")),
            metadata={"authors": [line.strip() for line in record.lines("A") if line.strip()]},
        )
        for record in _read_records(source / "CISI.ALL")
    }
    queries = {
        record.record_id: _query_text(record) for record in _read_records(source / "CISI.QRY")
    }
    dataset = BeirDataset(
        corpus=corpus, queries=queries, qrels=_read_qrels(source / "CISI.REL", corpus, queries)
    )
    write_beir(dataset, target)
    return dataset


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: convert, print the counts, return the exit status."""
    parser = argparse.ArgumentParser(description="Convert the CISI collection to BEIR.")
    parser.add_argument(
        "source",
        nargs="?",
        type=Path,
        default=DEFAULT_SOURCE,
        help=f"folder with CISI.ALL, CISI.QRY, CISI.REL (default: {DEFAULT_SOURCE})",
    )
    parser.add_argument("target", type=Path, help="folder to write the BEIR dataset to")
    args = parser.parse_args(argv)
    try:
        dataset = convert_cisi(args.source, args.target)
    except ShardragError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    judgements = sum(len(judged) for judged in dataset.qrels.values())
    print(
        f"{len(dataset.corpus)} documents, {len(dataset.queries)} queries "
        f"({len(dataset.judged_queries())} judged), {judgements} judgements -> {args.target}"
    )
    return 0


def _read_records(file: Path) -> list[_Record]:
    records: list[_Record] = []
    seen: set[str] = set()
    block: list[str] | None = None
    for line_no, line in _read_lines(file):
        if match := _RECORD_START.fullmatch(line):
            record_id = str(int(match.group(1)))
            if record_id in seen:
                raise _line_error(file, line_no, f"record {record_id} appears twice")
            seen.add(record_id)
            records.append(_Record(record_id))
            block = None
        elif match := _FIELD_START.fullmatch(line):
            if not records:
                raise _line_error(file, line_no, "field before the first .I record")
            block = []
            records[-1].fields.setdefault(match.group(1), []).append(block)
        elif block is not None:
            block.append(line)
        elif line.strip():
            raise _line_error(file, line_no, "text outside any field (expected .I or .T/.A/.W)")
    return records


def _read_qrels(
    file: Path, corpus: dict[str, BeirDocument], queries: dict[str, str]
) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line_no, line in _read_lines(file):
        columns = line.split()
        if not columns:
            continue
        if len(columns) < 2 or not columns[0].isdigit() or not columns[1].isdigit():
            raise _line_error(file, line_no, "expected a query id and a document id")
        query_id, doc_id = str(int(columns[0])), str(int(columns[1]))
        if query_id not in queries:
            raise _line_error(file, line_no, f"unknown query {query_id}")
        if doc_id not in corpus:
            raise _line_error(file, line_no, f"unknown document {doc_id}")
        qrels.setdefault(query_id, {})[doc_id] = 1
    return qrels


def _read_lines(file: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) of a CISI file, whatever its encoding."""
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{file}: file not found", file=str(file)) from None
    except OSError as exc:
        raise InvalidInput(f"{file}: cannot read: {exc}", file=str(file)) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # Copies of CISI in circulation carry stray Latin-1 bytes; Latin-1 decodes any byte,
        # so one odd character cannot stop the conversion.
        text = raw.decode("latin-1")
    yield from enumerate(text.splitlines(), start=1)


def _query_text(record: _Record) -> str:
    """A query's title (if any) followed by its text, on one line."""
    title = _single_line(record.lines("T"))
    body = _single_line(record.lines("W"))
    if title and not title.endswith((".", "?", "!", ":")):
        title += "."
    return f"{title} {body}".strip()


def _single_line(lines: list[str]) -> str:
    return " ".join(" ".join(lines).split())


def _paragraphs(lines: list[str]) -> str:
    """Join wrapped lines into paragraphs separated by a blank line.

    CISI marks a paragraph by indenting its first line (rarely by a blank line). A run of
    indented lines is one indented block, such as a list, so only an indented line that
    follows an unindented one opens a paragraph.
    """
    paragraphs: list[list[str]] = [[]]
    previous_indented = True
    for line in lines:
        if not line.strip():
            paragraphs.append([])
            continue
        indented = line[0].isspace()
        if indented and not previous_indented:
            paragraphs.append([])
        paragraphs[-1].append(line)
        previous_indented = indented
    return "\n\n".join(text for text in map(_single_line, paragraphs) if text)


def _line_error(file: Path, line_no: int, problem: str) -> InvalidInput:
    return InvalidInput(f"{file}, line {line_no}: {problem}", file=str(file), line=line_no)


if __name__ == "__main__":
    raise SystemExit(main())
