"""Chunking: every chunk fits the model, stays in its section, overlaps its predecessor."""

from __future__ import annotations

import hashlib
import re
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardrag.embed.bundled import bundled_model_dir
from shardrag.embed.tokenizer import ModelTokenizer, bundled_tokenizer
from shardrag.errors import EmptyDocument, InvalidParameter
from shardrag.ingest import Chunker, parse
from shardrag.ingest.sentences import split_sentences
from shardrag.models import Block, Chunk, ParsedDocument

TOKENIZER = bundled_tokenizer()
BUDGET = TOKENIZER.content_budget


def sentence_list(text: str) -> list[str]:
    return [sentence for sentence, _ in split_sentences(text)]


def numbered_sentences(count: int, topic: str = "topic") -> str:
    return " ".join(f"Sentence {i} talks about {topic} number {i}." for i in range(count))


def non_space(text: str) -> str:
    return re.sub(r"\s+", "", text)


def by_context(chunks: list[Chunk]) -> dict[str, list[str]]:
    hashes: dict[str, list[str]] = {}
    for chunk in chunks:
        hashes.setdefault(chunk.context, []).append(chunk.content_hash)
    return hashes


# --- the budget invariant -------------------------------------------------------------------

BLOCK_TEXTS = st.one_of(
    st.text(max_size=1500),
    # One "word" of many tokens: BERT reads a run of over 100 letters as one [UNK], but not
    # letters cut by punctuation.
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=300, max_size=3000),
    st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=8), min_size=50, max_size=600).map(
        "/".join
    ),
    st.text(alphabet="你好世界文字漢語。", min_size=200, max_size=1500),
    st.lists(
        st.sampled_from(
            [
                "Short.",
                "A sentence here!",
                "Ünïcödé wörds?",
                "日本語の文です。",
                "e.g. this",
                "y" * 400,
            ]
        ),
        max_size=60,
    ).map(" ".join),
)
HEADING_PATHS = st.lists(st.text(max_size=400), max_size=4).map(tuple)


@st.composite
def documents(draw: st.DrawFn) -> ParsedDocument:
    paths = draw(st.lists(HEADING_PATHS, min_size=1, max_size=3))
    blocks = draw(
        st.lists(
            st.builds(
                Block,
                text=BLOCK_TEXTS,
                headings=st.sampled_from(paths),
                page=st.one_of(st.none(), st.integers(1, 5)),
            ),
            min_size=1,
            max_size=60,
        )
    )
    return ParsedDocument(blocks=blocks, title=draw(st.one_of(st.none(), st.text(max_size=500))))


@st.composite
def chunkers(draw: st.DrawFn) -> Chunker:
    chunk_tokens = draw(st.integers(min_value=8, max_value=400))
    overlap_tokens = draw(st.integers(min_value=0, max_value=min(chunk_tokens - 1, 100)))
    return Chunker(TOKENIZER, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), chunker=chunkers())
def test_no_chunk_exceeds_model_token_limit(doc: ParsedDocument, chunker: Chunker) -> None:
    if not any(block.text.strip() for block in doc.blocks):
        with pytest.raises(EmptyDocument):
            chunker.chunk(doc)
        return

    chunks = chunker.chunk(doc)

    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text.strip()
        assert TOKENIZER.count(chunk.indexed_text) == chunk.token_count <= BUDGET


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(
        st.text(
            alphabet=st.characters(categories=("L", "N", "P", "Zs")), min_size=1, max_size=1500
        ),
        min_size=1,
        max_size=10,
    ),
    chunk_tokens=st.integers(min_value=16, max_value=300),
)
def test_without_overlap_chunks_hold_all_the_text_once(texts: list[str], chunk_tokens: int) -> None:
    doc = ParsedDocument(blocks=[Block(text) for text in texts if text.strip()] or [Block("x")])

    chunks = Chunker(TOKENIZER, chunk_tokens=chunk_tokens, overlap_tokens=0).chunk(doc)

    assert "".join(non_space(c.text) for c in chunks) == non_space(doc.text)


def test_chunks_are_at_most_chunk_tokens_plus_context() -> None:
    doc = ParsedDocument(blocks=[Block(numbered_sentences(80), headings=("Guide", "Install"))])

    chunks = Chunker(TOKENIZER, chunk_tokens=100, overlap_tokens=20).chunk(doc)

    context_tokens = TOKENIZER.count("Guide > Install")
    assert len(chunks) > 1
    assert all(chunk.token_count <= 100 + context_tokens for chunk in chunks)


def test_chunk_tokens_above_the_model_budget_are_capped_by_it() -> None:
    doc = ParsedDocument(blocks=[Block(numbered_sentences(200))])

    chunks = Chunker(TOKENIZER, chunk_tokens=10_000, overlap_tokens=0).chunk(doc)

    assert all(chunk.token_count <= BUDGET for chunk in chunks)
    assert chunks[0].token_count > BUDGET - 20


class LineBreakCountingTokenizer(ModelTokenizer):
    """The bundled tokenizer, but every line break is a token, as in byte-level BPE models."""

    def count(self, text: str) -> int:
        return super().count(text) + text.count("\n")

    def count_batch(self, texts: list[str]) -> list[int]:
        counts = super().count_batch(texts)
        return [n + text.count("\n") for n, text in zip(counts, texts, strict=True)]


def test_budget_holds_for_a_tokenizer_that_also_counts_the_joins() -> None:
    tokenizer = LineBreakCountingTokenizer(bundled_model_dir() / "tokenizer.json", max_tokens=256)
    doc = ParsedDocument(blocks=[Block(f"Item {i} is short.") for i in range(300)], title="List")

    chunks = Chunker(tokenizer, chunk_tokens=250, overlap_tokens=0).chunk(doc)

    assert all(
        tokenizer.count(c.indexed_text) == c.token_count <= tokenizer.content_budget for c in chunks
    )
    assert "".join(c.text for c in chunks).count("Item") == 300


# --- packing and cutting --------------------------------------------------------------------


def test_short_blocks_of_a_section_are_packed_together() -> None:
    blocks = [Block(f"Paragraph {i} is brief.") for i in range(30)]

    chunks = Chunker(TOKENIZER, chunk_tokens=60, overlap_tokens=0).chunk(ParsedDocument(blocks))

    assert 1 < len(chunks) < len(blocks)
    assert chunks[0].text.startswith("Paragraph 0 is brief.\n\nParagraph 1 is brief.")
    assert "\n\n".join(c.text for c in chunks) == ParsedDocument(blocks).text


def test_blocks_that_fit_are_not_cut() -> None:
    paragraphs = [numbered_sentences(4, topic=f"part{n}") for n in range(12)]

    chunks = Chunker(TOKENIZER, chunk_tokens=120, overlap_tokens=0).chunk(
        ParsedDocument([Block(p) for p in paragraphs])
    )

    assert all(set(c.text.split("\n\n")) <= set(paragraphs) for c in chunks)


def test_long_block_is_cut_between_sentences() -> None:
    text = numbered_sentences(60)

    chunks = Chunker(TOKENIZER, chunk_tokens=50, overlap_tokens=0).chunk(
        ParsedDocument([Block(text)])
    )

    assert len(chunks) > 1
    assert all(c.text.startswith("Sentence") and c.text.endswith(".") for c in chunks)
    assert " ".join(c.text for c in chunks) == text


def test_sentence_longer_than_the_limit_is_cut_on_token_boundaries() -> None:
    url = "https://example.com/" + "/".join(f"segment{i}" for i in range(400))

    chunks = Chunker(TOKENIZER, chunk_tokens=50, overlap_tokens=10).chunk(
        ParsedDocument([Block(f"See {url} for details.")])
    )

    assert len(chunks) > 1
    assert all(c.token_count <= 50 for c in chunks)
    assert "".join(non_space(c.text) for c in chunks) == non_space(f"See {url} for details.")


def test_code_keeps_its_line_breaks_and_indentation() -> None:
    code = "def f(x):\n    return x * 2\n\n\nprint(f(2))"

    (chunk,) = Chunker(TOKENIZER).chunk(ParsedDocument([Block(code)]))

    assert chunk.text == code


# --- overlap --------------------------------------------------------------------------------


def test_each_chunk_starts_with_the_trailing_sentences_of_the_previous_one() -> None:
    doc = ParsedDocument([Block(numbered_sentences(60))])

    chunks = Chunker(TOKENIZER, chunk_tokens=60, overlap_tokens=25).chunk(doc)

    assert len(chunks) > 2
    for previous, chunk in pairwise(chunks):
        before, after = sentence_list(previous.text), sentence_list(chunk.text)
        shared = max(k for k in range(len(before)) if before[len(before) - k :] == after[:k])
        assert shared >= 1
        assert TOKENIZER.count(" ".join(after[:shared])) <= 25
        # As many trailing sentences as fit in the overlap, not fewer.
        assert TOKENIZER.count(" ".join(before[-shared - 1 :])) > 25


def test_overlap_crosses_block_boundaries_within_a_section() -> None:
    blocks = [Block(f"Block {i} has one sentence of text.") for i in range(20)]

    chunks = Chunker(TOKENIZER, chunk_tokens=40, overlap_tokens=12).chunk(ParsedDocument(blocks))

    for previous, chunk in pairwise(chunks):
        assert chunk.text.split("\n\n")[0] == previous.text.split("\n\n")[-1]


def test_zero_overlap_repeats_nothing() -> None:
    doc = ParsedDocument([Block(numbered_sentences(60))])

    chunks = Chunker(TOKENIZER, chunk_tokens=60, overlap_tokens=0).chunk(doc)

    sentences = [s for c in chunks for s in sentence_list(c.text)]
    assert sentences == sentence_list(doc.text)


def test_overlap_never_makes_a_chunk_exceed_the_limit() -> None:
    # Sentences of ~30 tokens in a 64-token limit: overlap would leave no room, so it yields.
    text = " ".join(
        f"Sentence {i} " + " ".join(f"word{i}x{j}" for j in range(8)) + "." for i in range(30)
    )

    chunks = Chunker(TOKENIZER, chunk_tokens=64, overlap_tokens=40).chunk(
        ParsedDocument([Block(text)])
    )

    assert all(c.token_count <= 64 for c in chunks)


def test_the_first_chunk_of_a_section_has_no_overlap() -> None:
    doc = ParsedDocument(
        [
            Block(numbered_sentences(30, "apples"), ("A",)),
            Block(numbered_sentences(30, "pears"), ("B",)),
        ]
    )

    chunks = Chunker(TOKENIZER, chunk_tokens=60, overlap_tokens=25).chunk(doc)

    first_of_b = next(c for c in chunks if c.context == "B")
    assert first_of_b.text.startswith("Sentence 0 talks about pears")


# --- sections and context -------------------------------------------------------------------


def test_chunks_never_mix_sections() -> None:
    source = "\n\n".join(
        f"## Section {n}\n\n" + "\n\n".join(numbered_sentences(5, f"marker{n}") for _ in range(4))
        for n in range(5)
    )

    chunks = Chunker(TOKENIZER, chunk_tokens=80, overlap_tokens=20).chunk(
        parse(source.encode(), "doc.md")
    )

    for chunk in chunks:
        markers = set(re.findall(r"marker\d", chunk.text))
        assert len(markers) == 1
        assert chunk.context == f"Section {markers.pop()[-1]}"


def test_context_is_the_heading_path_without_repeating_the_title() -> None:
    doc = parse(b"# Guide\n\nintro\n\n## Install\n\n### Linux\n\nrun apt", "guide.md")

    chunks = Chunker(TOKENIZER).chunk(doc)

    assert [(c.context, c.text) for c in chunks] == [
        ("Guide", "intro"),
        ("Guide > Install > Linux", "run apt"),
    ]
    assert chunks[1].indexed_text == "Guide > Install > Linux\nrun apt"


def test_title_leads_the_context_when_it_is_not_the_first_heading() -> None:
    doc = parse(b"<title>Shardrag docs</title><h2>Install</h2><p>run it</p>", "a.html")

    (chunk,) = Chunker(TOKENIZER).chunk(doc)

    assert chunk.context == "Shardrag docs > Install"


def test_title_alone_is_the_context_of_a_document_without_headings() -> None:
    # CISI-like: a title and an abstract, no other structure.
    doc = ParsedDocument(
        [Block("The present study is a history of the DEWEY Decimal Classification.")],
        title="18 Editions of the Dewey  Decimal Classifications",
    )

    (chunk,) = Chunker(TOKENIZER).chunk(doc)

    assert chunk.context == "18 Editions of the Dewey Decimal Classifications"
    assert chunk.indexed_text.startswith("18 Editions of the Dewey Decimal Classifications\n")


def test_no_title_and_no_headings_means_no_context() -> None:
    (chunk,) = Chunker(TOKENIZER).chunk(ParsedDocument([Block("just text")]))

    assert (chunk.context, chunk.indexed_text) == ("", "just text")


def test_overlong_heading_context_is_truncated_to_a_quarter_of_the_budget() -> None:
    heading = " ".join(f"heading{i}" for i in range(300))
    doc = ParsedDocument([Block(numbered_sentences(40), headings=(heading,))], title="Title")

    chunks = Chunker(TOKENIZER).chunk(doc)

    assert all(TOKENIZER.count(c.context) <= BUDGET // 4 for c in chunks)
    assert all(c.context.startswith("Title > heading0 heading1") for c in chunks)
    assert all(c.token_count <= BUDGET for c in chunks)


# --- identity of chunks ---------------------------------------------------------------------


def long_document(edit: tuple[int, int, str] | None = None) -> bytes:
    """Six sections of eight paragraphs; ``edit`` replaces paragraph (section, n)."""
    parts = ["# Handbook"]
    for s in range(6):
        parts.append(f"## Chapter {s}")
        for p in range(8):
            text = f"Chapter {s} paragraph {p} is about the river. " + numbered_sentences(3)
            if edit is not None and edit[:2] == (s, p):
                text = edit[2]
            parts.append(text)
    return "\n\n".join(parts).encode()


def test_editing_one_paragraph_changes_only_the_chunks_covering_it() -> None:
    chunker = Chunker(TOKENIZER, chunk_tokens=120, overlap_tokens=24)
    original = "Chapter 3 paragraph 4 is about the river. " + numbered_sentences(3)
    edited = original.replace("river", "ocean")
    assert TOKENIZER.count(edited) == TOKENIZER.count(original)

    before = chunker.chunk(parse(long_document(), "h.md"))
    after = chunker.chunk(parse(long_document(edit=(3, 4, edited)), "h.md"))

    changed = [b for a, b in zip(before, after, strict=True) if a.content_hash != b.content_hash]
    assert changed
    assert all("ocean" in chunk.text for chunk in changed)
    assert [c for c in after if "ocean" in c.text] == changed


def test_editing_one_paragraph_leaves_every_other_section_untouched() -> None:
    chunker = Chunker(TOKENIZER, chunk_tokens=120, overlap_tokens=24)
    rewrite = "A much longer replacement paragraph. " * 12

    before = by_context(chunker.chunk(parse(long_document(), "h.md")))
    after = by_context(chunker.chunk(parse(long_document(edit=(3, 5, rewrite)), "h.md")))

    assert before.keys() == after.keys()
    for context in before:
        if context == "Handbook > Chapter 3":
            assert before[context] != after[context]
            # Boundaries are decided left to right: chunks before the edit stay the same.
            assert before[context][0] == after[context][0]
        else:
            assert before[context] == after[context]


def test_chunking_is_deterministic() -> None:
    source = long_document()

    first = Chunker(TOKENIZER, 90, 20).chunk(parse(source, "h.md"))
    second = Chunker(TOKENIZER, 90, 20).chunk(parse(source, "h.md"))

    assert first == second


def test_chunk_indexes_are_contiguous_across_sections() -> None:
    chunks = Chunker(TOKENIZER, 90, 20).chunk(parse(long_document(), "h.md"))

    assert len({c.context for c in chunks}) == 6
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_hash_and_token_count_describe_the_indexed_text() -> None:
    for chunk in Chunker(TOKENIZER, 90, 20).chunk(parse(long_document(), "h.md")):
        assert chunk.content_hash == hashlib.sha256(chunk.indexed_text.encode()).hexdigest()
        assert chunk.token_count == TOKENIZER.count(chunk.indexed_text)


def test_page_is_the_page_of_the_chunks_first_own_block_not_of_its_overlap() -> None:
    blocks = [Block(numbered_sentences(3, f"page{page}"), page=page) for page in range(1, 9)]

    chunks = Chunker(TOKENIZER, chunk_tokens=70, overlap_tokens=12).chunk(ParsedDocument(blocks))

    assert len(chunks) > 2
    for previous, chunk in pairwise(chunks):
        assert chunk.text.startswith(previous.text.rsplit(". ", 1)[-1])
    for chunk in chunks:
        first_block = re.search(r"Sentence 0 talks about page(\d)", chunk.text)
        assert first_block is not None
        assert chunk.page == int(first_block.group(1))


# --- rejected input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "blocks", [[], [Block(""), Block("  \n\t ")]], ids=["no-blocks", "blank-blocks"]
)
def test_document_without_text_is_empty(blocks: list[Block]) -> None:
    with pytest.raises(EmptyDocument):
        Chunker(TOKENIZER).chunk(ParsedDocument(blocks, title="A title alone"))


@pytest.mark.parametrize(
    ("chunk_tokens", "overlap_tokens"), [(0, 0), (100, -1), (100, 100), (50, 80)]
)
def test_invalid_sizes_are_rejected(chunk_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(InvalidParameter):
        Chunker(TOKENIZER, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
