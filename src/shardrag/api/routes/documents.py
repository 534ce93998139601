"""Documents of a tenant: put (raw body or multipart), get, list, delete."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from shardrag import acl as access
from shardrag import validation
from shardrag.api.deps import ACL_HEADER, AUDIT_ACL, Caller, tenant_caller
from shardrag.api.schemas import DocumentList, DocumentOut, ErrorOut, WriteOut
from shardrag.errors import DocumentNotFound, Forbidden, InvalidParameter, InvalidRequest
from shardrag.models import DocumentInfo, Metadata, VersionState, WriteResult
from shardrag.registry import Role

router = APIRouter(prefix="/v1/tenants/{t}/documents", tags=["documents"])
#: Originals apart from documents: a document id may end in anything, "/content" included.
originals = APIRouter(prefix="/v1/tenants/{t}/originals", tags=["documents"])

Reader = Annotated[Caller, Depends(tenant_caller(Role.READER))]
Writer = Annotated[Caller, Depends(tenant_caller(Role.WRITER, action="document.write"))]

REPLAY_HEADER = "Idempotent-Replayed"

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The document: its raw bytes, or a multipart form with a `file` part "
        "(and optionally a `metadata` part holding a JSON object and an `acl` part holding a "
        "JSON array of access groups).",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "text/plain": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "metadata": {"type": "string", "description": "a JSON object"},
                        "acl": {
                            "type": "string",
                            "description": "a JSON array of access groups",
                        },
                    },
                }
            },
        },
    }
}


def _metadata(raw: str | None) -> Metadata:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise InvalidParameter(f"metadata is not valid JSON: {exc}") from None
    return validation.metadata(value)


class _Upload:
    """The document of a PUT, from a raw body or a multipart form."""

    def __init__(self, data: bytes, filename: str | None, content_type: str | None) -> None:
        self.data = data
        self.filename = filename
        self.content_type = content_type
        self.metadata_field: str | None = None
        self.acl_field: str | None = None

    @classmethod
    async def read(cls, request: Request) -> _Upload:
        content_type = request.headers.get("content-type")
        if not (content_type or "").lower().startswith("multipart/form-data"):
            return cls(await request.body(), None, content_type)
        form = await request.form(max_files=1, max_fields=5)
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise InvalidRequest("a multipart upload needs a 'file' part holding the document")
        upload = cls(await part.read(), part.filename, part.content_type)
        meta = form.get("metadata")
        if meta is not None and not isinstance(meta, str):
            raise InvalidRequest("the 'metadata' part must be text (a JSON object)")
        upload.metadata_field = meta
        acl = form.get("acl")
        if acl is not None and not isinstance(acl, str):
            raise InvalidRequest("the 'acl' part must be text (a JSON array of group names)")
        upload.acl_field = acl
        return upload

    def acl(self, header: str | None) -> tuple[str, ...]:
        """The document's access groups: the ``acl`` part, else the header, else none."""
        if self.acl_field is not None:
            try:
                value = json.loads(self.acl_field)
            except ValueError as exc:
                raise InvalidParameter(f"acl is not valid JSON: {exc}") from None
            return access.groups(value, "acl")
        return access.groups(header or "", ACL_HEADER)


@router.put(
    "/{doc_id:path}",
    status_code=202,
    response_model=WriteOut,
    openapi_extra=_UPLOAD_BODY,
    responses={200: {"model": WriteOut, "description": "live (wait=true) or unchanged"}},
)
async def put_document(
    t: str,
    doc_id: str,
    request: Request,
    who: Writer,
    wait: Annotated[bool, Query(description="answer once the version is live")] = False,
    filename: Annotated[str | None, Query(max_length=255)] = None,
    title: Annotated[str | None, Query(max_length=1000)] = None,
    metadata: Annotated[str | None, Query(description="a JSON object", max_length=65536)] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    x_shardrag_acl: Annotated[
        str | None,
        Header(max_length=8192, description="access groups of a raw body, comma-separated"),
    ] = None,
) -> JSONResponse:
    """Store a new version of a document (writer).

    202 with the ``pending`` version and its ``write_token`` as soon as it is durably in the
    log; 200 when ``wait=true`` (the version is live) or when the bytes, name and metadata are
    unchanged. What needs no parsing is refused at once (empty, too large, unsupported
    format); a document that cannot be parsed fails its version in the ingestion worker
    (``GET`` shows the error; with ``wait=true`` this answers it). The live version stays.

    Access groups (``acl`` part or ``X-Shardrag-Acl``): who of the tenant reads it; none,
    every key. A key with groups writes only documents it reads, with groups of its own.
    """
    validation.doc_id(doc_id)
    if len(request.headers.getlist(ACL_HEADER)) > 1:
        raise InvalidParameter(f"send {ACL_HEADER} once (comma-separated groups)")
    upload = await _Upload.read(request)
    meta = _metadata(upload.metadata_field if upload.metadata_field is not None else metadata)
    name = filename or upload.filename or doc_id.rsplit("/", 1)[-1]
    acl = upload.acl(x_shardrag_acl)

    def write() -> WriteResult:
        with who.audited("document.put", doc_id) as details:
            _may_write(who, t, doc_id, acl)
            details[AUDIT_ACL] = list(acl)
            result = who.service.rag.put_document(
                t,
                doc_id,
                upload.data,
                name,
                meta,
                upload.content_type,
                title,
                wait=wait,
                idempotency_key=idempotency_key,
                acl=acl,
            )
            details.update(version=result.version, state=result.state.value)
        return result

    result = await run_in_threadpool(write)
    status = 202 if result.state is VersionState.PENDING else 200
    headers = {REPLAY_HEADER: "true"} if result.replayed else None
    return JSONResponse(result.to_dict(), status_code=status, headers=headers)


@router.get("", response_model=DocumentList)
def list_documents(
    t: str,
    who: Reader,
    state: Annotated[VersionState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=512)] = None,
) -> Any:
    """A page of the tenant's documents by id (deleted ones only with ``state=deleted``)."""
    page = who.service.rag.list_documents(t, state, limit, after, who.groups)
    next_after = page[-1].doc_id if len(page) == limit else None
    return {"documents": [d.to_dict() for d in page], "next_after": next_after}


@router.get("/{doc_id:path}", response_model=DocumentOut, responses={404: {"model": ErrorOut}})
def get_document(t: str, doc_id: str, who: Reader) -> Any:
    """A document's version, state, chunk count, metadata and last error."""
    return who.service.rag.get_document(t, doc_id, who.groups).to_dict()


@originals.get(
    "/{doc_id:path}",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the original"},
        404: {"model": ErrorOut},
    },
)
def get_original(t: str, doc_id: str, who: Reader) -> Response:
    """The bytes the live version of a document was written with, with its content type
    (404 when none is live or the caller's access groups may not read it)."""
    rag = who.service.rag
    info = rag.get_document(t, doc_id, who.groups)
    data = rag.original_of(info)
    media = (info.live.content_type if info.live else None) or "application/octet-stream"
    # An attachment, never rendered here: an HTML original would otherwise run in the
    # console's origin.
    headers = {
        "Content-Disposition": "attachment",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }
    return Response(data, media_type=media, headers=headers)


@router.delete("/{doc_id:path}", response_model=WriteOut, responses={404: {"model": ErrorOut}})
def delete_document(t: str, doc_id: str, who: Writer) -> Any:
    """Delete a document (writer): none of its chunks are searchable once this answers."""
    with who.audited("document.delete", doc_id) as details:
        current = _may_write(who, t, doc_id)
        if current is not None:
            details[AUDIT_ACL] = list(current.acl)
        result = who.service.rag.delete_document(t, doc_id)
        details["version"] = result.version
    return result.to_dict()


def _may_write(
    who: Caller, tenant: str, doc_id: str, acl: tuple[str, ...] | None = None
) -> DocumentInfo | None:
    """The document as it is, if the caller may write it: a caller restricted to access
    groups writes only documents it can read (one it cannot read is not found, as for reads;
    a deleted one keeps the groups it had), and gives them only groups it has, at least one.

    ``acl``: the groups a put gives; None for a delete, whose audit event needs the
    document's groups (a put's are ``acl``: an unrestricted put reads nothing here).
    """
    if who.groups is None and acl is not None:
        return None
    current = who.service.rag.registry.document(tenant, validation.doc_id(doc_id))
    if who.groups is None:
        return current
    if current is not None and not access.may_read(who.groups, current.acl):
        raise DocumentNotFound(f"no document {doc_id!r} in tenant {tenant!r}", doc_id=doc_id)
    if acl is not None and (not acl or not set(acl) <= set(who.groups)):
        raise Forbidden(
            "a key with access groups writes documents of its own groups only: "
            f"give the document groups among {list(who.groups)}",
            groups=list(who.groups),
        )
    return current
