"""The context service: hits to a prompt within a token budget, and the answer with citations."""

from shardrag.context.assembly import (
    NO_ANSWER,
    Answer,
    Answerer,
    AnswerResult,
    AnswerStream,
    Citation,
    Context,
    ContextAssembler,
    citations_in,
    render_prompt,
)
from shardrag.context.extractive import ExtractiveAnswerer
from shardrag.context.generation import OpenAIChatGenerator

__all__ = [
    "NO_ANSWER",
    "Answer",
    "AnswerResult",
    "AnswerStream",
    "Answerer",
    "Citation",
    "Context",
    "ContextAssembler",
    "ExtractiveAnswerer",
    "OpenAIChatGenerator",
    "citations_in",
    "render_prompt",
]
