"""A log whose events keep no document text in the clear (with a master key, ``sealing.py``).

Every event is a JSON object naming its version (``ref``, with the tenant). What routes it
stays readable — the version, the op's kind, its part and count — and everything else (file
names, titles, metadata, chunk texts and their vectors) is sealed under the tenant's data key
as one field, ``sealed``. Ops that carry nothing else (commits, deletes, drops) are left as
they are. Readers get the events back whole; an event whose tenant's key is gone (the tenant
was dropped) is passed over by consumers (acknowledged) and read bare by ordered readers, so
every position still advances.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

from shardrag.log.base import Consumer, DeadLetter, Log, LogMessage
from shardrag.sealing import Sealer

#: The fields of an event that stay in the clear.
ENVELOPE = ("ref", "kind", "part", "expected")
_PURPOSE = "log event"


def seal_event(sealer: Sealer, data: bytes) -> bytes:
    """``data`` with all but its envelope sealed under its tenant's key."""
    raw = _event(data)
    tenant = _tenant(raw)
    body = {k: v for k, v in (raw or {}).items() if k not in ENVELOPE}
    if raw is None or tenant is None or not body:
        return data
    sealed = sealer.seal(tenant, json.dumps(body, separators=(",", ":")).encode(), _PURPOSE)
    envelope = {k: raw[k] for k in ENVELOPE if k in raw}
    return _dump({**envelope, "sealed": base64.b64encode(sealed).decode()})


def unseal_event(sealer: Sealer, data: bytes) -> tuple[bytes, bool]:
    """The event whole, and True; or its envelope alone, and False, when its tenant's key
    is gone."""
    raw = _event(data)
    tenant = _tenant(raw)
    if raw is None or tenant is None or "sealed" not in raw:
        return data, True
    envelope = {k: v for k, v in raw.items() if k != "sealed"}
    opened = sealer.unseal(tenant, base64.b64decode(raw["sealed"]), _PURPOSE)
    if opened is None:
        return _dump(envelope), False
    return _dump({**envelope, **json.loads(opened)}), True


def _event(data: bytes) -> dict[str, Any] | None:
    try:
        raw = json.loads(data)
    except ValueError:
        return None
    return raw if isinstance(raw, dict) else None


def _tenant(raw: dict[str, Any] | None) -> str | None:
    ref = (raw or {}).get("ref")
    tenant = ref.get("tenant") if isinstance(ref, dict) else None
    return tenant if isinstance(tenant, str) and tenant else None


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class SealedConsumer:
    """A consumer of a ``SealedLog``: delivers events whole, passes over a dropped tenant's."""

    def __init__(self, inner: Consumer, sealer: Sealer) -> None:
        self.inner = inner
        self.sealer = sealer
        self.name = inner.name

    def fetch(self, batch: int = 16, timeout: float = 1.0) -> list[LogMessage]:
        """Up to ``batch`` messages, waiting up to ``timeout`` seconds for the first."""
        delivered = []
        for message in self.inner.fetch(batch, timeout):
            data, whole = unseal_event(self.sealer, message.data)
            if whole:
                delivered.append(dataclasses.replace(message, data=data))
            else:
                self.inner.ack(message)  # its tenant is gone: nothing left to do
        return delivered

    def ack(self, message: LogMessage) -> None:
        """The message is done."""
        self.inner.ack(message)

    def nak(self, message: LogMessage, error: str, delay: float = 0.0) -> bool:
        """Retry it later, or dead-letter it (the log keeps it sealed)."""
        return self.inner.nak(message, error, delay)


class SealedLog:
    """A ``Log`` that seals what its events say of documents (see the module)."""

    def __init__(self, inner: Log, sealer: Sealer) -> None:
        self.inner = inner
        self.sealer = sealer

    def append(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        message_id: str | None = None,
    ) -> int:
        """Append the event sealed; its sequence."""
        return self.inner.append(subject, seal_event(self.sealer, data), headers, message_id)

    def consumer(
        self, name: str, subjects: str, max_attempts: int = 5, ack_wait: float = 30.0
    ) -> Consumer:
        """The durable consumer ``name``, delivering events whole."""
        return SealedConsumer(
            self.inner.consumer(name, subjects, max_attempts, ack_wait), self.sealer
        )

    def read(
        self, subjects: str, after: int, limit: int = 64, timeout: float = 1.0
    ) -> list[LogMessage]:
        """Messages after ``after`` in order, whole (a dropped tenant's: their envelope)."""
        return [
            dataclasses.replace(m, data=unseal_event(self.sealer, m.data)[0])
            for m in self.inner.read(subjects, after, limit, timeout)
        ]

    def last_sequence(self, subject: str, timeout: float | None = None) -> int:
        """The newest sequence on ``subject``."""
        return self.inner.last_sequence(subject, timeout)

    def bury(self, consumer: str, message: LogMessage, error: str) -> None:
        """Record a dead letter, sealed again."""
        sealed = dataclasses.replace(message, data=seal_event(self.sealer, message.data))
        self.inner.bury(consumer, sealed, error)

    def dead_letters(self, consumer: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, whole where their tenant's key still exists."""
        return [
            dataclasses.replace(d, data=unseal_event(self.sealer, d.data)[0])
            for d in self.inner.dead_letters(consumer, limit)
        ]

    def redrive(self, dead_letter_id: int) -> int:
        """Append a dead letter's (sealed) message again."""
        return self.inner.redrive(dead_letter_id)

    def close(self) -> None:
        """Close the log under it."""
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # What only one kind of log has (a NATS log's ``drop``) is the log's own business.
        return getattr(self.inner, name)
