"""LangChain's standard suites against shardrag's store and retriever, embedded and over HTTP,
and a retrieval-QA chain (docs/langchain.md) run with a fake chat model."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from shardrag import Shardrag
from shardrag.api import create_app
from shardrag.client import ShardragClient
from shardrag.integrations.langchain import (
    ShardragEmbeddings,
    ShardragRetriever,
    ShardragVectorStore,
)
from shardrag.service import RagService
from tests.support import served

ROOT_KEY = "root-key-of-the-langchain-suite-0123456789"
PASSAGES = [
    "Every shard has three replicas applying one ordered log.",
    "When a node fails, the router asks another replica of the same shard.",
    "Snapshots of each shard go to object storage every night.",
    "Tenants never see each other's documents.",
    "Hybrid search fuses dense vectors and BM25 keywords.",
]


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shardrag]:
    instance = Shardrag.open(
        tmp_path_factory.mktemp("langchain") / "data",
        shards=2,
        admin_key=ROOT_KEY,
        rate_limit_per_second=0,
        result_cache_entries=0,
    )
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="module")
def url(rag: Shardrag) -> Iterator[str]:
    with served(create_app(rag)) as base:
        yield base


def http_tenant(url: str) -> tuple[ShardragClient, str]:
    """A new tenant of the served app and a client with its admin key."""
    tenant = f"lc-{secrets.token_hex(4)}"
    root = {"Authorization": f"Bearer {ROOT_KEY}"}
    assert httpx.post(f"{url}/v1/tenants", json={"id": tenant}, headers=root).status_code == 201
    made = httpx.post(f"{url}/v1/tenants/{tenant}/keys", json={"role": "admin"}, headers=root)
    return ShardragClient(url, made.json()["key"]), tenant


class TestEmbeddedVectorStore(VectorStoreIntegrationTests):
    """The standard suite on ``Shardrag`` in this process: a fresh tenant per test."""

    @pytest.fixture()
    def vectorstore(self, rag: Shardrag) -> Iterator[VectorStore]:  # type: ignore[override]
        tenant = f"lc-{secrets.token_hex(4)}"
        rag.create_tenant(tenant)
        yield ShardragVectorStore(rag, tenant=tenant)


class TestHttpVectorStore(VectorStoreIntegrationTests):
    """The standard suite on ``ShardragClient`` against a served app: a fresh tenant per test."""

    @pytest.fixture()
    def vectorstore(self, url: str) -> Iterator[VectorStore]:  # type: ignore[override]
        client, tenant = http_tenant(url)
        with client:
            yield ShardragVectorStore(client, tenant=tenant)


@pytest.fixture(scope="module")
def corpus(rag: Shardrag) -> str:
    tenant = "lc-retriever"
    ShardragVectorStore(rag, tenant).add_texts(PASSAGES)
    return tenant


class TestRetriever(RetrieversIntegrationTests):
    """The standard retriever suite, embedded."""

    @pytest.fixture(autouse=True)
    def _service(self, rag: Shardrag, corpus: str) -> None:
        self.service = rag
        self.tenant = corpus

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return ShardragRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"service": self.service, "tenant": self.tenant}

    @property
    def retriever_query_example(self) -> str:
        return "what happens when a node fails?"


@pytest.mark.parametrize("where", ["embedded", "http"])
def test_store_and_retriever_pass_access_groups_and_filters(
    where: str, rag: Shardrag, url: str
) -> None:
    if where == "embedded":
        service: RagService = rag
        tenant = f"lc-{secrets.token_hex(4)}"
    else:
        service, tenant = http_tenant(url)
    hr = ShardragVectorStore(service, tenant, acl=["hr"])
    hr.add_texts(["Payroll runs on the last Friday of the month."], [{"team": "hr"}], ids=["pay"])
    public = ShardragVectorStore(service, tenant)
    public.add_texts(["The cafeteria serves soup on Friday."], [{"team": "ops"}], ids=["soup"])
    eng = ShardragVectorStore(service, tenant, groups=["eng"])
    assert [d.id for d in eng.similarity_search("what happens on Friday?", k=5)] == ["soup"]
    assert eng.get_by_ids(["pay", "soup"]) == [
        Document(
            page_content="The cafeteria serves soup on Friday.", metadata={"team": "ops"}, id="soup"
        )
    ]
    everyone = public.similarity_search("Friday", k=5, filter={"team": "hr"})
    assert [d.id for d in everyone] == ["pay"]
    retriever = ShardragRetriever(service=service, tenant=tenant, groups=["hr"], k=5)
    assert {d.id for d in retriever.invoke("Friday")} == {"pay", "soup"}
    assert [d.id for d in retriever.invoke("Friday", filters={"team": "ops"})] == ["soup"]
    vectors = ShardragEmbeddings(service, tenant).embed_documents(["a", "b"])
    query = ShardragEmbeddings(service, tenant).embed_query("a")
    assert len(vectors) == 2 and len(vectors[0]) == len(query) == 384


def test_a_retrieval_qa_chain_answers_from_the_retrieved_passages(
    rag: Shardrag, corpus: str
) -> None:
    """The chain of docs/langchain.md: retrieve, put the passages in the prompt, answer."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    retriever = ShardragRetriever(service=rag, tenant=corpus, k=2)
    prompt = ChatPromptTemplate.from_template(
        "Answer from the context only.\n\nContext:\n{context}\n\nQuestion: {question}"
    )
    seen: list[str] = []

    def passages(documents: list[Document]) -> str:
        text = "\n\n".join(d.page_content for d in documents)
        seen.append(text)
        return text

    llm = FakeListChatModel(responses=["Another replica of the same shard answers."])
    chain = (
        {"context": retriever | passages, "question": RunnablePassthrough()}
        | prompt
        | llm
        | StrOutputParser()
    )
    answer = chain.invoke("what happens when a node fails?")
    assert answer == "Another replica of the same shard answers."
    assert "the router asks another replica" in seen[0]
