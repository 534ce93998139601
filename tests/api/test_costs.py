"""Model work admitted by cost (api/costs.py): a tenant's calls hold tokens of its own
budget, wait behind its own earlier calls, and never make another tenant wait."""

from __future__ import annotations

import asyncio

import pytest

from shardrag.api.costs import MAX_TOKENS_PER_TEXT, ModelBudget, embedding_cost
from shardrag.errors import TenantOverloaded


def test_a_texts_cost_is_its_tokens_up_to_the_models_window() -> None:
    assert embedding_cost(["abcd" * 10]) == 10 + 2
    assert embedding_cost(["x" * 100_000]) == MAX_TOKENS_PER_TEXT + 2
    assert embedding_cost(["a", "b"]) == 2 * (1 + 2)


def test_a_call_waits_behind_its_own_tenant_and_no_other_tenant_waits() -> None:
    async def scenario() -> list[str]:
        budget = ModelBudget(per_tenant_tokens=100, max_wait_seconds=5)
        order: list[str] = []
        release_first = asyncio.Event()

        async def call(name: str, tenant: str, cost: int, until: asyncio.Event | None) -> None:
            async with budget.hold(tenant, cost):
                order.append(f"{name} in")
                if until is not None:
                    await until.wait()
            order.append(f"{name} out")

        first = asyncio.create_task(call("a1", "a", 80, release_first))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(call("a2", "a", 80, None))
        other = asyncio.create_task(call("b1", "b", 500, None))  # over budget, but alone
        await asyncio.sleep(0.01)
        assert budget.in_flight("a") == 80
        release_first.set()
        await asyncio.gather(first, second, other)
        assert budget.in_flight("a") == budget.in_flight("b") == 0
        return order

    order = asyncio.run(scenario())
    assert order.index("b1 out") < order.index("a1 out")  # b never waited for a
    assert order.index("a1 out") < order.index("a2 in")  # a2 waited for a1


def test_a_call_that_cannot_get_its_tokens_in_time_is_refused_and_gives_nothing_away() -> None:
    async def scenario() -> None:
        budget = ModelBudget(per_tenant_tokens=100, max_wait_seconds=0.05)
        hold = asyncio.Event()

        async def long_call() -> None:
            async with budget.hold("a", 90):
                await hold.wait()

        running = asyncio.create_task(long_call())
        await asyncio.sleep(0.01)
        with pytest.raises(TenantOverloaded):
            async with budget.hold("a", 50):
                pass
        assert budget.in_flight("a") == 90
        hold.set()
        await running
        assert budget.in_flight("a") == 0
        async with budget.hold("a", 50):
            assert budget.in_flight("a") == 50

    asyncio.run(scenario())


def test_a_tenant_with_several_budgets_waiting_is_refused_at_once() -> None:
    async def scenario() -> None:
        budget = ModelBudget(per_tenant_tokens=100, max_wait_seconds=5)
        hold = asyncio.Event()

        async def call(cost: int) -> None:
            async with budget.hold("a", cost):
                await hold.wait()

        tasks = [asyncio.create_task(call(100)) for _ in range(5)]  # 1 runs, 4 wait
        await asyncio.sleep(0.01)
        with pytest.raises(TenantOverloaded):
            async with budget.hold("a", 1):
                pass
        hold.set()
        await asyncio.gather(*tasks)
        assert budget.in_flight("a") == 0

    asyncio.run(scenario())


def test_a_budget_of_zero_admits_everything() -> None:
    async def scenario() -> None:
        budget = ModelBudget(per_tenant_tokens=0, max_wait_seconds=0.01)
        async with budget.hold("a", 10**9), budget.hold("a", 10**9):
            assert budget.in_flight("a") == 0

    asyncio.run(scenario())
