"""Context assembly: within the budget, overlap kept once, source order, numbered citations."""

from __future__ import annotations

import pytest

from shardrag.context import NO_ANSWER, ContextAssembler, citations_in, render_prompt
from shardrag.embed.tokenizer import bundled_tokenizer
from shardrag.errors import EmptyQuery, InvalidParameter
from shardrag.ingest import Chunker
from shardrag.models import Block, Hit, ParsedDocument

TOKENIZER = bundled_tokenizer()
ASSEMBLER = ContextAssembler(TOKENIZER)
# One paragraph, so the chunks joined without their overlaps give back exactly this text.
DOCUMENT = " ".join(f"Sentence {i} says replicas apply log entry {i} in order." for i in range(30))


def hit(
    doc_id: str, chunk_index: int, text: str, *, version: int = 1, page: int | None = None
) -> Hit:
    return Hit(doc_id, version, chunk_index, text, score=1.0, metadata={}, page=page)


def chunk_hits(doc_id: str = "guide") -> list[Hit]:
    """The document cut by the real chunker, every chunk overlapping its predecessor."""
    chunks = Chunker(TOKENIZER, chunk_tokens=60, overlap_tokens=20).chunk(
        ParsedDocument([Block(DOCUMENT)])
    )
    return [hit(doc_id, chunk.index, chunk.text) for chunk in chunks]


def test_the_chunker_repeats_text_between_adjacent_chunks() -> None:
    hits = chunk_hits()
    assert len(hits) > 4
    first_sentence_of_second = hits[1].text.split(". ")[0] + "."
    assert first_sentence_of_second in hits[0].text


def test_adjacent_chunks_merge_into_one_passage_with_the_overlap_kept_once() -> None:
    hits = chunk_hits()
    context = ASSEMBLER.run("what do replicas apply?", [hits[1], hits[0], hits[2]], 10_000)
    [passage] = context.passages
    assert passage.chunk_indexes == (0, 1, 2)
    assert DOCUMENT.startswith(passage.text)
    assert passage.text.endswith(hits[2].text)
    sentences = passage.text.count("Sentence ")
    assert all(passage.text.count(f"Sentence {i} says") == 1 for i in range(sentences))
    assert context.prompt_tokens == TOKENIZER.count(passage.text)

    everything = ASSEMBLER.run("what do replicas apply?", hits, 10_000)
    assert [p.text for p in everything.passages] == [DOCUMENT]


def test_overlap_is_matched_on_whitespace_normalised_words() -> None:
    first = hit("notes", 0, "Intro here. Alpha beta.\n\nGamma   delta.")
    second = hit("notes", 1, "Alpha beta. Gamma delta.\n\nNew paragraph.")
    context = ASSEMBLER.run("alpha?", [first, second], 1_000)
    assert [p.text for p in context.passages] == [
        "Intro here. Alpha beta.\n\nGamma   delta.\n\nNew paragraph."
    ]


def test_adjacent_chunks_without_overlap_are_joined_whole() -> None:
    context = ASSEMBLER.run(
        "what?", [hit("notes", 1, "Second part."), hit("notes", 0, "First part.")], 1_000
    )
    assert [p.text for p in context.passages] == ["First part.\n\nSecond part."]


def test_non_adjacent_chunks_stay_separate_passages() -> None:
    hits = chunk_hits()
    context = ASSEMBLER.run("what do replicas apply?", [hits[2], hits[0]], 10_000)
    assert [(p.number, p.chunk_indexes, p.text) for p in context.passages] == [
        (1, (0,), hits[0].text),
        (2, (2,), hits[2].text),
    ]


def test_passages_follow_source_order_and_are_numbered_from_one() -> None:
    ranking = [
        hit("b", 3, "B three."),
        hit("a", 1, "A one."),
        hit("b", 0, "B zero."),
        hit("a", 5, "A five."),
    ]
    context = ASSEMBLER.run("which?", ranking, 1_000)
    assert [(p.number, p.doc_id, p.chunk_indexes) for p in context.passages] == [
        (1, "b", (0,)),
        (2, "b", (3,)),
        (3, "a", (1,)),
        (4, "a", (5,)),
    ]


def test_hits_of_different_versions_are_never_merged() -> None:
    old = hit("a", 0, "Shared sentence. Old ending.", version=1)
    new = hit("a", 1, "Old ending. New text.", version=2)
    context = ASSEMBLER.run("which?", [old, new], 1_000)
    assert [(p.version, p.chunk_indexes, p.text) for p in context.passages] == [
        (1, (0,), old.text),
        (2, (1,), new.text),
    ]


def test_a_hit_that_does_not_fit_is_skipped_and_smaller_ones_still_taken() -> None:
    small = hit("a", 0, "Replicas apply the log in order.")
    large = hit("b", 0, " ".join(["Failover promotes another replica when a node dies."] * 12))
    smaller = hit("c", 0, "Shards move by snapshot.")
    budget = TOKENIZER.count(small.text) + TOKENIZER.count(smaller.text) + 5
    assert TOKENIZER.count(large.text) > budget
    context = ASSEMBLER.run("how?", [small, large, smaller], budget)
    assert [p.doc_id for p in context.passages] == ["a", "c"]
    assert context.dropped_hits == 1
    assert context.prompt_tokens == sum(TOKENIZER.count(p.text) for p in context.passages)


@pytest.mark.parametrize("budget", [1, 20, 54, 80, 130, 250, 10_000])
def test_the_budget_is_never_exceeded(budget: int) -> None:
    hits = chunk_hits()
    ranking = hits[1::2] + hits[::2]  # the even chunks join passages of the odd ones
    context = ASSEMBLER.run("what do replicas apply?", ranking, budget)
    counted = sum(TOKENIZER.count(p.text) for p in context.passages)
    assert context.prompt_tokens == counted <= budget
    kept = sum(len(p.chunk_indexes) for p in context.passages)
    assert kept + context.dropped_hits == len(ranking)


def test_merging_charges_the_overlap_once_so_adjacent_chunks_fit_together() -> None:
    hits = chunk_hits()
    merged = ASSEMBLER.run("q?", hits[:2], 10_000).passages[0].text
    budget = TOKENIZER.count(merged)
    assert budget < TOKENIZER.count(hits[0].text) + TOKENIZER.count(hits[1].text)
    context = ASSEMBLER.run("q?", hits[:2], budget)
    assert [p.chunk_indexes for p in context.passages] == [(0, 1)]
    assert context.dropped_hits == 0


def test_the_same_chunk_twice_is_one_source() -> None:
    twice = [hit("a", 0, "Replicas apply the log."), hit("a", 0, "Replicas apply the log.")]
    context = ASSEMBLER.run("what?", twice, 1_000)
    assert len(context.passages) == 1
    assert context.dropped_hits == 0


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(InvalidParameter):
        ASSEMBLER.run("what?", [], 0)
    with pytest.raises(EmptyQuery):
        ASSEMBLER.run("  ", [], 100)


def test_the_prompt_numbers_sources_and_asks_for_citations() -> None:
    context = ASSEMBLER.run(
        "How many replicas?",
        [hit("guide", 4, "Each shard has three replicas.", page=3), hit("faq", 0, "Ask us.")],
        1_000,
    )
    system, user = render_prompt(context)
    assert system["role"] == "system"
    assert "[n]" in system["content"]
    assert NO_ANSWER in system["content"]
    assert user["role"] == "user"
    assert "[1] (guide, p. 3) Each shard has three replicas." in user["content"]
    assert "[2] (faq) Ask us." in user["content"]
    assert user["content"].endswith("Question: How many replicas?")


def test_a_prompt_without_sources_says_so() -> None:
    _, user = render_prompt(ASSEMBLER.run("anything?", [], 100))
    assert "no sources" in user["content"]


def test_citations_are_the_passages_an_answer_names() -> None:
    context = ASSEMBLER.run("q?", [hit(doc, 0, f"Text {doc}.") for doc in "abcd"], 1_000)
    cited = citations_in("Yes [2], and [1, 3]; not [9] or [x].", context)
    assert [c.number for c in cited] == [1, 2, 3]
