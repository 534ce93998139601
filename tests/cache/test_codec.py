"""Cached values as typed JSON: exact round trips, compact vectors, nothing else read or written."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from shardrag.cache.codec import decode_value, encode_value
from shardrag.context import Answer, AnswerResult
from shardrag.models import Hit


def round_trip(value: object) -> object:
    return decode_value(json.loads(json.dumps(encode_value(value))))


def test_hits_and_answers_come_back_equal_and_immutable_where_they_were() -> None:
    hit = Hit("d", 2, 0, "text", 0.1 + 0.2, {"n": 2**63 - 1, "x": [1.5, None]}, page=3)
    assert round_trip((hit,)) == (hit,)
    assert round_trip(()) == ()  # a search that found nothing
    answer = AnswerResult(Answer("No answer.", [], False), [])
    assert round_trip(answer) == answer


def test_float32_vectors_take_four_bytes_a_component_and_others_stay_exact() -> None:
    float32 = np.random.default_rng(7).standard_normal(384).astype(np.float32).tolist()
    encoded = encode_value(float32)["vector"]
    assert encoded["dtype"] == "<f4"
    assert len(base64.b64decode(encoded["data"])) == 384 * 4
    assert round_trip(float32) == tuple(float32)

    float64 = (0.1, 1e300, -0.0)
    assert encode_value(float64)["vector"]["dtype"] == "<f8"
    assert round_trip(float64) == float64


@pytest.mark.parametrize(
    "data",
    [
        {"pickle": "gASVBQAAAAAAAACMAWGULg=="},
        {"hits": [{"doc_id": "d", "unexpected": 1}]},
        {"hits": "not a list"},
        {"answer": {"answer": {"text": "t"}, "hits": []}},
        {"vector": {"dtype": "O", "data": ""}},
        {"vector": {"dtype": "<f4", "data": "not base64!"}},
        {"vector": {"dtype": "<f4", "data": "AAA="}},  # 2 bytes: no whole float32
        {"hits": [], "vector": {}},
        [],
        "text",
    ],
)
def test_anything_but_an_encoded_value_is_refused(data: object) -> None:
    with pytest.raises(ValueError):
        decode_value(data)
