"""LangChain: shardrag as a ``VectorStore``, a retriever and an ``Embeddings``.

    >>> from shardrag import Shardrag                                     # doctest: +SKIP
    >>> from shardrag.integrations.langchain import ShardragVectorStore  # doctest: +SKIP
    >>> store = ShardragVectorStore(Shardrag.open("./data"), tenant="acme")  # doctest: +SKIP
    >>> store.add_texts(["Every shard has three replicas."], ids=["handbook"])  # doctest: +SKIP
    >>> store.as_retriever().invoke("how many replicas?")                 # doctest: +SKIP

Each takes a ``RagService``: ``Shardrag`` in this process or ``ShardragClient`` over HTTP, and
behaves the same on both. A LangChain document added through the store *is* a shardrag
document: its id is the document id (a new UUID when none is given), its metadata the
document's metadata, and it is searchable when ``add_documents`` returns (the write waits until
its version is live: read-your-writes). Adding with an existing id makes a new version of that
document; unchanged content is a no-op. Searches are shardrag's (hybrid by default), so a
result is a passage (a chunk) of a document, with ``Document.id`` the document id.

shardrag embeds with its own model; the store never calls an ``Embeddings``.
``ShardragEmbeddings`` exposes that model to LangChain code that needs vectors in the same
space (its ``embeddings`` property).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from shardrag.extras import require_extra

require_extra("langchain_core", "langchain", "shardrag.integrations.langchain")

from langchain_core.callbacks import CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from pydantic import ConfigDict  # noqa: E402

from shardrag.errors import DocumentNotFound, ShardragError  # noqa: E402
from shardrag.models import DocumentInput, Hit, Metadata, SearchMode  # noqa: E402
from shardrag.service import RagService  # noqa: E402

#: The file name a text added through LangChain is stored under (it is plain text).
TEXT_FILENAME = "document.txt"


class ShardragEmbeddings(Embeddings):
    """The embedding model of a shardrag service (embedded, or a server's over HTTP)."""

    def __init__(self, service: RagService, tenant: str) -> None:
        self.service = service
        self.tenant = tenant

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Vectors of passages, as shardrag indexes them."""
        return self.service.embed(self.tenant, list(texts)) if texts else []

    def embed_query(self, text: str) -> list[float]:
        """The vector of a question, as shardrag searches with it."""
        return self.service.embed(self.tenant, [text], query=True)[0]


def _document(hit: Hit) -> Document:
    return Document(page_content=hit.text, metadata=dict(hit.metadata), id=hit.doc_id)


class ShardragVectorStore(VectorStore):
    """One tenant of a shardrag service as a LangChain ``VectorStore`` (see the module).

    ``mode``: hybrid (default), dense or keyword. ``groups``: the access groups searches and
    reads run with (docs/access.md); ``acl``: the groups documents added are readable by.
    ``filter`` on a search is shardrag's metadata filter (``{"team": "ops"}``).
    """

    def __init__(
        self,
        service: RagService,
        tenant: str,
        mode: SearchMode | str = SearchMode.HYBRID,
        groups: Iterable[str] | None = None,
        acl: Iterable[str] | None = None,
    ) -> None:
        self.service = service
        self.tenant = tenant
        self.mode = SearchMode(mode)
        self.groups = None if groups is None else list(groups)
        self.acl = tuple(acl or ())
        self._embeddings = ShardragEmbeddings(service, tenant)

    @property
    def embeddings(self) -> Embeddings:
        """The service's own model (the store does not need it to add or search)."""
        return self._embeddings

    # -- writes -------------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Store each text as a document (a new version when its id exists); its ids, once
        every one is live. Raises the first failure (the others are still written)."""
        texts = list(texts)
        ids = [i or str(uuid.uuid4()) for i in ids] if ids else []
        ids += [str(uuid.uuid4()) for _ in range(len(texts) - len(ids))]
        metadatas = metadatas or [{} for _ in texts]
        documents = [
            DocumentInput(
                doc_id, text.encode(), TEXT_FILENAME, dict(meta), "text/plain", acl=self.acl
            )
            for doc_id, text, meta in zip(ids, texts, metadatas, strict=True)
        ]
        outcomes = self.service.put_documents(self.tenant, documents) if documents else []
        failed = [o for o in outcomes if isinstance(o, ShardragError)]
        if failed:
            raise failed[0]
        return ids

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Store LangChain documents (their ``id`` unless ``ids`` are given); their ids."""
        ids = kwargs.pop("ids", None) or [d.id or str(uuid.uuid4()) for d in documents]
        return self.add_texts(
            [d.page_content for d in documents],
            [dict(d.metadata) for d in documents],
            ids=list(ids),
            **kwargs,
        )

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id (ids that do not exist, or that the store's ``groups`` do not
        read, are ignored)."""
        for doc_id in ids or []:
            try:
                self.service.delete_document(self.tenant, doc_id, self.groups)
            except DocumentNotFound:
                continue
        return True

    # -- reads --------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The live documents of ``ids`` (those missing are left out), whole."""
        found = []
        for doc_id in ids:
            try:
                info = self.service.get_document(self.tenant, doc_id, self.groups)
                data = self.service.get_original(self.tenant, doc_id, self.groups)
            except DocumentNotFound:
                continue
            text = data.decode("utf-8", errors="replace")
            found.append(Document(page_content=text, metadata=dict(info.metadata), id=doc_id))
        return found

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Metadata | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` best passages with shardrag's scores (higher is better)."""
        hits = self.service.search(
            self.tenant,
            query,
            k=k,
            mode=kwargs.get("mode", self.mode),
            filters=filter,
            groups=self.groups,
        )
        return [(_document(hit), hit.score) for hit in hits]

    def similarity_search(
        self, query: str, k: int = 4, filter: Metadata | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` best passages for ``query``."""
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def _select_relevance_score_fn(self) -> Any:
        # Fused scores are not distances; rank order is what they mean.
        return lambda score: score

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> ShardragVectorStore:
        """A store over ``kwargs["service"]`` and ``kwargs["tenant"]`` holding ``texts``
        (``embedding`` is not used: shardrag embeds with its own model)."""
        store = cls(kwargs.pop("service"), kwargs.pop("tenant"), **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store


class ShardragRetriever(BaseRetriever):
    """A LangChain retriever over one tenant: shardrag's search, its passages as documents.

    ``k``, ``mode``, ``filters`` and ``groups`` are those of ``RagService.search``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    service: Any
    tenant: str
    k: int = 4
    mode: SearchMode = SearchMode.HYBRID
    filters: dict[str, Any] | None = None
    groups: list[str] | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        """The passages for ``query``; ``invoke(query, k=3, filters=..., mode=...)``
        overrides the retriever's own for one call."""
        hits = self.service.search(
            self.tenant,
            query,
            k=kwargs.get("k", self.k),
            mode=kwargs.get("mode", self.mode),
            filters=kwargs.get("filters", self.filters),
            groups=kwargs.get("groups", self.groups),
        )
        return [_document(hit) for hit in hits]
