"""Token-aware chunking: a parsed document to passages that fit the embedding model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from itertools import groupby, pairwise

from shardrag.embed.tokenizer import ModelTokenizer
from shardrag.errors import EmptyDocument, InternalError, InvalidParameter
from shardrag.ingest.sentences import split_sentences
from shardrag.ingest.structure import collapse_whitespace
from shardrag.models import Block, Chunk, ParsedDocument

CONTEXT_SEPARATOR = " > "
BLOCK_SEPARATOR = "\n\n"
# The heading context may take at most this share of the model's budget; the text needs the rest.
CONTEXT_SHARE = 4


@dataclass(frozen=True)
class _Piece:
    """A sentence, or a token-cut part of an over-long one: what chunk boundaries fall between."""

    text: str
    tokens: int
    separator: str  # joins it to the next piece of the same block
    block: int  # the block's index within its section


@dataclass(frozen=True)
class _Section:
    """Consecutive blocks under one heading path: the scope of every chunk boundary decision."""

    blocks: list[Block]
    pieces: list[list[_Piece]]  # each block's sentences
    context: str
    limit: int  # most text tokens per chunk: chunk_tokens, less if the context needs room


class Chunker:
    """Cuts a ``ParsedDocument`` into ``Chunk``s sized in the embedding model's tokens.

    Rules (docs/ingestion.md):

    * a chunk holds blocks of one section (one heading path) only; its ``context`` is that
      path joined with " > ", led by the document title unless the title is its first heading;
    * whole blocks are packed up to ``chunk_tokens``; a longer block is cut between sentences,
      and a longer sentence on token boundaries;
    * every chunk after a section's first starts with the previous chunk's trailing sentences,
      at most ``overlap_tokens`` of them (0 disables overlap);
    * every chunk's ``indexed_text`` fits the model (``tokenizer.content_budget``), so no chunk
      is ever truncated by the embedder; a context over a quarter of it is truncated.

    Boundaries are decided per section, left to right, so editing one paragraph changes only
    the chunks of its section from that paragraph on; every other chunk keeps its hash.
    """

    def __init__(
        self, tokenizer: ModelTokenizer, chunk_tokens: int = 200, overlap_tokens: int = 32
    ) -> None:
        if chunk_tokens < 1:
            raise InvalidParameter(
                f"chunk_tokens must be at least 1, not {chunk_tokens}", chunk_tokens=chunk_tokens
            )
        if not 0 <= overlap_tokens < chunk_tokens:
            raise InvalidParameter(
                f"overlap_tokens must be from 0 to chunk_tokens - 1 ({chunk_tokens - 1}), "
                f"not {overlap_tokens}",
                overlap_tokens=overlap_tokens,
            )
        self.tokenizer = tokenizer
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens

    def chunk(self, doc: ParsedDocument) -> list[Chunk]:
        """The document's chunks, ``index`` 0..n-1 in reading order; deterministic."""
        sections = self._sections(doc)
        drafts = [self._pack(section, section.limit) for section in sections]
        # One batch for the whole document; it is also the check of the budget invariant.
        counts = self.tokenizer.count_batch(
            [draft.indexed_text for section_drafts in drafts for draft in section_drafts]
        )
        chunks: list[Chunk] = []
        offset = 0
        for section, section_drafts in zip(sections, drafts, strict=True):
            section_counts = counts[offset : offset + len(section_drafts)]
            offset += len(section_drafts)
            fitted = self._within_budget(section, section_drafts, section_counts)
            # extend() appends as the generator runs, so len(chunks) is read once, before.
            first_index = len(chunks)
            chunks.extend(
                replace(
                    draft,
                    index=first_index + position,
                    content_hash=hashlib.sha256(draft.indexed_text.encode("utf-8")).hexdigest(),
                    token_count=tokens,
                )
                for position, (draft, tokens) in enumerate(fitted)
            )
        return chunks

    def _sections(self, doc: ParsedDocument) -> list[_Section]:
        """Runs of consecutive blocks with one heading path, segmented into counted sentences."""
        runs = [
            list(blocks)
            for _, blocks in groupby(
                (block for block in doc.blocks if block.text.strip()), key=lambda b: b.headings
            )
        ]
        if not runs:
            raise EmptyDocument("the document has no text to chunk")
        contexts = self._contexts(doc.title, [blocks[0].headings for blocks in runs])
        budget = self.tokenizer.content_budget
        return [
            _Section(blocks, pieces, context, min(self.chunk_tokens, budget - context_tokens))
            for blocks, pieces, (context, context_tokens) in zip(
                runs, self._segment(runs), contexts, strict=True
            )
        ]

    def _within_budget(
        self, section: _Section, drafts: list[Chunk], counts: list[int]
    ) -> list[tuple[Chunk, int]]:
        """The section's drafts with their token counts, re-packed until every one fits.

        Sums of sentence counts are exact for the bundled (BERT) tokenizer, so this is one
        check; a tokenizer that also counts the joins gets the section packed tighter.
        """
        budget = self.tokenizer.content_budget
        limit = section.limit
        while max(counts) > budget:
            limit -= max(counts) - budget
            if limit < 1:
                raise InternalError(f"no chunk fits a budget of {budget} tokens")
            drafts = self._pack(section, limit)
            counts = self.tokenizer.count_batch([draft.indexed_text for draft in drafts])
        return list(zip(drafts, counts, strict=True))

    def _contexts(self, title: str | None, paths: list[tuple[str, ...]]) -> list[tuple[str, int]]:
        """Each section's context and its token count, truncated to a quarter of the budget."""
        lead = collapse_whitespace(title) if title else ""
        texts = []
        for path in paths:
            parts = list(path)
            if lead and (not parts or parts[0] != lead):
                parts.insert(0, lead)
            texts.append(CONTEXT_SEPARATOR.join(parts))
        cap = self.tokenizer.content_budget // CONTEXT_SHARE
        contexts = []
        for text, tokens in zip(texts, self.tokenizer.count_batch(texts), strict=True):
            if tokens > cap:
                text = self.tokenizer.split(text, cap)[0] if cap > 0 else ""
                tokens = self.tokenizer.count(text)
            contexts.append((text, tokens))
        return contexts

    def _segment(self, runs: list[list[Block]]) -> list[list[list[_Piece]]]:
        """Every block's sentences with their token counts, counted in one batch."""
        split = [[split_sentences(block.text) for block in blocks] for blocks in runs]
        counts = iter(
            self.tokenizer.count_batch(
                [sentence for blocks in split for block in blocks for sentence, _ in block]
            )
        )
        return [
            [
                [_Piece(sentence, next(counts), separator, index) for sentence, separator in block]
                for index, block in enumerate(blocks)
            ]
            for blocks in split
        ]

    def _pack(self, section: _Section, limit: int) -> list[Chunk]:
        """Draft chunks of a section: ``chunk`` sets their index, hash and token count."""
        return [
            Chunk(
                index=-1,
                text=_join(content),
                context=section.context,
                content_hash="",
                token_count=-1,
                page=section.blocks[first.block].page,
            )
            for content, first in self._group(self._units(section.pieces, limit), limit)
        ]

    def _units(self, pieces: list[list[_Piece]], limit: int) -> list[list[_Piece]]:
        """What packing places whole: a block that fits ``limit``, else each of its sentences."""
        units: list[list[_Piece]] = []
        for block_pieces in pieces:
            fitted = [part for piece in block_pieces for part in self._fit(piece, limit)]
            if sum(piece.tokens for piece in fitted) <= limit:
                units.append(fitted)
            else:
                units.extend([piece] for piece in fitted)
        return units

    def _group(self, units: list[list[_Piece]], limit: int) -> list[tuple[list[_Piece], _Piece]]:
        """Greedy, left to right: each chunk's pieces (overlap first) and its first own piece."""
        groups: list[tuple[list[_Piece], _Piece]] = []
        overlap: list[_Piece] = []
        own: list[_Piece] = []
        used = 0
        for unit in units:
            size = sum(piece.tokens for piece in unit)
            if own and used + size > limit:
                groups.append((overlap + own, own[0]))
                overlap = self._overlap(own)
                own = []
                used = sum(piece.tokens for piece in overlap)
            # Overlap yields to content: drop its oldest sentences until the unit fits.
            while overlap and used + size > limit:
                used -= overlap.pop(0).tokens
            own.extend(unit)
            used += size
        groups.append((overlap + own, own[0]))
        return groups

    def _overlap(self, pieces: list[_Piece]) -> list[_Piece]:
        """The longest run of trailing pieces totalling at most ``overlap_tokens``."""
        if not self.overlap_tokens:
            return []
        taken: list[_Piece] = []
        total = 0
        for piece in reversed(pieces):
            if total + piece.tokens > self.overlap_tokens:
                break
            taken.append(piece)
            total += piece.tokens
        return taken[::-1]

    def _fit(self, piece: _Piece, limit: int) -> list[_Piece]:
        """``piece`` itself if it fits ``limit``, else its token-boundary parts that do."""
        if piece.tokens <= limit:
            return [piece]
        texts = self.tokenizer.split(piece.text, limit)
        if texts == [piece.text]:
            raise InternalError(f"text cannot be cut to {limit} tokens: {piece.text[:40]!r}")
        counts = self.tokenizer.count_batch(texts)
        # Inner cuts have no whitespace to keep; a space keeps the parts' tokens apart.
        separators = [" "] * (len(texts) - 1) + [piece.separator]
        return [
            part
            for text, tokens, separator in zip(texts, counts, separators, strict=True)
            for part in self._fit(_Piece(text, tokens, separator, piece.block), limit)
        ]


def _join(pieces: list[_Piece]) -> str:
    parts = [pieces[0].text]
    for previous, piece in pairwise(pieces):
        parts.append(previous.separator if previous.block == piece.block else BLOCK_SEPARATOR)
        parts.append(piece.text)
    return "".join(parts)
