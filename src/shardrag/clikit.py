"""What every ``shardrag`` command shares: its consoles, error reporting and JSON output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from shardrag.errors import InvalidInput, ShardragError

console = Console()
err_console = Console(stderr=True)

#: ``--json`` of every command, shown as a flag (metavar "": no ``<bool>`` in the help).
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.", metavar="")]


@contextmanager
def errors_reported(as_json: bool) -> Iterator[None]:
    """Turn a ShardragError into its code and message on stderr (or JSON) and an exit code:
    2 for bad input, 1 for anything else."""
    try:
        yield
    except ShardragError as exc:
        if as_json:
            print(json.dumps({"error": exc.to_dict()}))
        else:
            err_console.print(f"[bold red]error[/] {escape(f'[{exc.code}] {exc.message}')}")
        raise typer.Exit(2 if isinstance(exc, InvalidInput) else 1) from None


def print_json(value: Any, compact: bool = False) -> None:
    """``value`` as indented JSON on stdout (``compact``: on one line, flushed: a stream's
    event)."""
    if compact:
        print(json.dumps(value, ensure_ascii=False), flush=True)
    else:
        print(json.dumps(value, indent=2, ensure_ascii=False))
