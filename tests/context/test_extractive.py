"""Extractive answers: the sentences that answer, each citing its source, or a plain no."""

from __future__ import annotations

import pytest

from shardrag.context import NO_ANSWER, Context, ContextAssembler, ExtractiveAnswerer
from shardrag.embed.bundled import BundledEmbedder
from shardrag.embed.tokenizer import bundled_tokenizer
from shardrag.errors import EmbedderUnavailable, InvalidParameter
from shardrag.models import Hit

ASSEMBLER = ContextAssembler(bundled_tokenizer())
CAFETERIA = "The cafeteria opens at noon. Lunch is served until two. Coffee is free."
REPLICATION = (
    "Shards are placed on index nodes by tenant. Each shard has three replicas on different "
    "nodes. The cafeteria menu changes weekly."
)


def context(question: str, *texts: str) -> Context:
    """A context of one passage per text, numbered in the order given."""
    hits = [Hit(f"doc{i}", 1, 0, text, score=1.0, metadata={}) for i, text in enumerate(texts)]
    return ASSEMBLER.run(question, hits, 1_000)


def test_the_answer_is_the_sentence_that_answers_citing_its_source() -> None:
    ctx = context("How many replicas does a shard have?", CAFETERIA, REPLICATION)
    answer = ExtractiveAnswerer().run(ctx)
    assert answer.text == "Each shard has three replicas on different nodes. [2]"
    assert answer.citations == [ctx.passages[1]]
    assert answer.generated is False


def test_without_support_in_the_passages_the_answer_says_so() -> None:
    ctx = context("What is the capital of France?", CAFETERIA, REPLICATION)
    answer = ExtractiveAnswerer().run(ctx)
    assert answer.text == NO_ANSWER
    assert answer.citations == []


@pytest.mark.parametrize("question", ["What is it?", "How does this work?"])
def test_a_question_of_only_stop_words_has_no_answer(question: str) -> None:
    assert ExtractiveAnswerer().run(context(question, CAFETERIA)).text == NO_ANSWER


def test_no_passages_no_answer() -> None:
    assert ExtractiveAnswerer().run(context("How many replicas?")).text == NO_ANSWER


def test_sentences_come_in_source_order_each_with_its_own_citation() -> None:
    ctx = context(
        "When does the cafeteria open for lunch?",
        "Lunch is served in the cafeteria.",
        REPLICATION,
        "The cafeteria opens for lunch at noon.",
    )
    answer = ExtractiveAnswerer().run(ctx)
    assert answer.text == (
        "Lunch is served in the cafeteria. [1] The cafeteria opens for lunch at noon. [3]"
    )
    assert answer.citations == [ctx.passages[0], ctx.passages[2]]

    best = ExtractiveAnswerer(max_sentences=1).run(ctx)
    assert best.text == "The cafeteria opens for lunch at noon. [3]"
    assert best.citations == [ctx.passages[2]]


def test_question_words_match_the_compounds_they_start() -> None:
    failover = "When a node dies, failover promotes another replica of each of its shards."
    answer = ExtractiveAnswerer().run(context("How do shards fail over?", CAFETERIA, failover))
    assert answer.text == f"{failover} [2]"


def test_a_sentence_repeated_in_two_passages_is_said_once() -> None:
    ctx = context("How many replicas per shard?", REPLICATION, REPLICATION)
    answer = ExtractiveAnswerer().run(ctx)
    assert answer.text.count("three replicas") == 1


@pytest.fixture(scope="module")
def model() -> BundledEmbedder:
    """The service's own embedding model: the semantic view of the answerer."""
    return BundledEmbedder()


def test_a_sentence_about_the_text_itself_is_not_the_answer(model: BundledEmbedder) -> None:
    guide = (
        "This guide explains how each shard is replicated and how replicas catch up. "
        "Every shard is replicated three times, once in each zone."
    )
    ctx = context("How are shards replicated?", CAFETERIA, guide)
    # The model finds the guide's sentence about itself the closest to the question of all:
    # only its discount keeps it out.
    answer = ExtractiveAnswerer(model).run(ctx)
    assert answer.text == "Every shard is replicated three times, once in each zone. [2]"
    first = ExtractiveAnswerer(max_sentences=1).run(ctx)
    assert first.text == "Every shard is replicated three times, once in each zone. [2]"


def test_passages_on_another_topic_are_no_answer_though_they_share_a_word(
    model: BundledEmbedder,
) -> None:
    ctx = context(
        "Where can I go kayaking?", REPLICATION, "Writes go to the journal, never to a replica."
    )
    # By words alone a sentence sharing "go" passes for support; the model sees it is not.
    assert ExtractiveAnswerer().run(ctx).text == "Writes go to the journal, never to a replica. [2]"
    answer = ExtractiveAnswerer(model).run(ctx)
    assert answer.text == NO_ANSWER and answer.citations == []


def test_headings_and_fragments_are_never_quoted(model: BundledEmbedder) -> None:
    steps = "Restore a snapshot.\nSnapshots are restored one shard at a time with kestrelctl."
    ctx = context("How do I restore a snapshot?", steps)
    for answerer in (ExtractiveAnswerer(), ExtractiveAnswerer(model)):
        assert answerer.run(ctx).text == (
            "Snapshots are restored one shard at a time with kestrelctl. [1]"
        )


class DownEmbedder:
    """An embedding endpoint that is down."""

    model_id = "remote-model"
    dimension = 384

    def embed_query(self, text: str) -> list[float]:
        raise EmbedderUnavailable("the embedding endpoint refused the connection")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise EmbedderUnavailable("the embedding endpoint refused the connection")


def test_an_embedder_that_is_down_leaves_the_answer_to_the_words() -> None:
    ctx = context("How many replicas does a shard have?", CAFETERIA, REPLICATION)
    answer = ExtractiveAnswerer(DownEmbedder()).run(ctx)  # type: ignore[arg-type]
    assert answer.text == ExtractiveAnswerer().run(ctx).text
    assert answer.text == "Each shard has three replicas on different nodes. [2]"


def test_the_semantic_answerer_is_cached_under_its_own_name(model: BundledEmbedder) -> None:
    assert ExtractiveAnswerer().name == "extractive"
    assert ExtractiveAnswerer(model).name == f"extractive+{model.model_id}"


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(InvalidParameter):
        ExtractiveAnswerer(max_sentences=0)
    with pytest.raises(InvalidParameter):
        ExtractiveAnswerer(min_score=0)
    with pytest.raises(InvalidParameter):
        ExtractiveAnswerer(min_similarity=1.5)
