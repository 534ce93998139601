"""Fault injection into index nodes, for the resilience tests and the chaos suite.

A node started with ``fault_injection`` (``SHARDRAG_FAULT_INJECTION=true``; never in
production) also answers requests on ``<prefix>_rpc.fault.<node>``. The body
``{"delay_seconds": x}`` makes every search answer of that node wait x seconds first (0 clears
it); the node confirms with ``{"ok": true, "node_id": ..., "delay_seconds": x}``. A node
without the setting does not subscribe: such a request finds no responder.
"""

from __future__ import annotations

import json
import math
from typing import Any

from shardrag.config import Settings
from shardrag.errors import InvalidParameter, Unavailable
from shardrag.natsconn import NatsConnection
from shardrag.tls import nats_tls

# How long a node may take to confirm a fault.
_CONFIRM_SECONDS = 5.0


def fault_subject(prefix: str, node_id: str) -> str:
    """The subject a node with fault injection listens on."""
    return f"{prefix}_rpc.fault.{node_id}"


def parse_delay(data: bytes) -> float:
    """The delay a fault request asks for (ValueError if it is not a valid one)."""
    value: Any = json.loads(data)
    delay = float(value["delay_seconds"]) if isinstance(value, dict) else math.nan
    if not math.isfinite(delay) or delay < 0:
        raise ValueError(f"delay_seconds must be a number >= 0, not {value!r}")
    return delay


def inject_delay(settings: Settings, node_id: str, seconds: float) -> None:
    """Make every search answer of ``node_id`` wait ``seconds`` first (0: no more).

    Raises ``Unavailable`` if the node does not confirm (not running, or started without
    ``fault_injection``) and ``InvalidParameter`` for a negative delay or no cluster.
    """
    if not settings.nats_url:
        raise InvalidParameter("fault injection needs a cluster (SHARDRAG_NATS_URL)")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidParameter(f"a delay must be >= 0 seconds, not {seconds!r}")
    subject = fault_subject(settings.log_prefix, node_id)
    body = json.dumps({"delay_seconds": seconds}).encode()
    conn = NatsConnection(settings.nats_url, name="fault-injection", tls=nats_tls(settings))
    try:
        try:
            msg = conn.run(conn.client.request(subject, body, timeout=_CONFIRM_SECONDS))
        except Unavailable as exc:
            raise Unavailable(
                f"node {node_id} did not confirm the fault ({exc.message}); is it running "
                "with SHARDRAG_FAULT_INJECTION=true?",
                node_id=node_id,
            ) from exc
    finally:
        conn.close()
    reply: Any = json.loads(msg.data)
    if not (isinstance(reply, dict) and reply.get("ok") and reply.get("node_id") == node_id):
        raise Unavailable(f"node {node_id} refused the fault: {reply!r}", node_id=node_id)
