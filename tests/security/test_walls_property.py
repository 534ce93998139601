"""A property: random sequences of puts, group changes, deletes, tenant drops and
re-creations never let a caller read, confirm or list what its tenant and groups do not allow.

Hypothesis drives one embedded service through the steps and keeps a model of what each tenant
holds; after every step each kind of caller (every group set, none) lists, gets and searches
every id and every word ever written — in its tenant, in the other tenant, and in dropped
incarnations of its own — and must see exactly what the model says it may.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from shardrag import Shardrag
from shardrag.errors import DocumentNotFound, TenantNotFound

TENANTS = ("alpha", "beta")
DOC_IDS = ("a.txt", "b.txt", "c.txt")
ACLS: tuple[tuple[str, ...], ...] = ((), ("eng",), ("hr",), ("eng", "hr"))
CALLERS: tuple[tuple[str, ...] | None, ...] = (None, (), ("eng",), ("hr",))
_words = (f"zq{''.join(p)}" for p in itertools.product("bcdfghjklmnpqrstvwx", repeat=3))


def _readable(groups: tuple[str, ...] | None, acl: tuple[str, ...]) -> bool:
    return groups is None or not acl or bool(set(acl) & set(groups))


class Walls(RuleBasedStateMachine):
    """The service under random writes, and the model of what each tenant holds."""

    rag: Shardrag

    def __init__(self) -> None:
        super().__init__()
        #: tenant -> doc id -> (its groups, the word of its live version); gone when deleted.
        self.live: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {t: {} for t in TENANTS}
        #: tenant -> doc id -> groups of the version a delete removed (this incarnation).
        self.deleted: dict[str, dict[str, tuple[str, ...]]] = {t: {} for t in TENANTS}
        self.words: set[str] = set()

    @rule(tenant=st.sampled_from(TENANTS), doc=st.sampled_from(DOC_IDS), acl=st.sampled_from(ACLS))
    def put(self, tenant: str, doc: str, acl: tuple[str, ...]) -> None:
        word = next(_words)
        text = f"Note {word} about the {doc} of {tenant}.".encode()
        self.rag.put_document(tenant, doc, text, doc, acl=list(acl))
        self.live[tenant][doc] = (acl, word)
        self.deleted[tenant].pop(doc, None)
        self.words.add(word)

    @rule(tenant=st.sampled_from(TENANTS), doc=st.sampled_from(DOC_IDS))
    def delete(self, tenant: str, doc: str) -> None:
        if doc not in self.live[tenant]:
            return
        self.rag.delete_document(tenant, doc)
        acl, _ = self.live[tenant].pop(doc)
        self.deleted[tenant][doc] = acl

    @rule(tenant=st.sampled_from(TENANTS))
    def drop(self, tenant: str) -> None:
        if not self.live[tenant] and not self.deleted[tenant]:
            return
        self.rag.drop_tenant(tenant)
        self.live[tenant] = {}
        self.deleted[tenant] = {}

    @invariant()
    def every_caller_sees_exactly_what_it_may(self) -> None:
        for tenant, groups in itertools.product(TENANTS, CALLERS):
            live = self.live[tenant]
            deleted = self.deleted[tenant]
            if not live and not deleted:
                continue  # dropped or never made: nothing to read
            want = {d for d, (acl, _) in live.items() if _readable(groups, acl)}
            listed = self.rag.list_documents(tenant, groups=groups)
            assert {d.doc_id for d in listed if d.state.value != "deleted"} == want
            gone = {d for d, acl in deleted.items() if _readable(groups, acl)}
            shown = self.rag.list_documents(tenant, "deleted", groups=groups)
            assert {d.doc_id for d in shown} == gone
            for doc in DOC_IDS:
                visible = doc in want or doc in gone
                try:
                    self.rag.get_document(tenant, doc, groups)
                    assert visible, f"{tenant}/{doc} shown to {groups}"
                except DocumentNotFound:
                    assert not visible, f"{tenant}/{doc} hidden from {groups}"
            readable_words = {live[d][1]: d for d in want}
            for word in self.words:
                hits = self.rag.search(tenant, word, k=5, mode="keyword", groups=groups)
                for hit in hits:
                    assert readable_words.get(word) == hit.doc_id, (
                        f"{groups} of {tenant} found {word!r} in {hit.doc_id}"
                    )
                if word in readable_words:
                    assert hits, f"{groups} of {tenant} did not find its own {word!r}"


#: It drives an embedded service of its own: against a cluster it would only run again.
pytestmark = pytest.mark.in_process(reason="drives an embedded service of its own")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Shardrag]:
    rag = Shardrag.open(tmp_path / "data", shards=2, result_cache_entries=1000)
    try:
        yield rag
    finally:
        rag.close()


def test_no_sequence_of_writes_breaks_the_walls(service: Shardrag) -> None:
    Walls.rag = service

    class Fresh(Walls):
        """Each example starts from empty tenants (the previous example's are dropped)."""

        def __init__(self) -> None:
            for tenant in TENANTS:
                with contextlib.suppress(TenantNotFound):
                    service.drop_tenant(tenant)
            super().__init__()

    run_state_machine_as_test(
        Fresh,
        settings=settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
