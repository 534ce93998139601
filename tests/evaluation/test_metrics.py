"""nDCG@k, recall@k and run evaluation, checked against values worked out by hand.

Discount of rank r is log2(r + 1): 1 at rank 1, 1/log2(3) ≈ 0.63093 at rank 2, 1/2 at rank 3,
1/log2(5) ≈ 0.43068 at rank 4.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardrag.errors import InvalidInput, InvalidParameter
from shardrag.evaluation import QueryScores, evaluate_run, ndcg_at_k, recall_at_k

INV_LOG2_3 = 1 / math.log2(3)  # ≈ 0.63093, the discount at rank 2
INV_LOG2_5 = 1 / math.log2(5)  # ≈ 0.43068, the discount at rank 4


def test_ndcg_binary_relevance_by_hand() -> None:
    # Relevant a, b at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161
    # Ideal puts them at ranks 1, 2: IDCG = 1 + 1/log2(3) = 1.63093; nDCG = 0.65093
    ranked = ["x", "a", "y", "b"]
    value = ndcg_at_k(ranked, {"a": 1, "b": 1})
    assert value == pytest.approx((INV_LOG2_3 + INV_LOG2_5) / (1 + INV_LOG2_3))
    assert value == pytest.approx(0.65093, abs=1e-5)


def test_ndcg_uses_the_grade_as_linear_gain() -> None:
    # Ranked b(1), c(2), a(3): DCG = 1 + 2/log2(3) + 3/2 = 1 + 1.26186 + 1.5 = 3.76186
    # Ideal a(3), c(2), b(1): IDCG = 3 + 2/log2(3) + 1/2 = 4.76186; nDCG = 0.78999
    # (exponential gain 2^g - 1 would give 6.39279 / 9.39279 = 0.68060 instead)
    value = ndcg_at_k(["b", "c", "a"], {"a": 3, "b": 1, "c": 2})
    assert value == pytest.approx((1 + 2 * INV_LOG2_3 + 1.5) / (3 + 2 * INV_LOG2_3 + 0.5))
    assert value == pytest.approx(0.78999, abs=1e-5)


def test_ndcg_of_the_ideal_ordering_is_one() -> None:
    assert ndcg_at_k(["a", "c", "b"], {"a": 3, "b": 1, "c": 2}) == pytest.approx(1.0)


def test_ndcg_cuts_the_ranking_at_k() -> None:
    # The only relevant document sits at rank 2: outside k=1, inside k=2 (DCG 1/log2(3), IDCG 1).
    assert ndcg_at_k(["x", "a"], {"a": 1}, k=1) == 0.0
    assert ndcg_at_k(["x", "a"], {"a": 1}, k=2) == pytest.approx(INV_LOG2_3)


def test_ndcg_ideal_is_cut_at_k_too() -> None:
    # Three relevant documents, one retrieved at rank 1 (DCG = 1).
    # k=1: IDCG = 1, so nDCG = 1.
    # k=10: IDCG = 1 + 1/log2(3) + 1/2 = 2.13093, so nDCG = 0.46928.
    relevance = {"a": 1, "b": 1, "c": 1}
    assert ndcg_at_k(["a"], relevance, k=1) == pytest.approx(1.0)
    assert ndcg_at_k(["a"], relevance, k=10) == pytest.approx(1 / (1 + INV_LOG2_3 + 0.5))
    assert ndcg_at_k(["a"], relevance, k=10) == pytest.approx(0.46928, abs=1e-5)


def test_ndcg_with_k_larger_than_the_ranking() -> None:
    assert ndcg_at_k(["a"], {"a": 2}, k=10) == pytest.approx(1.0)
    assert ndcg_at_k([], {"a": 2}, k=10) == 0.0


def test_ndcg_is_zero_without_relevant_documents() -> None:
    assert ndcg_at_k(["a", "b"], {}) == 0.0
    assert ndcg_at_k(["a", "b"], {"a": 0, "b": 0}) == 0.0


def test_ndcg_unjudged_and_negative_grades_gain_nothing() -> None:
    # a is graded -1 and x unjudged: both gain 0. b at rank 3: DCG = 1/2, IDCG = 1.
    assert ndcg_at_k(["a", "x", "b"], {"a": -1, "b": 1}) == pytest.approx(0.5)


def test_ndcg_counts_a_duplicated_document_once() -> None:
    # Read as [a, b]: the ideal ordering, so 1.0. Counting the copy of a at rank 2 would give
    # (1 + 1/log2(3) + 1/2) / (1 + 1/log2(3)) = 1.30657, above 1.
    assert ndcg_at_k(["a", "a", "b"], {"a": 1, "b": 1}) == pytest.approx(1.0)


@given(
    ranked=st.lists(st.sampled_from("abcdefgh"), max_size=12),
    relevance=st.dictionaries(st.sampled_from("abcdefgh"), st.integers(-1, 3)),
    k=st.integers(1, 12),
)
def test_ndcg_stays_between_zero_and_one(
    ranked: list[str], relevance: dict[str, int], k: int
) -> None:
    assert 0.0 <= ndcg_at_k(ranked, relevance, k) <= 1.0 + 1e-12


@pytest.mark.parametrize("k", [0, -3])
def test_cutoff_below_one_is_rejected(k: int) -> None:
    with pytest.raises(InvalidParameter):
        ndcg_at_k(["a"], {"a": 1}, k=k)
    with pytest.raises(InvalidParameter):
        recall_at_k(["a"], {"a": 1}, k=k)


def test_recall_by_hand() -> None:
    # Relevant (grade > 0): a, b, c. z has grade 0 and does not count.
    # Top 2 = [a, x] finds a: 1/3. Top 4 finds a and b: 2/3.
    ranked = ["a", "x", "b", "z"]
    relevance = {"a": 1, "b": 2, "c": 1, "z": 0}
    assert recall_at_k(ranked, relevance, k=2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, relevance, k=4) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, relevance) == pytest.approx(2 / 3)


def test_recall_is_zero_without_relevant_documents() -> None:
    assert recall_at_k(["a"], {}) == 0.0
    assert recall_at_k(["a"], {"a": 0}) == 0.0


def test_recall_counts_a_duplicated_document_once() -> None:
    # Read as [a, b]: the top 2 hold both relevant documents. Cutting [a, a] would give 1/2.
    assert recall_at_k(["a", "a", "b"], {"a": 1, "b": 1}, k=2) == pytest.approx(1.0)


def test_evaluate_run_means_over_judged_queries() -> None:
    qrels = {
        "q1": {"a": 1},
        "q2": {"b": 2, "c": 1},
        "q3": {"d": 0},  # no relevant document: not evaluated
        "q5": {"e": 1},  # judged but absent from the run: scores 0
    }
    run = {
        "q1": ["a"],
        "q2": ["c", "b"],
        "q4": ["zzz"],  # no judgements: ignored
    }
    scores = evaluate_run(run, qrels)

    # q1: a at rank 1, the only relevant document: nDCG 1, recall 1.
    # q2: DCG = 1 + 2/log2(3) = 2.26186, IDCG = 2 + 1/log2(3) = 2.63093: nDCG 0.85972, recall 1.
    # q5: nothing retrieved: nDCG 0, recall 0.
    q2_ndcg = (1 + 2 * INV_LOG2_3) / (2 + INV_LOG2_3)
    assert q2_ndcg == pytest.approx(0.85972, abs=1e-5)
    assert set(scores.per_query) == {"q1", "q2", "q5"}
    assert scores.per_query["q1"] == QueryScores(ndcg_at_10=1.0, recall_at_100=1.0)
    assert scores.per_query["q2"].ndcg_at_10 == pytest.approx(q2_ndcg)
    assert scores.per_query["q2"].recall_at_100 == 1.0
    assert scores.per_query["q5"] == QueryScores(ndcg_at_10=0.0, recall_at_100=0.0)
    assert scores.query_count == 3
    # Means: nDCG (1 + 0.85972 + 0) / 3 = 0.61991; recall (1 + 1 + 0) / 3 = 0.66667.
    assert scores.ndcg_at_10 == pytest.approx((1 + q2_ndcg) / 3)
    assert scores.ndcg_at_10 == pytest.approx(0.61991, abs=1e-5)
    assert scores.recall_at_100 == pytest.approx(2 / 3)


def test_evaluate_run_cuts_ndcg_at_10_and_recall_at_100() -> None:
    # The single relevant document at rank 11: outside nDCG@10, inside recall@100.
    ranked = [f"x{i}" for i in range(10)] + ["a"]
    scores = evaluate_run({"q": ranked}, {"q": {"a": 1}})
    assert scores.ndcg_at_10 == 0.0
    assert scores.recall_at_100 == 1.0


def test_evaluate_run_without_any_relevant_judgement_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="relevant"):
        evaluate_run({"q": ["a"]}, {"q": {"a": 0}})
