"""Estimate plans: method resolution, budgets and keyword-only construction (no arrays involved)."""

from __future__ import annotations

import pytest

from ntksearch.ntk.plan import QUANTITIES, EstimatePlan, plan_estimate


def test_plans_are_built_from_keywords_only():
    with pytest.raises(TypeError):
        EstimatePlan("exact", "state", 4, "identity", 4, True, 4, 0, 0, (0,), 0)  # type: ignore[misc]


@pytest.mark.parametrize(("n", "dense", "method"), [(10, False, "exact"), (11, False, "hutch++"),
                                                     (20, True, "exact"), (21, True, "hutch++")])
def test_auto_takes_exact_when_it_fits_half_the_budget_or_all_of_it_with_dense_products(n, dense, method):
    plan = plan_estimate("auto", n, 1000, max_matvecs=40, wanted=QUANTITIES[:3], n_labels=0, dense=dense)
    assert plan.method == method


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "forward", "reverse"])
@pytest.mark.parametrize("labels", [0, 2])
def test_randomised_plans_spend_at_most_the_budget(method, labels):
    plan = plan_estimate(method, 300, 5000, max_matvecs=400, wanted=QUANTITIES, n_labels=labels)
    assert plan.max_blocks >= plan.min_blocks
    assert sum(plan.passes(plan.max_blocks)) <= 400 < sum(plan.passes(plan.max_blocks + 1))
    assert plan.side == {"forward": "param", "hutch++": "state"}.get(method, "state")


def test_exact_plan_counts_both_modes_and_the_label_passes():
    plan = plan_estimate("exact", 12, 500, max_matvecs=100, wanted=QUANTITIES, n_labels=2)
    assert (plan.side, plan.sketch, plan.sketch_size) == ("state", "identity", 12)
    assert plan.passes(0) == (12, 14)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"method": "lanczos"}, "allowed: auto, exact"),
    ({"max_matvecs": 0}, "positive number"),
    ({"min_blocks": 1}, "min_blocks"),
    ({"block_size": 1}, "block_size"),
    ({"method": "hutch++", "max_matvecs": 20, "sketch_size": 10}, "leaves"),
])
def test_bad_plans_are_refused_with_what_is_allowed(kwargs, match):
    args = {"method": "hutchinson", "max_matvecs": 400} | kwargs
    with pytest.raises(ValueError, match=match):
        plan_estimate(args.pop("method"), 300, 5000, wanted=QUANTITIES, n_labels=0, **args)
