"""Claim verdicts (bvbench.report.claims) on synthetic paired predictions with a known answer, written as run
folders and read back through the table's run lookup; the claims schema's validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from bvbench.evaluate.predictions import FILENAME, Predictions, write_predictions
from bvbench.recipes import load_recipe
from bvbench.recipes.schema import Claim
from bvbench.report.claims import (
    HOLDS,
    NO_PREDICTIONS,
    NOISE,
    REVERSED,
    Paired,
    build_claims,
    claims_markdown,
    mcnemar_exact,
    newcombe_paired,
    verdict,
    write_claims,
)
from bvbench.results import Metrics, RunDir

N = 2000

RECIPE = """
name: claimy
title: claims test recipe
paper:
  citation: test
  file: none.txt
  tables:
    - name: Table 1
      columns: [{key: top1, label: Top-1 (%), unit: percent}]
data: {name: fake, img_size: 16, num_workers: 0}
model: {name: vit_tiny_patch16_224, img_size: 16, patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}
rows:
  - {name: better, label: Better, paper: {top1: 75.0}}
  - {name: worse, label: Worse, paper: {top1: 70.0}}
  - {name: twin, label: Same as worse}
  - {name: old, label: Run before predictions}
  - {name: never, label: Never run}
  - {name: cnn, label: Another paper's CNN, status: reference, paper: {top1: 60.0}}
claims:
  - {better: better, worse: worse, cites: "Table 1", headline: true}
  - {better: worse, worse: better, cites: "Table 1"}
  - {better: twin, worse: worse, cites: "Table 1"}
  - {better: better, worse: old, cites: "Table 1"}
  - {better: better, worse: never, cites: "Table 1"}
  - {better: better, worse: cnn, cites: "Table 1"}
"""


def synthetic(n: int = N, n10: int = 120, n01: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two prediction vectors: the worse one right on 70 %; the better one right on exactly the same
    images except `n01` it misses and `n10` more it gets."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 10, n)
    worse_ok = np.zeros(n, bool)
    worse_ok[rng.permutation(n)[: int(0.7 * n)]] = True
    better_ok = worse_ok.copy()
    right, wrong = np.flatnonzero(worse_ok), np.flatnonzero(~worse_ok)
    better_ok[rng.choice(right, n01, replace=False)] = False
    better_ok[rng.choice(wrong, n10, replace=False)] = True
    return label, np.where(better_ok, label, (label + 1) % 10), np.where(worse_ok, label, (label + 3) % 10)


def claim(better: str = "a", worse: str = "b") -> Claim:
    return Claim(better=better, worse=worse, cites="Table 1")


def test_identical_predictions_are_within_noise() -> None:
    label, pred, _ = synthetic()
    ok = pred == label
    r = verdict(Paired(ok, ok.copy()), claim())
    assert r.verdict == NOISE and r.diff == 0.0 and r.p == 1.0
    assert r.low < 0 < r.high and r.n == N


def test_clearly_better_holds_and_swapped_is_reversed() -> None:
    label, good, bad = synthetic()
    a, b = good == label, bad == label
    r = verdict(Paired(a, b), claim())
    assert r.verdict == HOLDS
    assert r.diff == pytest.approx(100 * (120 - 20) / N)  # +5.00 points
    assert 0 < r.low < r.diff < r.high and r.p < 1e-15
    s = verdict(Paired(b, a), claim("b", "a"))
    assert s.verdict == REVERSED and s.diff == pytest.approx(-r.diff)
    assert s.low == pytest.approx(-r.high) and s.high == pytest.approx(-r.low)


def test_a_small_difference_on_2000_images_is_noise() -> None:
    """+0.5 points from 25 against 15 discordant images: p = 0.15, the interval spans 0."""
    label, good, bad = synthetic(n10=25, n01=15)
    r = verdict(Paired(good == label, bad == label), claim())
    assert r.verdict == NOISE and r.diff == pytest.approx(0.5)
    assert r.low < 0 < r.high and r.p == pytest.approx(mcnemar_exact(25, 15))


def test_mcnemar_and_newcombe_against_hand_values() -> None:
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 2**5)  # both tails of Binomial(5, 1/2) at the extreme
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 2) == pytest.approx(2 * sum(math.comb(12, i) for i in range(3)) / 2**12)
    # Large n: the score interval approaches the Wald interval of a paired difference.
    n11, n10, n01, n00 = 14000, 1200, 800, 4000
    n = n11 + n10 + n01 + n00
    d = (n10 - n01) / n
    se = math.sqrt((n10 + n01) - (n10 - n01) ** 2 / n) / n
    lo, hi = newcombe_paired(n11, n10, n01, n00)
    assert lo == pytest.approx(d - 1.96 * se, abs=3e-4) and hi == pytest.approx(d + 1.96 * se, abs=3e-4)
    # Small n: inside [-1, 1], around the estimate, wider than Wald's where that is degenerate.
    lo, hi = newcombe_paired(0, 3, 0, 0)
    assert -1 <= lo < 1.0 <= hi <= 1 and lo > 0


def fake_run(results: Path, row: str, seed: int, preds: Predictions | None, data: str = "fake") -> Path:
    """A finished run folder as `bvbench run` leaves it (the files the claims read)."""
    d = results / "claimy" / row / f"cpu-{data}-seed{seed}-{row}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"recipe": "claimy", "seed": seed}))
    top1 = None if preds is None else preds.accuracy
    RunDir(d).write_metrics(Metrics.of({"recipe": "claimy", "row": row, "run_id": d.name, "profile": "cpu",
                                        "seed": seed, "data": {"name": data}, "top1": top1}))
    if preds is not None:
        write_predictions(d / FILENAME, preds)
    (d / ".done").write_text("done\n")
    return d


def predictions(label: np.ndarray, top1: np.ndarray, index: np.ndarray, order: np.ndarray | None = None) -> Predictions:
    o = np.arange(len(label)) if order is None else order
    return Predictions(index[o], label[o].astype(np.int16), top1[o].astype(np.int16))


def test_claims_from_run_folders_pair_by_image_and_seed(tmp_path: Path, cli) -> None:
    """Two seeds on different test images (as per-seed test subsets are): pooled over 4000 pairs, each seed's
    difference listed; one file stored in another order is still paired by image index."""
    (tmp_path / "claimy.yaml").write_text(RECIPE)
    rec = load_recipe(str(tmp_path / "claimy.yaml"))
    res = tmp_path / "results"
    for seed, (n10, n01), first in [(0, (120, 20), 0), (1, (80, 20), 5000)]:
        label, good, bad = synthetic(n10=n10, n01=n01, seed=seed)
        index = np.arange(first, first + N)
        shuffled = np.random.default_rng(seed).permutation(N)
        fake_run(res, "better", seed, predictions(label, good, index, shuffled))
        fake_run(res, "worse", seed, predictions(label, bad, index))
        fake_run(res, "twin", seed, predictions(label, bad, index))
    fake_run(res, "old", 0, None)
    got = {(r.claim.better, r.claim.worse): r for r in build_claims(rec, res)}
    main = got[("better", "worse")]
    assert main.verdict == HOLDS and main.n == 2 * N
    assert main.diff == pytest.approx(100 * (100 + 60) / (2 * N))  # +4.0 pooled
    assert main.seed_diffs == pytest.approx({0: 5.0, 1: 3.0}) and main.seed_std == pytest.approx(math.sqrt(2))
    assert main.paper_diff == pytest.approx(5.0)
    assert got[("worse", "better")].verdict == REVERSED
    assert got[("twin", "worse")].verdict == NOISE and got[("twin", "worse")].diff == 0
    assert got[("better", "old")].verdict.startswith(NO_PREDICTIONS)
    assert got[("better", "never")].verdict == "not run (never)"
    assert got[("better", "cnn")].verdict == "not run (cnn: reference)"

    md = claims_markdown("claimy", list(got.values()))
    assert "better > worse (headline)" in md and "| holds" in md and "0: +5.00, 1: +3.00 (sd 1.41)" in md
    code, out, err = cli("table", str(tmp_path / "claimy.yaml"), "--results", str(res), "--format", "md")
    assert code == 0, err
    assert out.index("### claimy — Claims") > out.index("### claimy — Table 1")
    assert "reversed" in out and "within noise" in out and (res / "claimy" / "claims.csv").exists()


def test_runs_on_different_data_sets_are_not_compared(tmp_path: Path) -> None:
    (tmp_path / "claimy.yaml").write_text(RECIPE)
    rec = load_recipe(str(tmp_path / "claimy.yaml"))
    res = tmp_path / "results"
    label, good, bad = synthetic()
    fake_run(res, "better", 0, predictions(label, good, np.arange(N)), data="cifar10")
    fake_run(res, "worse", 0, predictions(label, bad, np.arange(N)), data="cifar100")
    (first,) = [r for r in build_claims(rec, res) if (r.claim.better, r.claim.worse) == ("better", "worse")]
    assert first.verdict == "not comparable (different data sets)" and first.diff is None


@pytest.mark.parametrize("bad, message", [
    ("{better: better, worse: wrose, cites: T}", "'wrose' is not a row. Did you mean: worse?"),
    ("{better: better, worse: better, cites: T}", "compares a row with itself"),
    ("{better: better, worse: worse}", "cites"),
])
def test_a_bad_claim_is_one_line_exit_2(tmp_path: Path, cli, bad: str, message: str) -> None:
    text = RECIPE.replace('  - {better: better, worse: worse, cites: "Table 1", headline: true}', f"  - {bad}")
    (tmp_path / "claimy.yaml").write_text(text)
    for cmd in ("validate", "table"):
        code, out, err = cli(cmd, str(tmp_path / "claimy.yaml"), "--results", str(tmp_path)) if cmd == "table" \
            else cli(cmd, str(tmp_path / "claimy.yaml"))
        assert code == 2, (cmd, out, err)
        assert message in out + err and "Traceback" not in out + err


def test_results_readme_shows_the_claims_section(tmp_path: Path) -> None:
    from bvbench.report.readme import write_readme

    res = tmp_path / "results"
    write_claims(build_claims(load_recipe("quickstart"), res, "cpu"), res, "quickstart")
    text = write_readme(res, [{"recipe": "quickstart", "status": "finished"}]).read_text()
    assert "#### quickstart — Claims" in text and "bitnet158 > bitnet (headline)" in text
    assert "not run (bitnet158)" in text and "(quickstart/claims.csv)" in text
