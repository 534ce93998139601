"""The indexing backlog: accepted versions waiting to be embedded and committed.

An asynchronous write (``wait=False``) is parsed and chunked in the caller's thread, so bad
input is refused at once, and then queued here. One background thread drains the queue,
embedding everything waiting in shared batches (many small uploads cost one model pass), and
commits each version in the order it was accepted. Callers can wait for one version, or for
every version of a tenant accepted so far (the read concerns of the API).

Until the durable log (ARCHITECTURE.md §2) replaces it, the backlog lives in memory: a
version still queued when the process dies is found ``pending`` on the next open and marked
``failed`` with code ``interrupted``; its previous version stays live.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from shardrag.errors import ReadConcernTimeout, ShardragError
from shardrag.pipeline.writer import DOCUMENTS_PER_BATCH, DocumentWriter, VersionBuild

log = logging.getLogger(__name__)


class IndexBacklog:
    """A queue of accepted versions and the thread that makes them live (or failed)."""

    def __init__(self, writer: DocumentWriter, batch_size: int = DOCUMENTS_PER_BATCH) -> None:
        self.writer = writer
        self.batch_size = batch_size
        self._queue: collections.deque[VersionBuild] = collections.deque()
        self._changed = threading.Condition()
        # Versions accepted and not yet decided, per tenant (for strong reads and metrics).
        self._open: collections.Counter[str] = collections.Counter()
        self._accepting = True
        self._thread = threading.Thread(target=self._drain, name="index-backlog", daemon=True)
        self._thread.start()

    def submit(self, build: VersionBuild) -> None:
        """Queue an accepted build; it holds its document's lock until it is decided."""
        with self._changed:
            if self._accepting:
                self._queue.append(build)
                self._open[build.tenant] += 1
                self._changed.notify_all()
                return
        # Closing: the drain thread may be gone, so complete it here rather than drop it.
        self.writer.finish([build])

    def depth(self) -> int:
        """Versions accepted and not yet live or failed."""
        with self._changed:
            return sum(self._open.values())

    def wait_for_tenant(self, tenant: str, timeout: float) -> None:
        """Return once every version of ``tenant`` accepted before the call is decided.

        Versions accepted while waiting extend the wait; under a steady stream of writes this
        can last until ``timeout``, which raises ``ReadConcernTimeout``.
        """
        self._wait(lambda: self._open[tenant] == 0, timeout, f"writes of tenant {tenant!r}")

    def wait_until(self, decided: Callable[[], bool], timeout: float) -> None:
        """Return once ``decided()`` holds, re-checked whenever a batch completes."""
        self._wait(decided, timeout, "the write of the token")

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ReadConcernTimeout(
                        f"waited {timeout:g} s for {what} to be applied",
                        timeout_seconds=timeout,
                    )
                self._changed.wait(remaining)

    def _drain(self) -> None:
        while True:
            with self._changed:
                while not self._queue and self._accepting:
                    self._changed.wait()
                if not self._queue:
                    return
                batch = [
                    self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))
                ]
            try:
                outcomes = self.writer.finish(batch)
            except Exception:  # finish records per-build failures; this is a bug
                log.exception("the index backlog failed a batch of %d", len(batch))
                outcomes = []
            for build, outcome in zip(batch, outcomes, strict=False):
                if isinstance(outcome, ShardragError):
                    log.warning(
                        "%s/%s v%s failed: %s",
                        build.tenant,
                        build.upload.doc_id,
                        build.version,
                        outcome.message,
                    )
            with self._changed:
                for build in batch:
                    self._open[build.tenant] -= 1
                    if self._open[build.tenant] <= 0:
                        del self._open[build.tenant]
                self._changed.notify_all()

    def close(self) -> None:
        """Stop accepting, finish every queued version, stop the thread."""
        with self._changed:
            self._accepting = False
            self._changed.notify_all()
        self._thread.join()
