"""Exclusive ownership of a data dir by one process."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from shardrag.errors import DataDirLocked


class DataDirLock:
    """An ``flock`` on ``<data_dir>/LOCK`` naming its holder.

    The kernel drops the lock when the holder exits, however it exits, so a killed process
    never leaves a stale lock behind; a second opener learns who holds the directory.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "LOCK"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            os.close(self._fd)
            raise DataDirLocked(
                f"data dir {data_dir} is in use by pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} ({holder.get('command', '?')}); "
                "stop that process or use another --data-dir",
                data_dir=str(data_dir),
                holder=holder,
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(
            self._fd,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": " ".join(sys.argv)[:200],
                    "since": time.time(),
                }
            ).encode(),
        )

    def _holder(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as f:
                holder: dict[str, Any] = json.load(f)
                return holder
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        """Give the data dir up."""
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
