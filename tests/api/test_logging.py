"""Structured logs: JSON lines carrying the trace id of the request that logged them."""

from __future__ import annotations

import json
import logging
import sys

from shardrag.observability import JsonFormatter


def test_a_log_record_is_one_json_line_with_its_extras() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "shardrag.api",
            logging.ERROR,
            __file__,
            1,
            "failed %s",
            ("x",),
            exc_info=sys.exc_info(),
        )
    record.trace_id = "abc123"
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "failed x" and entry["level"] == "error"
    assert entry["trace_id"] == "abc123" and "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("Z")
