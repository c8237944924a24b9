"""The cpu nightly runs the rows of each recipe's headline claims with HEADLINE_SEEDS seeds."""

from __future__ import annotations

from typing import Any

from bvbench import nightly
from bvbench.recipes import available, load_recipe
from bvbench.report.claims import paper_diff
from bvbench.runner import RunOptions


def test_headline_rows_run_the_extra_seeds() -> None:
    calls: list[tuple[str, Any]] = []
    opts = RunOptions(profile="cpu", sets=["data.name=cifar10"], out="somewhere", resume=True)
    seeds = nightly.run_headline_seeds({"recipe": "gsb-cifar100", "sets": opts.sets}, opts,
                                       lambda name, o: calls.append((name, o)))
    first = load_recipe("gsb-cifar100", "cpu").seed
    assert seeds == [first + 1, first + 2] and nightly.HEADLINE_SEEDS == 3
    assert [o.seed for _, o in calls] == seeds
    assert all(n == "gsb-cifar100" and o.rows == ["ours", "ours-baseline"] and o.sets == opts.sets
               and o.resume and o.profile == "cpu" for n, o in calls)


def test_headline_seeds_stop_when_the_budget_is_spent() -> None:
    calls: list[Any] = []
    opts = RunOptions(profile="cpu")
    spent = iter([False, True])
    seeds = nightly.run_headline_seeds({"recipe": "quickstart", "sets": []}, opts, lambda n, o: calls.append(o),
                                       5, lambda: next(spent))
    assert seeds == [1] and [o.seed for o in calls] == [1]
    assert nightly.run_headline_seeds({"recipe": "quickstart", "sets": []}, opts, lambda n, o: calls.append(o),
                                      1) == []


def test_every_recipe_has_claims_with_a_headline_whose_rows_run() -> None:
    """... and each claim agrees with the paper's own numbers where the recipe transcribes both."""
    for name in available():
        rec = load_recipe(name, "cpu")
        assert rec.claims, name
        for c in rec.claims:
            d = paper_diff(rec, c)
            assert d is None or d > 0, (name, c.text, d)
        rows = nightly.headline_rows(name)
        assert rows and all(rec.row(r).status == "run" for r in rows), name
