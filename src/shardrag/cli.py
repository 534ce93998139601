"""The ``shardrag`` command line (typer + rich).

Every command takes ``--data-dir`` (or ``SHARDRAG_DATA_DIR``) and ``--json``. Errors print the
stable error code and message (as ``{"error": {...}}`` with ``--json``) and exit with 2 for bad
input, 1 for anything else; ``ingest`` exits 1 when any file failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shardrag import acl as access
from shardrag.client import ShardragClient
from shardrag.clikit import JsonFlag, console, err_console, errors_reported, print_json
from shardrag.cluster.commands import cluster_app
from shardrag.context import AnswerResult, AnswerStream, Citation, citations_in
from shardrag.embed.bundled import BundledEmbedder
from shardrag.embedded import Shardrag
from shardrag.errors import InvalidParameter, ShardragError
from shardrag.ingest import SUPPORTED_EXTENSIONS
from shardrag.models import DocumentInput, Hit, SearchMode, WriteResult
from shardrag.pipeline import DOCUMENTS_PER_BATCH

app = typer.Typer(
    name="shardrag",
    help="Multi-tenant retrieval-augmented generation over sharded Qdrant Edge shards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(cluster_app)
security_app = typer.Typer(
    name="security", help="Keys of encryption at rest.", no_args_is_help=True
)
app.add_typer(security_app)


def _print_version(value: bool) -> None:
    if value:
        from shardrag import __version__

        console.print(f"shardrag {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Multi-tenant retrieval-augmented generation over sharded Qdrant Edge shards."""


DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir", envvar="SHARDRAG_DATA_DIR", help="Data directory (SHARDRAG_DATA_DIR)."
    ),
]
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="Tenant id.")]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", envvar="SHARDRAG_URL", help="Use a running server (SHARDRAG_URL) instead."
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="SHARDRAG_API_KEY", help="API key for --url."),
]
GroupsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--groups",
        help="Read only documents of these access groups (and public ones); repeatable or "
        "comma-separated. Narrows the key's groups over --url.",
    ),
]
ModeOpt = Annotated[
    SearchMode, typer.Option("--mode", help="How passages are searched: hybrid, dense or keyword.")
]
FiltersOpt = Annotated[
    list[str] | None, typer.Option("--filter", help="Metadata key=value (repeatable).")
]
# What a command works against: the data dir in this process, or a server.
Backend = Shardrag | ShardragClient
DEFAULT_DATA_DIR = Path("./shardrag-data")

#: Bytes read into one ``ingest`` batch at most (a batch also stops at DOCUMENTS_PER_BATCH).
INGEST_BATCH_BYTES = 16 * 1024 * 1024


def _open(data_dir: Path, reading: bool = False) -> Shardrag:
    # A command that only reads does not run the write pipeline (which would keep the command
    # waiting for its stage threads to stop); the next writer picks up anything pending.
    return Shardrag.open(data_dir, stages="none") if reading else Shardrag.open(data_dir)


@contextmanager
def _backend(
    data_dir: Path, url: str | None, api_key: str | None, reading: bool = False
) -> Iterator[Backend]:
    """The server at ``url`` when given (with ``api_key``), else the data dir."""
    if url is None:
        with _open(data_dir, reading) as rag:
            yield rag
        return
    if not api_key:
        raise InvalidParameter("--url needs --api-key (or SHARDRAG_API_KEY)")
    # An https:// server of a private CA, or one requiring client certificates (mutual TLS).
    with ShardragClient(
        url,
        api_key,
        ca_file=os.environ.get("SHARDRAG_CA_FILE"),
        client_cert=os.environ.get("SHARDRAG_CLIENT_CERT"),
        client_key=os.environ.get("SHARDRAG_CLIENT_KEY"),
    ) as client:
        yield client


def _load_model(rag: Backend, quiet: bool) -> None:
    """Load the local embedding model, with a spinner if that takes more than half a second."""
    if not isinstance(rag, Shardrag) or not isinstance(rag.embedder, BundledEmbedder):
        return
    status = console.status("loading the embedding model ...", spinner="dots")
    lock = threading.Lock()
    loaded = False

    def show() -> None:
        with lock:
            if not loaded:
                status.start()

    timer = threading.Timer(0.5, show)
    if not quiet:
        timer.start()
    try:
        rag.embedder.encoder()
    finally:
        timer.cancel()
        with lock:
            loaded = True
            status.stop()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


# -- ingest ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    """A file to ingest and the document id it gets."""

    path: Path
    doc_id: str


def collect_files(
    paths: list[Path], root: Path | None = None, prefix: str = "", doc_id: str | None = None
) -> list[SourceFile]:
    """The files to ingest and their document ids (docs/ingestion.md, "Document ids").

    The id of a file is ``prefix`` + its path relative to ``root``; without ``root``, relative
    to the folder named on the command line (a file named directly: its name, as the console
    names an upload). ``doc_id`` names the one file given. Hidden files and unsupported
    extensions under folders are skipped.
    """
    found: list[SourceFile] = []
    base = root.resolve() if root is not None else None
    for path in paths:
        if path.is_dir():
            files = [
                f
                for f in sorted(path.rglob("*"))
                if f.is_file()
                and not any(p.startswith(".") for p in f.relative_to(path).parts)
                and f.suffix.lower() in SUPPORTED_EXTENSIONS
            ]
            found += [SourceFile(f, prefix + _relative(f, base or path.resolve())) for f in files]
        elif path.is_file():
            name = _relative(path, base) if base is not None else path.name
            found.append(SourceFile(path, prefix + name))
        else:
            raise InvalidParameter(f"no such file or folder: {path}", path=str(path))
    if doc_id is not None:
        if len(found) != 1:
            raise InvalidParameter(f"--id names one file; {len(found)} were given")
        found = [SourceFile(found[0].path, doc_id)]
    return found


def prune_documents(rag: Backend, tenant: str, prefix: str, keep: set[str]) -> list[dict[str, Any]]:
    """Delete the tenant's documents whose id starts with ``prefix`` and is not in ``keep``;
    an outcome per deletion."""
    gone: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = rag.list_documents(tenant, limit=1000, after=after)
        for info in page:
            if info.doc_id.startswith(prefix) and info.doc_id not in keep:
                try:
                    result = rag.delete_document(tenant, info.doc_id)
                except ShardragError as exc:
                    gone.append(
                        {"doc_id": info.doc_id, "outcome": "failed", "error": exc.to_dict()}
                    )
                else:
                    gone.append({"doc_id": info.doc_id, "outcome": "pruned", **result.to_dict()})
        if len(page) < 1000:
            return gone
        after = page[-1].doc_id


def _relative(file: Path, root: Path) -> str:
    """``file``'s path under ``root`` with / separators; InvalidParameter outside it."""
    try:
        return file.resolve().relative_to(root).as_posix()
    except ValueError:
        raise InvalidParameter(f"{file} is not under --root {root}", path=str(file)) from None


def _batches(files: list[SourceFile]) -> Iterator[list[SourceFile]]:
    batch: list[SourceFile] = []
    size = 0
    for file in files:
        file_size = file.path.stat().st_size
        if batch and (len(batch) >= DOCUMENTS_PER_BATCH or size + file_size > INGEST_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(file)
        size += file_size
    if batch:
        yield batch


def _outcome(file: SourceFile, result: WriteResult | ShardragError) -> dict[str, Any]:
    if isinstance(result, ShardragError):
        return {
            "doc_id": file.doc_id,
            "path": str(file.path),
            "outcome": "failed",
            "error": result.to_dict(),
        }
    kind = "unchanged" if result.unchanged else ("added" if result.version == 1 else "updated")
    return {"doc_id": file.doc_id, "path": str(file.path), "outcome": kind, **result.to_dict()}


def ingest_files(
    rag: Backend,
    tenant: str,
    files: list[SourceFile],
    progress: Progress | None,
    acl: tuple[str, ...] = (),
    metadata: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Ingest files in batches, with ``metadata``, readable by the access groups ``acl``
    (none: every key); one outcome per file, in order."""
    outcomes: list[dict[str, Any]] = []
    task = progress.add_task("ingesting", total=len(files)) if progress else None
    for batch in _batches(files):
        documents = [
            DocumentInput(f.doc_id, f.path.read_bytes(), f.path.name, dict(metadata or {}), acl=acl)
            for f in batch
        ]
        for file, result in zip(batch, rag.put_documents(tenant, documents), strict=True):
            outcomes.append(_outcome(file, result))
        if progress and task is not None:
            progress.advance(task, len(batch))
    return outcomes


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to ingest.")],
    tenant: TenantOpt,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonFlag = False,
    acl: Annotated[
        list[str] | None,
        typer.Option("--acl", help="Access group that may read the files (repeatable)."),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Ids are paths relative to this folder (files under it)."),
    ] = None,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Put before every id (e.g. 'handbook/').")
    ] = "",
    doc_id: Annotated[
        str | None, typer.Option("--id", help="The id of the one file given.")
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option("--metadata", help="key=value given to every file (repeatable)."),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Delete the tenant's documents under --prefix (all of them without one) "
            "that are not among these files: a folder mirrored, files removed since.",
        ),
    ] = False,
) -> None:
    """Ingest files and folders (txt, md, html, pdf): a new version of each changed file.

    Document ids: --prefix + the path relative to --root, else to the folder given; a file
    given directly is named by its file name (as the web console names an upload) unless
    --root or --id says otherwise (docs/ingestion.md).
    """
    with errors_reported(as_json):
        files = collect_files(paths, root, prefix, doc_id)
        groups = access.groups(_names(acl), "acl")
        meta = parse_filters(metadata or [])
        with _backend(data_dir, url, api_key) as rag:
            if as_json:
                outcomes = ingest_files(rag, tenant, files, None, groups, meta)
            else:
                with _progress() as progress:
                    outcomes = ingest_files(rag, tenant, files, progress, groups, meta)
            if prune:
                outcomes += prune_documents(rag, tenant, prefix, {f.doc_id for f in files})
    failed = [o for o in outcomes if o["outcome"] == "failed"]
    if as_json:
        print_json({"files": outcomes, "failed": len(failed)})
    else:
        table = Table("document", "outcome", "version", "chunks", "detail")
        for o in outcomes:
            style = {"failed": "red", "unchanged": "dim", "pruned": "yellow"}.get(
                o["outcome"], "green"
            )
            if o["outcome"] == "failed":
                detail = escape(f"[{o['error']['code']}] {o['error']['message']}")
            elif o["outcome"] == "pruned":
                detail = "its file is gone: deleted"
            else:
                detail = f"{o['embedded_chunks']} embedded, {o['reused_vectors']} reused"
            table.add_row(
                o["doc_id"],
                f"[{style}]{o['outcome']}[/]",
                str(o.get("version", "")),
                str(o.get("chunk_count", "")),
                detail,
            )
        console.print(table)
        console.print(f"{len(outcomes) - len(failed)} ok, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


# -- query ----------------------------------------------------------------------------------


def _names(values: list[str] | None) -> list[str]:
    """Group names from repeated and comma-separated options."""
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def _reading_as(groups: list[str] | None) -> list[str] | None:
    """The access groups a read narrows to (``--groups``); None: the key's own."""
    return None if groups is None else _names(groups)


def parse_filters(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; a repeated key means any of its values; numbers stay numbers."""
    filters: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidParameter(f"filter {item!r} is not key=value")
        value: Any = int(raw) if raw.lstrip("-").isdigit() else raw
        if key in filters:
            previous = filters[key]
            filters[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            filters[key] = value
    return filters


def print_hits(hits: list[Hit]) -> None:
    """Hits as numbered passages with their sources."""
    if not hits:
        console.print("[dim]no results[/]")
    for rank, hit in enumerate(hits, 1):
        source = f"{hit.doc_id} v{hit.version} #{hit.chunk_index}"
        if hit.page:
            source += f" p.{hit.page}"
        console.print(f"[bold cyan][{rank}][/] [bold]{source}[/]  [dim]score {hit.score:.4f}[/]")
        if hit.context:
            console.print(f"    [italic]{hit.context}[/]")
        text = hit.text if len(hit.text) <= 600 else hit.text[:600] + "…"
        console.print(f"    {text}\n", highlight=False)


@app.command()
def query(
    text: Annotated[str, typer.Argument(help="The question or keywords.")],
    tenant: TenantOpt,
    k: Annotated[int, typer.Option("--k", help="Number of passages.")] = 10,
    mode: ModeOpt = SearchMode.HYBRID,
    filters: FiltersOpt = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonFlag = False,
    groups: GroupsOpt = None,
) -> None:
    """Search a tenant's documents."""
    with errors_reported(as_json), _backend(data_dir, url, api_key, reading=True) as rag:
        _load_model(rag, quiet=as_json)
        hits = rag.search(
            tenant,
            text,
            k=k,
            mode=mode,
            filters=parse_filters(filters or []),
            groups=_reading_as(groups),
        )
    if as_json:
        print_json({"hits": [h.to_dict() for h in hits]})
    else:
        print_hits(hits)


def print_answer(result: AnswerResult) -> None:
    """The answer, then its numbered sources."""
    console.print(f"[bold]A:[/] {escape(result.answer.text)}", highlight=False)
    print_sources(result.answer.generated, result.answer.citations)


def print_sources(generated: bool, citations: list[Citation]) -> None:
    """What kind of answer it was, then the sources it cites."""
    if not generated:
        # No language model configured (SHARDRAG_LLM_URL): say what the answer is.
        console.print(
            "[dim](extractive: sentences quoted from the passages; set SHARDRAG_LLM_URL for "
            "a generated answer)[/]"
        )
    console.print()
    for citation in citations:
        where = f", p. {citation.page}" if citation.page else ""
        console.print(
            f"  [bold cyan]{citation.marker}[/] {citation.doc_id} v{citation.version}{where}"
        )


def print_stream(stream: AnswerStream, as_json: bool) -> None:
    """An answer as it is written: pieces as they come, then its sources. With ``as_json``,
    one JSON object a line: the context, each piece, then the answer with its citations."""
    if as_json:
        print_json(
            {
                "event": "context",
                "generated": stream.generated,
                "hits": [h.to_dict() for h in stream.hits],
                "passages": [dataclasses.asdict(p) for p in stream.context.passages],
            },
            compact=True,
        )
    else:
        console.print("[bold]A:[/] ", end="")
    text: list[str] = []
    for piece in stream.pieces:
        text.append(piece)
        if as_json:
            print_json({"event": "delta", "text": piece}, compact=True)
        else:
            console.out(piece, end="", highlight=False)
    answer = "".join(text).strip()
    cited = citations_in(answer, stream.context)
    if as_json:
        done = {"answer": answer, "generated": stream.generated}
        citations = [dataclasses.asdict(c) for c in cited]
        print_json({"event": "done", **done, "citations": citations}, compact=True)
        return
    console.print()
    print_sources(stream.generated, cited)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    tenant: TenantOpt,
    k: Annotated[int, typer.Option("--k", help="Passages searched.")] = 8,
    max_context_tokens: Annotated[
        int | None, typer.Option(help="Token budget of the passages in the prompt.")
    ] = None,
    mode: ModeOpt = SearchMode.HYBRID,
    filters: FiltersOpt = None,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Print the answer as it is written (with --json: one JSON event a line).",
        ),
    ] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonFlag = False,
    groups: GroupsOpt = None,
) -> None:
    """Answer a question from a tenant's documents, with numbered citations."""
    with errors_reported(as_json), _backend(data_dir, url, api_key, reading=True) as rag:
        _load_model(rag, quiet=as_json)
        how: dict[str, Any] = {
            "k": k,
            "max_context_tokens": max_context_tokens,
            "filters": parse_filters(filters or []),
            "groups": _reading_as(groups),
            "mode": mode,
        }
        if stream:
            print_stream(rag.answer_stream(tenant, question, **how), as_json)
            return
        result = rag.answer(tenant, question, **how)
    if as_json:
        print_json(result.to_dict())
    else:
        print_answer(result)


# -- documents ------------------------------------------------------------------------------


@app.command()
def delete(
    doc_id: Annotated[str, typer.Argument(help="Document id.")],
    tenant: TenantOpt,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Delete a document (every chunk of it)."""
    with errors_reported(as_json), _backend(data_dir, url, api_key) as rag:
        result = rag.delete_document(tenant, doc_id)
    if as_json:
        print_json(result.to_dict())
    else:
        console.print(f"deleted {doc_id} (tombstone version {result.version})")


@app.command()
def docs(
    tenant: TenantOpt,
    state: Annotated[str | None, typer.Option(help="pending, live, failed or deleted.")] = None,
    limit: Annotated[int, typer.Option(help="Page size.")] = 1000,
    after: Annotated[str | None, typer.Option(help="List ids after this one.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """List a tenant's documents with versions and states."""
    with errors_reported(as_json), _backend(data_dir, url, api_key) as rag:
        rows = [
            d.to_dict() for d in rag.list_documents(tenant, state=state, limit=limit, after=after)
        ]
    if as_json:
        print_json({"documents": rows})
        return
    table = Table("document", "version", "state", "chunks", "latest", "error")
    for row in rows:
        error = (
            escape(f"[{row['error']['code']}] {row['error']['message']}") if row["error"] else ""
        )
        table.add_row(
            row["doc_id"],
            str(row["version"]),
            row["state"],
            str(row["chunk_count"]),
            f"v{row['latest_version']} {row['latest_state']}",
            error,
        )
    console.print(table)


@app.command()
def tenants(data_dir: DataDir = DEFAULT_DATA_DIR, as_json: JsonFlag = False) -> None:
    """List the tenants of the data dir."""
    with errors_reported(as_json), _open(data_dir) as rag:
        records = rag.tenants()
    if as_json:
        print_json({"tenants": [{"tenant": r.tenant, "shard": r.shard_id} for r in records]})
        return
    table = Table("tenant", "shard")
    for r in records:
        table.add_row(r.tenant, str(r.shard_id))
    console.print(table)


# -- the write pipeline ---------------------------------------------------------------------


@app.command("dead-letters")
def dead_letters(
    tenant: TenantOpt,
    redrive: Annotated[
        int | None, typer.Option("--redrive", help="Put this dead letter back in its stream.")
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """List a tenant's dead letters (events a pipeline stage gave up on), or re-drive one."""
    with errors_reported(as_json), _backend(data_dir, url, api_key) as rag:
        if redrive is not None:
            dead = rag.redrive(tenant, redrive)
            if as_json:
                print_json(dead.to_dict())
            else:
                console.print(
                    f"re-drove dead letter {dead.dead_letter_id}: {dead.doc_id} "
                    f"v{dead.version} is pending again at the {dead.stage} stage"
                )
            return
        found = rag.dead_letters(tenant)
    if as_json:
        print_json({"dead_letters": [d.to_dict() for d in found]})
        return
    table = Table("id", "stage", "document", "version", "attempts", "error")
    for d in found:
        table.add_row(
            str(d.dead_letter_id),
            d.stage,
            d.doc_id,
            str(d.version),
            str(d.attempts),
            escape(d.error),
        )
    console.print(table)


@app.command()
def reconcile(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report, repair nothing.")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Compare the registry with the shards; repair orphaned vectors and phantom documents.

    With --url, the server does it (the root key).
    """
    with errors_reported(as_json), _backend(data_dir, url, api_key) as rag:
        found = rag.reconcile(dry_run)
    report = found.to_dict()
    if as_json:
        print_json(report)
        return
    verb = "would repair" if report["dry_run"] else "repaired"
    console.print(
        f"checked {report['versions_checked']} stored versions and "
        f"{report['documents_checked']} documents on shards {report['shards']} "
        f"in {report['seconds']} s; {verb} {report['repaired']}"
    )
    if report["repairs"]:
        table = Table("kind", "tenant", "document", "version", "shard", "points", "action")
        for r in report["repairs"]:
            table.add_row(
                r["kind"],
                r["tenant"],
                r["doc_id"],
                str(r["version"]),
                str(r["shard_id"]),
                str(r["points"]),
                r["action"],
            )
        console.print(table)


@security_app.command("rotate-master-key")
def rotate_master_key(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Re-wrap every data key under SHARDRAG_MASTER_KEY (the old key given as
    SHARDRAG_PREVIOUS_MASTER_KEY). With --url, the server does it (the root key).

    Rotate while serving: give every process the new key and the previous one, run this once,
    then drop the previous key. No document is encrypted again.
    """
    with errors_reported(as_json), _backend(data_dir, url, api_key) as rag:
        count = rag.rotate_master_key()
    if as_json:
        print_json({"rewrapped": count})
        return
    console.print(f"re-wrapped {count} data keys under the master key")


def _until_stopped(service: str) -> threading.Event:
    """JSON logs, traces (if the OTEL_* environment asks), and an event set by SIGTERM or
    Ctrl-C: a long-running process's set-up."""
    from shardrag.observability.logging import configure_json_logging
    from shardrag.observability.tracing import configure_tracing

    configure_json_logging()
    configure_tracing(service)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    return stopped


@app.command()
def worker(
    stage: Annotated[str, typer.Option("--stage", help="ingest, embed or index.")],
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", envvar="SHARDRAG_DATA_DIR", help="Data directory."),
    ] = None,
    nats_url: Annotated[
        str | None, typer.Option("--nats-url", envvar="SHARDRAG_NATS_URL", help="NATS server.")
    ] = None,
) -> None:
    """Run one stage of the write pipeline alone against NATS (until SIGTERM or Ctrl-C)."""
    from shardrag.config import Settings
    from shardrag.observability.tracing import worker_service
    from shardrag.worker import run_worker

    stopped = _until_stopped(worker_service(stage))
    with errors_reported(False):
        settings = Settings.load(data_dir=data_dir, nats_url=nats_url)
        err_console.print(f"shardrag worker: stage {stage} on {settings.nats_url}")
        run_worker(settings, stage, stopped)


@app.command()
def node(
    node_id: Annotated[str, typer.Option("--id", help="This index node's id (e.g. node-1).")],
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", envvar="SHARDRAG_DATA_DIR", help="Where its replicas live."),
    ] = None,
    nats_url: Annotated[
        str | None, typer.Option("--nats-url", envvar="SHARDRAG_NATS_URL", help="NATS servers.")
    ] = None,
) -> None:
    """Run an index node of a cluster: host its shard replicas, apply their logs, answer
    searches over NATS (until SIGTERM or Ctrl-C)."""
    from shardrag.cluster.node import run_node
    from shardrag.config import Settings
    from shardrag.observability.tracing import NODE_SERVICE

    stopped = _until_stopped(NODE_SERVICE)
    with errors_reported(False):
        settings = Settings.load(
            data_dir=data_dir, nats_url=nats_url, node_id=node_id, cluster=True
        )
        err_console.print(f"shardrag node {node_id} on {settings.nats_url}")
        run_node(settings, stopped)


# -- serve ----------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(envvar="SHARDRAG_HOST", help="Address to listen on.")
    ] = None,
    port: Annotated[int | None, typer.Option(envvar="SHARDRAG_PORT", help="Port.")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", envvar="SHARDRAG_DATA_DIR", help="Data directory."),
    ] = None,
    tls_cert: Annotated[
        str | None,
        typer.Option(envvar="SHARDRAG_TLS_CERT", help="Serve HTTPS with this certificate (PEM)."),
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option(envvar="SHARDRAG_TLS_KEY", help="The certificate's key (PEM).")
    ] = None,
    tls_client_ca: Annotated[
        str | None,
        typer.Option(
            envvar="SHARDRAG_TLS_CLIENT_CA",
            help="Require client certificates signed by this CA (mutual TLS).",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs) and the web console (/) over a data dir."""
    from shardrag.api import create_app
    from shardrag.api.server import serve as serve_app
    from shardrag.config import Settings
    from shardrag.observability.logging import configure_json_logging
    from shardrag.observability.tracing import API_SERVICE, configure_tracing, flush
    from shardrag.pipeline.reconcile import PeriodicReconciler

    with errors_reported(False):
        settings = Settings.load(
            data_dir=data_dir,
            host=host,
            port=port,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
        )
        configure_json_logging(settings.log_level.upper(), settings.access_log)
        configure_tracing(API_SERVICE)
        with Shardrag(settings) as rag:
            # Load the embedding model now: ready means a first query is not 5 s slow. An
            # embedding endpoint that is down is not fatal: queries report it.
            with contextlib.suppress(ShardragError):
                rag.embedder.embed_query("warm up")
            api = create_app(rag)
            if api.state.bootstrap_key:
                err_console.print(
                    "[bold yellow]root key[/] (shown once; keep it, or set SHARDRAG_ADMIN_KEY):"
                    f"\n{api.state.bootstrap_key}"
                )
            scheme = "https" if settings.tls_cert else "http"
            err_console.print(
                f"shardrag serving {settings.data_dir} on {scheme}://{settings.host}:{settings.port}"
                " (console at /, API docs at /docs); embedding with "
                f"{getattr(rag.embedder, 'runtime', rag.embedder.model_id)}"
            )
            # The reconciler needs the shards in this process: not in the distributed mode.
            interval = 0.0 if settings.cluster else settings.reconcile_interval_seconds
            reconciler = PeriodicReconciler(rag.reconcile, interval)
            reconciler.start()
            try:
                serve_app(api, settings)
            finally:
                reconciler.stop()
                flush()


# -- doctor ---------------------------------------------------------------------------------

_REPORTED_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


@app.command()
def doctor(as_json: JsonFlag = False) -> None:
    """What this machine runs: CPU features, the embedding runtime picked and its speed.

    Also builds the bundled model's graph into the model cache if it is not there yet (the
    Dockerfile runs it at image build time for that reason).
    """
    import importlib.util
    import platform
    import time

    from shardrag.config import Settings
    from shardrag.embed.bundled import load_encoder
    from shardrag.embed.encoders import OnnxEncoder
    from shardrag.embed.runtime import cpu_features

    with errors_reported(as_json):
        settings = Settings.load()
        features = cpu_features()
        encoder = load_encoder(settings.embed_runtime, settings.model_cache_dir)
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            encoder.encode(["how do shards fail over?"], single_thread=True)
            timings.append(time.perf_counter() - started)
        report: dict[str, Any] = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_flags": [f for f in _REPORTED_CPU_FLAGS if f in features],
            "embed_runtime_setting": settings.embed_runtime,
            "embed_runtime": encoder.runtime,
            "model_load_seconds": round(encoder.load_seconds, 3),
            "query_embed_ms": round(sorted(timings)[len(timings) // 2] * 1000, 2),
            "torch_installed": importlib.util.find_spec("torch") is not None,
        }
        if isinstance(encoder, OnnxEncoder):
            report["graph"] = str(encoder.graph.path)
            report["graph_built_now"] = encoder.graph.built
    if as_json:
        print_json(report)
        return
    table = Table(show_header=False, box=None)
    for key, value in report.items():
        shown = ", ".join(value) if isinstance(value, list) else str(value)
        table.add_row(f"[bold]{key}[/]", shown)
    console.print(table)


# -- eval -----------------------------------------------------------------------------------


@app.command("eval")
def evaluate(
    dataset_dir: Annotated[
        Path, typer.Argument(help="BEIR dataset: corpus.jsonl, queries.jsonl, qrels/.")
    ],
    mode: Annotated[SearchMode, typer.Option("--mode", help="Mode reported in --json.")] = (
        SearchMode.HYBRID
    ),
    split: Annotated[str, typer.Option(help="qrels split.")] = "test",
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", envvar="SHARDRAG_DATA_DIR", help="Keep the index here."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """nDCG@10 and recall@100 of every mode on a BEIR dataset, ingested into a fresh tenant."""
    from shardrag.evaluation.runner import run_evaluation

    with errors_reported(as_json):
        workdir = Path(tempfile.mkdtemp(prefix="shardrag-eval-")) if data_dir is None else None
        try:
            with Shardrag.open(data_dir or workdir) as rag:
                if as_json:
                    report = run_evaluation(rag, dataset_dir, split, None)
                else:
                    with _progress() as progress:
                        report = run_evaluation(rag, dataset_dir, split, progress)
        finally:
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
    chosen = report.modes[mode.value]
    if as_json:
        print_json(
            {
                "mode": mode.value,
                "ndcg@10": chosen.ndcg_at_10,
                "recall@100": chosen.recall_at_100,
                "modes": {
                    m: {"ndcg@10": s.ndcg_at_10, "recall@100": s.recall_at_100}
                    for m, s in report.modes.items()
                },
                "documents": report.documents,
                "refused": report.refused,
                "queries": report.queries,
                "tenant": report.tenant,
                "ingest_seconds": report.ingest_seconds,
            }
        )
        return
    table = Table(
        "mode", "nDCG@10", "recall@100", title=f"{dataset_dir.name}: {report.queries} queries"
    )
    for m, s in report.modes.items():
        table.add_row(m, f"{s.ndcg_at_10:.4f}", f"{s.recall_at_100:.4f}")
    console.print(table)
    console.print(f"{report.documents} documents ingested in {report.ingest_seconds:.1f}s")
    if report.refused:
        refused = ", ".join(f"{n} {code}" for code, n in sorted(report.refused.items()))
        console.print(f"[yellow]{sum(report.refused.values())} documents refused[/]: {refused}")


# -- demo -----------------------------------------------------------------------------------


@app.command()
def demo(
    question: Annotated[str | None, typer.Argument(help="Question to ask.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    k: Annotated[int, typer.Option("--k")] = 3,
    as_json: JsonFlag = False,
) -> None:
    """Ingest the bundled sample corpus, ask a question, print the top passages and sources."""
    from shardrag.demo import CORPUS_DIR, DEMO_QUESTION

    question = question or DEMO_QUESTION
    with errors_reported(as_json), _open(data_dir) as rag:
        files = collect_files([CORPUS_DIR])
        if as_json:
            outcomes = ingest_files(rag, "demo", files, None)
        else:
            with _progress() as progress:
                outcomes = ingest_files(rag, "demo", files, progress)
        hits = rag.search("demo", question, k=k)
        answer = rag.answer("demo", question)
    if as_json:
        print_json(
            {
                "ingested": outcomes,
                "question": question,
                "answer": answer.to_dict(),
                "hits": [h.to_dict() for h in hits],
            }
        )
        return
    console.print(f"\n[bold]Q:[/] {question}\n")
    print_answer(answer)
    console.print("\n[bold]Top passages[/]\n")
    print_hits(hits)
    console.print("[bold]Sources:[/] " + ", ".join(dict.fromkeys(h.doc_id for h in hits)))


def main() -> None:
    """Entry point of the ``shardrag`` script."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "--json" not in sys.argv[1:]:
        app(prog_name="shardrag")
        sys.exit(0)
    # Under --json a usage error is JSON too, on stdout, for the program that reads it.
    try:  # typer >= 0.20 carries its own click
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover - older typer on click
        from click.exceptions import UsageError  # type: ignore[assignment]

    try:
        result = app(prog_name="shardrag", standalone_mode=False)
    except UsageError as exc:
        error = {"code": "usage_error", "message": exc.format_message(), "details": {}}
        print(json.dumps({"error": error}))
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
