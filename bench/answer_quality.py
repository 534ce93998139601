"""How good extractive answers are: a public QA set with gold answers, answerers side by side.

    python -m bench.answer_quality [--k 8] [--questions 0] [--out bench/results/answer_quality.json]

The collection is the first five articles of the SQuAD 2.0 development set
(bench/datasets/, 173 paragraphs, 705 answerable and 702 unanswerable questions; see its
README). Every paragraph is one document of one tenant; every question is searched once
(hybrid, k = ``--k``, the ``ask`` path's default) and its context assembled as ``ask`` does.
Each answerer then answers the *same* context, so the figures compare sentence selection and
nothing else:

- **baseline: first sentence of the top passage**;
- **lexical only (before)**: the extractive answerer without a model, sentences by their
  coverage of the question's words alone (what ``ask`` answered with before);
- **extractive**: the answerer ``ask`` uses, lexical and semantic support (the service's
  embedding model);
- both again limited to **1 sentence**: which sentence each ranks first, at equal length.

Per answerer, over the answerable questions: **hit** (a gold answer, normalised as SQuAD's
evaluation does, appears in the answer's text), **F1** (SQuAD's token F1 against the best
gold answer: long answers pay for their words), the answer's length in words and
**no answer** (how often it said the documents hold none). Over the unanswerable ones:
**abstained** (it said so; the paragraphs are on the question's topic, so this is hard).
**ceiling**: a gold answer is somewhere in the context (no selection can do better). The time
each answerer takes per question is its median.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import string
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from shardrag.config import Settings  # noqa: E402
from shardrag.context.assembly import NO_ANSWER, Answer, Context  # noqa: E402
from shardrag.context.extractive import ExtractiveAnswerer  # noqa: E402
from shardrag.embedded import Shardrag  # noqa: E402
from shardrag.ingest.sentences import split_sentences  # noqa: E402
from shardrag.models import DocumentInput  # noqa: E402

console = Console(stderr=True)
DATASET = REPO_ROOT / "bench" / "datasets" / "squad-v2-dev-head.json.gz"
TENANT = "squad"
_MARKER = re.compile(r"\s*\[\d+\]")


@dataclass(frozen=True)
class Question:
    question_id: str
    text: str
    answers: tuple[str, ...]  # empty: unanswerable


def load(path: Path) -> tuple[list[DocumentInput], list[Question]]:
    """The paragraphs as documents and every question, in the file's order."""
    data = json.loads(gzip.decompress(path.read_bytes()))
    documents: list[DocumentInput] = []
    questions: list[Question] = []
    for article in data["data"]:
        for number, paragraph in enumerate(article["paragraphs"]):
            documents.append(
                DocumentInput(
                    f"{article['title']}/{number}",
                    paragraph["context"].encode(),
                    filename="paragraph.txt",
                    title=article["title"].replace("_", " "),
                )
            )
            questions += [
                Question(qa["id"], qa["question"], tuple(qa["answers"])) for qa in paragraph["qas"]
            ]
    return documents, questions


# -- SQuAD's answer normalisation and token F1 ---------------------------------------------------


def normalise(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's evaluation)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalise(prediction).split(), normalise(gold).split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def contains(text: str, answers: tuple[str, ...]) -> bool:
    padded = f" {normalise(text)} "
    return any(f" {normalise(answer)} " in padded for answer in answers)


# -- the answerers compared ------------------------------------------------------------------------


def first_sentence(context: Context) -> Answer:
    """The baseline: the first sentence of the top passage."""
    if not context.passages:
        return Answer(NO_ANSWER, [], generated=False)
    top = context.passages[0]
    sentence = split_sentences(top.text)[0][0]
    return Answer(f"{sentence} {top.marker}", [top], generated=False)


@dataclass
class Tally:
    hits: int = 0
    f1: float = 0.0
    words: int = 0
    no_answer: int = 0
    answerable: int = 0
    abstained: int = 0
    unanswerable: int = 0

    def add(self, answer: str, question: Question) -> None:
        said_none = answer == NO_ANSWER
        if not question.answers:
            self.unanswerable += 1
            self.abstained += said_none
            return
        self.answerable += 1
        self.no_answer += said_none
        if said_none:
            return
        text = _MARKER.sub("", answer)
        self.hits += contains(text, question.answers)
        self.f1 += max(token_f1(text, gold) for gold in question.answers)
        self.words += len(text.split())

    def figures(self) -> dict[str, float]:
        answered = max(1, self.answerable - self.no_answer)
        return {
            "hit": self.hits / max(1, self.answerable),
            "f1": self.f1 / max(1, self.answerable),
            "words": self.words / answered,
            "no_answer": self.no_answer / max(1, self.answerable),
            "abstained": self.abstained / max(1, self.unanswerable),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--questions", type=int, default=0, help="at most this many (0: all)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/answer_quality.json")
    args = parser.parse_args()

    documents, questions = load(DATASET)
    if args.questions:
        questions = questions[: args.questions]
    with (
        tempfile.TemporaryDirectory() as data_dir,
        Shardrag(Settings(data_dir=Path(data_dir))) as rag,
    ):
        answerers: dict[str, Callable[[Context], Answer]] = {
            "baseline: first sentence of the top passage": first_sentence,
            "lexical only (before)": ExtractiveAnswerer().run,
            "extractive": rag.answering.answerer.run,
            "lexical only, 1 sentence": ExtractiveAnswerer(max_sentences=1).run,
            "extractive, 1 sentence": ExtractiveAnswerer(rag.embedder, max_sentences=1).run,
        }
        assert isinstance(rag.answering.answerer, ExtractiveAnswerer)
        rag.create_tenant(TENANT)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("indexing paragraphs", total=len(documents))
            for start in range(0, len(documents), 32):
                rag.put_documents(TENANT, documents[start : start + 32])
                progress.advance(task, len(documents[start : start + 32]))
            tallies = {name: Tally() for name in answerers}
            seconds: dict[str, list[float]] = {name: [] for name in answerers}
            ceiling = Tally()
            task = progress.add_task("answering", total=len(questions))
            for question in questions:
                hits = rag.search(TENANT, question.text, k=args.k)
                context = rag.answering.assembler.run(
                    question.text, hits, rag.settings.answer_context_tokens
                )
                ceiling.add(" ".join(p.text for p in context.passages) or NO_ANSWER, question)
                for name, answer in answerers.items():
                    started = time.perf_counter()
                    text = answer(context).text
                    seconds[name].append(time.perf_counter() - started)
                    tallies[name].add(text, question)
                progress.advance(task)

    results: dict[str, Any] = {
        "dataset": DATASET.name,
        "documents": len(documents),
        "answerable": ceiling.answerable,
        "unanswerable": ceiling.unanswerable,
        "k": args.k,
        "ceiling_hit": ceiling.figures()["hit"],
        "answerers": {
            name: {**tally.figures(), "ms_p50": statistics.median(seconds[name]) * 1000}
            for name, tally in tallies.items()
        },
    }
    table = Table(
        title=f"Extractive answers: {ceiling.answerable} answerable, {ceiling.unanswerable} "
        f"unanswerable SQuAD 2.0 questions, {len(documents)} paragraphs, k={args.k} "
        f"(ceiling: a gold answer in the context for {results['ceiling_hit']:.1%})"
    )
    for column in ("answerer", "hit", "F1", "words", "no answer", "abstained", "ms p50"):
        table.add_column(column, justify="left" if column == "answerer" else "right")
    for name, figures in results["answerers"].items():
        table.add_row(
            name,
            f"{figures['hit']:.1%}",
            f"{figures['f1']:.3f}",
            f"{figures['words']:.1f}",
            f"{figures['no_answer']:.1%}",
            f"{figures['abstained']:.1%}",
            f"{figures['ms_p50']:.2f}",
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
