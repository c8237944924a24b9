"""A verdict for every ordering a paper claims (recipe `claims:`), from the two rows' paired per-image predictions.

For each claim `better > worse` both rows' finished runs are paired by seed and, within a seed, by test image
(`predictions.npz`: the test-split index). Pooled over the seeds both rows ran: the top-1 difference in % points,
its 95 % interval (Newcombe's hybrid score interval for paired proportions, 1998, method 10) and the exact
McNemar test on the discordant images (two-sided). Verdict: `holds` (p < 0.05, better ahead), `reversed`
(p < 0.05, worse ahead), else `within noise`; rows that did not run or kept no predictions say so.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bvbench.errors import BvbenchError
from bvbench.evaluate.predictions import FILENAME, read_predictions
from bvbench.recipes.schema import UNITS, Claim, Recipe
from bvbench.report.table import MISSING, latest_runs
from bvbench.results import Metrics, atomic_write_text

ALPHA = 0.05
Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
HOLDS, REVERSED, NOISE = "holds", "reversed", "within noise"
VERDICTS = (HOLDS, REVERSED, NOISE)
NOT_RUN, NO_PREDICTIONS = "not run", "no predictions (rerun)"


# ------------------------------------------------------------------------------------------------ statistics


def mcnemar_exact(n10: int, n01: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs split as Binomial(n10 + n01, 1/2)."""
    m = n10 + n01
    if m == 0:
        return 1.0
    k = min(n10, n01)
    return min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m)


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion x / n."""
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_paired(n11: int, n10: int, n01: int, n00: int, z: float = Z95) -> tuple[float, float]:
    """Interval of p1 - p2 for paired proportions (Newcombe 1998, method 10): n10 = only the first right,
    n01 = only the second right; from the two Wilson intervals and the (corrected) phi of the 2x2 table."""
    n = n11 + n10 + n01 + n00
    x1, x2 = n11 + n10, n11 + n01
    p1, p2 = x1 / n, x2 / n
    l1, u1 = wilson(x1, n, z)
    l2, u2 = wilson(x2, n, z)
    margins = (n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)
    cross = n11 * n00 - n10 * n01  # a positive association is shrunk by n/2 (Newcombe's phi for method 10)
    cross = max(cross - n / 2, 0.0) if cross > 0 else cross
    phi = cross / math.sqrt(margins) if margins else 0.0
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    d = p1 - p2
    return max(-1.0, d - below), min(1.0, d + above)


@dataclass
class Paired:
    """Top-1 right/wrong of two rows on the same images (pooled over seeds), and each seed's difference."""

    better: np.ndarray  # bool [N]
    worse: np.ndarray  # bool [N]
    seed_diffs: dict[Any, float] = field(default_factory=dict)  # seed -> difference in % points


@dataclass
class ClaimResult:
    claim: Claim
    verdict: str  # holds | reversed | within noise | not run | no predictions (rerun) | not comparable (...)
    paper_diff: float | None = None  # % points, from the rows' paper values
    diff: float | None = None  # % points, better - worse
    low: float | None = None
    high: float | None = None
    p: float | None = None
    n: int = 0  # paired images (all seeds together)
    seed_diffs: dict[Any, float] = field(default_factory=dict)

    @property
    def seed_std(self) -> float | None:
        vals = list(self.seed_diffs.values())
        return statistics.stdev(vals) if len(vals) > 1 else None


def verdict(paired: Paired, claim: Claim, paper_diff: float | None = None) -> ClaimResult:
    """The difference, interval, McNemar p and verdict of paired right/wrong vectors."""
    a, b = paired.better.astype(bool), paired.worse.astype(bool)
    n11, n10 = int((a & b).sum()), int((a & ~b).sum())
    n01, n00 = int((~a & b).sum()), int((~a & ~b).sum())
    n = len(a)
    lo, hi = newcombe_paired(n11, n10, n01, n00)
    p = mcnemar_exact(n10, n01)
    diff = 100.0 * (n10 - n01) / n
    word = NOISE if p >= ALPHA else HOLDS if n10 > n01 else REVERSED
    return ClaimResult(claim, word, paper_diff, diff, 100 * lo, 100 * hi, p, n, dict(paired.seed_diffs))


# ------------------------------------------------------------------------------------------------ pairing


def _pair_seed(better: Path, worse: Path) -> tuple[np.ndarray, np.ndarray] | str:
    """Right/wrong of both runs on their common test images, or why they cannot be paired."""
    pb, pw = read_predictions(better), read_predictions(worse)
    common, ib, iw = np.intersect1d(pb.index, pw.index, assume_unique=True, return_indices=True)
    if not len(common):
        return "not comparable (no common test images)"
    if not np.array_equal(pb.label[ib], pw.label[iw]):
        return "not comparable (labels differ on the same images)"
    return pb.correct[ib], pw.correct[iw]


def _runs(recipe: Recipe, results: Path, row: str, profile: str | None) -> list[Metrics] | str:
    if recipe.row(row).status != "run":
        return f"{NOT_RUN} ({row}: {recipe.row(row).status})"
    runs = latest_runs(results, recipe.name, row, profile)
    return runs or f"{NOT_RUN} ({row})"


def pair_runs(recipe: Recipe, results: Path, claim: Claim, profile: str | None = None) -> Paired | str:
    """The claim's two rows paired on each seed both ran (one profile, one data set), or why not."""
    rb = _runs(recipe, results, claim.better, profile)
    if isinstance(rb, str):
        return rb
    rw = _runs(recipe, results, claim.worse, profile or rb[-1].profile)
    if isinstance(rw, str):
        return rw
    worse_by_seed = {m.seed: m for m in rw}
    pairs = [(mb, worse_by_seed[mb.seed]) for mb in rb if mb.seed in worse_by_seed]
    if not pairs:
        return "not comparable (no seed both rows ran)"
    if any(mb.data.name != mw.data.name for mb, mw in pairs):
        return "not comparable (different data sets)"
    folder = results / recipe.name
    paths = [(folder / claim.better / str(mb.run_id) / FILENAME, folder / claim.worse / str(mw.run_id) / FILENAME)
             for mb, mw in pairs]
    missing = sorted({p.parent.parent.name for pair in paths for p in pair if not p.is_file()})
    if missing:
        return f"{NO_PREDICTIONS}: {', '.join(missing)}"
    better, worse, diffs = [], [], {}
    for (mb, _), (path_b, path_w) in zip(pairs, paths, strict=True):
        got = _pair_seed(path_b, path_w)
        if isinstance(got, str):
            return got
        better.append(got[0])
        worse.append(got[1])
        diffs[mb.seed] = 100.0 * (got[0].mean() - got[1].mean())
    return Paired(np.concatenate(better), np.concatenate(worse), diffs)


def paper_diff(recipe: Recipe, claim: Claim) -> float | None:
    """better - worse as the paper printed top-1, in % points (None when either value is missing)."""
    vals = []
    for name in (claim.better, claim.worse):
        row = recipe.row(name)
        v = row.paper.get("top1")
        cols = [c for c in recipe.paper.table(str(row.table)).columns if c.key == "top1"]
        if not isinstance(v, int | float) or isinstance(v, bool) or not cols:
            return None
        vals.append(float(v) * 100.0 / UNITS[cols[0].unit])
    return vals[0] - vals[1]


def build_claims(recipe: Recipe, results: Path, profile: str | None = None) -> list[ClaimResult]:
    """One result per claim of the recipe, in the recipe's order."""
    out = []
    for c in recipe.claims:
        ref = paper_diff(recipe, c)
        try:
            got = pair_runs(recipe, results, c, profile)
        except BvbenchError as e:  # a damaged predictions file: said in the verdict, the others still shown
            got = f"{NO_PREDICTIONS}: {e}"
        out.append(ClaimResult(c, got, ref) if isinstance(got, str) else verdict(got, c, ref))
    return out


# ------------------------------------------------------------------------------------------------ rendering

HEADER = ["Claim", "Cites", "Paper Δ", "Ours Δ", "95 % interval", "McNemar p", "Images", "Seeds (Δ each)",
          "Verdict"]
NOTE = ("Δ = top-1 of the first row − the second, in % points. Ours: on the same test images (paired by seed and "
        "image, pooled over the seeds both rows ran); 95 % interval: Newcombe's score interval for paired "
        "proportions; verdict by the exact McNemar test on the images only one row gets right (two-sided, "
        f"α = {ALPHA:g}): holds, reversed, or within noise. Seeds: each seed's Δ and their sample std.")


def _signed(v: float | None, places: int = 2) -> str:
    return MISSING if v is None else f"{v:+.{places}f}"


def _seeds(r: ClaimResult) -> str:
    if not r.seed_diffs:
        return MISSING
    each = ", ".join(f"{s}: {d:+.2f}" for s, d in r.seed_diffs.items())
    std = r.seed_std
    return each + (f" (sd {std:.2f})" if std is not None else "")


def claims_body(results: list[ClaimResult]) -> list[list[str]]:
    out = []
    for r in results:
        measured = r.diff is not None
        out.append([f"{r.claim.better} > {r.claim.worse}" + (" (headline)" if r.claim.headline else ""),
                    r.claim.cites, _signed(r.paper_diff), _signed(r.diff),
                    f"[{r.low:+.2f}, {r.high:+.2f}]" if measured else MISSING,
                    f"{r.p:.2g}" if r.p is not None else MISSING, str(r.n) if measured else MISSING,
                    _seeds(r), r.verdict])
    return out


def _escape(s: str) -> str:
    return s.replace("|", "\\|")


def claims_markdown(recipe: str, results: list[ClaimResult]) -> str:
    """A "Claims" section: one line per claim, then how it was judged."""
    from tabulate import tabulate

    if not results:
        return ""
    body = [[_escape(v) for v in line] for line in claims_body(results)]
    table = tabulate(body, headers=HEADER, tablefmt="github", disable_numparse=True)
    return f"### {recipe} — Claims\n\n{table}\n\n_{NOTE}_\n"


def claims_csv(recipe: str, results: list[ClaimResult]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["recipe", "better", "worse", "cites", "headline", "paper_diff_pp", "diff_pp", "ci_low_pp",
                "ci_high_pp", "mcnemar_p", "n_images", "seeds", "seed_diffs_pp", "seed_std_pp", "verdict"])
    for r in results:
        num = ["" if v is None else f"{v:.6g}" for v in (r.paper_diff, r.diff, r.low, r.high, r.p)]
        w.writerow([recipe, r.claim.better, r.claim.worse, r.claim.cites, r.claim.headline, *num,
                    r.n if r.diff is not None else "", ";".join(map(str, r.seed_diffs)),
                    ";".join(f"{d:.6g}" for d in r.seed_diffs.values()),
                    "" if r.seed_std is None else f"{r.seed_std:.6g}", r.verdict])
    return buf.getvalue()


def claims_rich(recipe: str, results: list[ClaimResult]) -> Any:
    from rich.table import Table as RichTable
    from rich.text import Text

    rt = RichTable(title=f"{recipe} — Claims", caption=NOTE, caption_justify="left", title_justify="left")
    for h in HEADER:
        rt.add_column(h, justify="left" if h in ("Claim", "Cites", "Verdict", "Seeds (Δ each)") else "right",
                      overflow="fold")
    colour = {HOLDS: "green", REVERSED: "red", NOISE: "yellow"}
    for r, line in zip(results, claims_body(results), strict=True):
        cells = [Text(v) for v in line]
        cells[-1].stylize(colour.get(r.verdict, "dim"))
        rt.add_row(*cells)
    return rt


def write_claims(results: list[ClaimResult], folder: Path, recipe: str) -> tuple[Path, Path] | None:
    """results/<recipe>/claims.md and claims.csv (atomically); nothing for a recipe without claims."""
    if not results:
        return None
    d = folder / recipe
    d.mkdir(parents=True, exist_ok=True)
    md, cs = d / "claims.md", d / "claims.csv"
    atomic_write_text(md, claims_markdown(recipe, results))
    atomic_write_text(cs, claims_csv(recipe, results))
    return md, cs
