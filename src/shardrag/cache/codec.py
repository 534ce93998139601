"""Cached values as typed JSON, for a cache outside the process. No pickle.

Whoever can write to a shared cache must not be able to run code in the processes reading
it, so a value is written as JSON tagged with its type, and only the types the hot tier holds
can be written or read:

    {"hits": [hit, ...]}                              a tuple of ``Hit`` (search results)
    {"answer": {"answer": ..., "hits": [...]}}        an ``AnswerResult``
    {"vector": {"dtype": "<f4", "data": base64}}      a query vector (a list or tuple of floats)

Floats of hits and answers survive JSON exactly (``repr`` round-trips). A vector is stored as
little-endian float32 bytes when every component is a float32 (what embedding models give),
else as float64, so it always comes back equal. Decoding gives a tuple of ``Hit``, an
``AnswerResult``, or a tuple of floats.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import numpy as np

from shardrag.context import Answer, AnswerResult, Citation
from shardrag.models import Hit

_VECTOR_DTYPES = ("<f4", "<f8")


def encode_value(value: Any) -> dict[str, Any]:
    """The tagged, JSON-ready form of ``value``; TypeError for a type no cache stores."""
    if isinstance(value, tuple) and all(isinstance(item, Hit) for item in value):
        return {"hits": [dataclasses.asdict(hit) for hit in value]}
    if isinstance(value, AnswerResult):
        return {"answer": dataclasses.asdict(value)}
    if isinstance(value, list | tuple) and all(isinstance(item, float) for item in value):
        return {"vector": _encode_vector(value)}
    raise TypeError(
        f"a shared cache stores tuples of Hit, AnswerResult or float vectors, not {value!r:.100}"
    )


def decode_value(data: Any) -> Any:
    """The value ``encode_value`` wrote as ``data``; ValueError if ``data`` is not one."""
    try:
        ((tag, body),) = data.items()
        if tag == "hits":
            return tuple(_decode_hit(hit) for hit in body)
        if tag == "answer":
            return _decode_answer(body)
        if tag == "vector":
            return _decode_vector(body)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # binascii.Error too
        raise ValueError(f"not a cached value: {exc}") from None
    raise ValueError(f"not a cached value: unknown type {tag!r:.100}")


def _decode_hit(fields: dict[str, Any]) -> Hit:
    return Hit(**fields)


def _decode_answer(body: dict[str, Any]) -> AnswerResult:
    answer = body["answer"]
    citations = [
        Citation(**{**citation, "chunk_indexes": tuple(citation["chunk_indexes"])})
        for citation in answer["citations"]
    ]
    return AnswerResult(
        Answer(answer["text"], citations, answer["generated"]),
        [_decode_hit(hit) for hit in body["hits"]],
    )


def _encode_vector(vector: list[float] | tuple[float, ...]) -> dict[str, str]:
    wide = np.asarray(vector, dtype="<f8")
    with np.errstate(over="ignore"):  # a component beyond float32's range: stored as float64
        narrow = wide.astype("<f4")
    array = narrow if np.array_equal(narrow, wide) else wide
    return {"dtype": array.dtype.str, "data": base64.b64encode(array.tobytes()).decode("ascii")}


def _decode_vector(body: dict[str, str]) -> tuple[float, ...]:
    dtype = body["dtype"]
    if dtype not in _VECTOR_DTYPES:
        raise ValueError(f"unknown vector dtype {dtype!r:.20}")
    data = base64.b64decode(body["data"], validate=True)
    return tuple(np.frombuffer(data, dtype=dtype).astype(float).tolist())
