"""The processes of a local cluster: started detached, recorded by pid and start time, stopped
in order (a pid is only signalled through a pidfd while its start time still matches).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shardrag.errors import Conflict, Unavailable

Role = Literal["nats", "node", "worker", "api", "redis", "postgres"]


#: ``down`` stops the roles in this order: nothing is left writing to a server already gone.
STOP_ORDER: tuple[Role, ...] = ("api", "worker", "node", "nats", "redis", "postgres")


# The signal that stops a role cleanly when it is not SIGTERM. PostgreSQL takes SIGTERM as a
# "smart" shutdown, which waits for every client to disconnect (the pools never do); SIGINT is
# its "fast" shutdown: sessions end, a checkpoint is written, nothing committed is lost.
_STOP_SIGNAL: dict[Role, int] = {"postgres": signal.SIGINT}


# Seconds a process may take to go after SIGKILL before it counts as unkillable.
_KILL_WAIT = 5.0


# Lines of a log quoted in the error when its process died during start-up.
_LOG_TAIL_LINES = 5


# Children spawned by this process, kept so that their exit status can be collected: a child
# that exited stays a zombie (its /proc entry and start time intact) until it is reaped.
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


@dataclass
class ProcessRecord:
    """One process of a cluster as cluster.json records it."""

    name: str
    role: Role
    pid: int
    #: Field 22 of /proc/<pid>/stat: with the pid, names one process for good.
    start_time: int
    argv: list[str]
    #: The variables it gets over the environment of whoever (re)starts it.
    env_overrides: dict[str, str]
    log: Path
    data_dir: Path | None
    #: False once ``down`` stopped it (or ``up`` gave up).
    running: bool = True

    def alive(self) -> bool:
        """Recorded as running, and its pid is still this very process (not a reused pid)."""
        return self.running and process_start_time(self.pid) == self.start_time

    def signal(self, sig: int) -> bool:
        """Send ``sig`` if the process is still the one recorded; whether it was sent."""
        try:
            # The pidfd pins the process: if the start time matches after it is opened, the
            # signal cannot reach another process that got the pid in between.
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return False
        try:
            if not self.alive():
                return False
            signal.pidfd_send_signal(pidfd, sig)
            return True
        except ProcessLookupError:
            return False
        finally:
            os.close(pidfd)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object cluster.json holds."""
        return {
            "name": self.name,
            "role": self.role,
            "pid": self.pid,
            "start_time": self.start_time,
            "argv": self.argv,
            "env_overrides": self.env_overrides,
            "log": str(self.log),
            "data_dir": None if self.data_dir is None else str(self.data_dir),
            "running": self.running,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ProcessRecord:
        """The inverse of ``to_dict``."""
        return cls(
            name=value["name"],
            role=value["role"],
            pid=int(value["pid"]),
            start_time=int(value["start_time"]),
            argv=list(value["argv"]),
            env_overrides=dict(value["env_overrides"]),
            log=Path(value["log"]),
            data_dir=None if value["data_dir"] is None else Path(value["data_dir"]),
            running=bool(value["running"]),
        )


@dataclass(frozen=True)
class StopOutcome:
    """What stopping one process took: ``stopped`` (SIGTERM), ``killed`` (SIGKILL), or
    ``not running`` (it had exited, or its pid now names another process: left alone)."""

    name: str
    role: Role
    pid: int
    outcome: Literal["stopped", "killed", "not running"]


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, or None if no live process has that pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the fields after it do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        child = _SPAWNED.pop(pid, None)
        if child is not None:
            child.poll()
        return None
    return int(fields[19])


def _spawn(
    argv: list[str], env_overrides: Mapping[str, str], log: Path, cwd: Path
) -> tuple[int, int]:
    """Start ``argv`` detached with its output appended to ``log``; its pid and start time."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log.open("ab") as out:
            child = subprocess.Popen(
                argv,
                env={**os.environ, **env_overrides},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
            )
    except OSError as exc:
        raise Unavailable(f"cannot start {argv[0]}: {exc}") from exc
    _SPAWNED[child.pid] = child
    start_time = process_start_time(child.pid)
    if start_time is None:
        raise Unavailable(f"{' '.join(argv)} exited at once; see {log}", log=str(log))
    return child.pid, start_time


def start_process(
    dir: Path,
    name: str,
    role: Role,
    argv: list[str],
    env_overrides: Mapping[str, str],
    data_dir: Path | None = None,
) -> ProcessRecord:
    """Start one process of the cluster in ``dir``, logging to ``<dir>/logs/<name>.log``."""
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    log = dir / "logs" / f"{name}.log"
    pid, start_time = _spawn(argv, env_overrides, log, dir)
    return ProcessRecord(name, role, pid, start_time, argv, dict(env_overrides), log, data_dir)


def stop_processes(records: Iterable[ProcessRecord], grace_seconds: float) -> list[StopOutcome]:
    """SIGTERM the processes still running (PostgreSQL: SIGINT, its fast shutdown), SIGKILL
    those left after ``grace_seconds``.

    Only a process whose pid still has its recorded start time is signalled. Every record is
    marked not running afterwards.
    """
    records = list(records)
    signalled = [r for r in records if r.signal(_STOP_SIGNAL.get(r.role, signal.SIGTERM))]
    _wait_gone(signalled, grace_seconds)
    killed = [r for r in signalled if r.signal(signal.SIGKILL)]
    _wait_gone(killed, _KILL_WAIT)
    outcomes = []
    for record in records:
        if record in killed:
            outcome: Literal["stopped", "killed", "not running"] = "killed"
        elif record in signalled:
            outcome = "stopped"
        else:
            outcome = "not running"
        outcomes.append(StopOutcome(record.name, record.role, record.pid, outcome))
        record.running = False
    return outcomes


def stop_in_order(processes: list[ProcessRecord], grace_seconds: float) -> list[StopOutcome]:
    """Stop the api processes, then the workers, the nodes, NATS, Redis and PostgreSQL
    (``STOP_ORDER``)."""
    outcomes: list[StopOutcome] = []
    for role in STOP_ORDER:
        outcomes += stop_processes([p for p in processes if p.role == role], grace_seconds)
    return outcomes


def _wait_gone(records: list[ProcessRecord], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(r.alive() for r in records) and time.monotonic() < deadline:
        time.sleep(0.1)


def _fail_if_exited(records: Iterable[ProcessRecord]) -> None:
    """Raise, quoting its log, if a process that should be running has exited."""
    for record in records:
        if not record.alive():
            raise Unavailable(
                f"{record.name} exited during start-up; see {record.log}:\n{_tail(record.log)}",
                process=record.name,
                log=str(record.log),
            )


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _check_port_free(port: int) -> None:
    with socket.socket() as s:
        # As a server binds: SO_REUSEADDR ignores old connections, not a listener.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise Conflict(f"port {port} is in use ({exc.strerror})", port=port) from exc
