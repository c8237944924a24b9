"""`make nightly` (python -m bvbench.nightly): which data each recipe runs on, and the report it leaves."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from bvbench import nightly
from bvbench.data.datasets import CIFAR10_CLASSES
from bvbench.runner.identity import RunContext


def fake_cifar10_jpeg(root: Path) -> Path:
    for split in ("train", "test"):
        for c in CIFAR10_CLASSES:
            d = root / "cifar10-jpeg" / split / c
            d.mkdir(parents=True)
            Image.new("RGB", (32, 32), (10, 20, 30)).save(d / "0.jpg")
    return root


def test_recipes_on_missing_data_fall_back_to_cifar10_and_say_so(tmp_path: Path) -> None:
    root = fake_cifar10_jpeg(tmp_path / "data")
    plan = {e["recipe"]: e for e in nightly.plan(["quickstart", "bitnet-vit-cifar10", "gsb-cifar100"], root)}
    assert plan["quickstart"]["data"] == "digits" and plan["quickstart"]["sets"] == []
    assert plan["bitnet-vit-cifar10"]["data"] == "cifar10" and plan["bitnet-vit-cifar10"]["override"] is None
    gsb = plan["gsb-cifar100"]
    assert gsb["data"] == "cifar10" and gsb["sets"] == ["data.name=cifar10"]
    assert "cifar100 is not present" in gsb["override"] and "CIFAR-100 not found" in gsb["override"]


def test_without_cifar10_a_recipe_on_missing_data_is_skipped_with_the_reason(tmp_path: Path) -> None:
    (e,) = nightly.plan(["gsb-cifar100"], tmp_path / "empty")
    assert e["status"] == "skipped" and "CIFAR-100 not found" in e["reason"] and "CIFAR-10 not found" in e["reason"]


def test_report_only_writes_status_and_readme_and_trains_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "res"
    code = nightly.main(["--report-only", "--out", str(out), "--data-dir", str(tmp_path / "none"),
                         "--only", "quickstart,gsb-cifar100"])
    assert code == 0
    status = json.loads((out / "nightly.json").read_text())
    got = {e["recipe"]: e["status"] for e in status["recipes"]}
    # no data set is present: the report still lists every recipe by what is on disk (nothing yet), none skipped
    gsb_rows = nightly.finished_rows("gsb-cifar100", out, [], RunContext())[1]
    assert got == {"quickstart": "partial (0 of 4 rows finished)",
                   "gsb-cifar100": f"partial (0 of {gsb_rows} rows finished)"} and gsb_rows > 4
    readme = (out / "README.md").read_text()
    assert "# bvbench results" in readme and "### quickstart" in readme and "### gsb-cifar100" in readme
    assert "not found" not in readme
    assert "No finished runs yet" in (out / "summary.md").read_text()  # the summary is always rebuilt
    assert "[summary.md](summary.md)" in readme
    assert not any(p.is_dir() for p in out.iterdir())  # no run folders


def test_unknown_recipe_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert nightly.main(["--only", "gsb-cifar10O", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --only: unknown recipe 'gsb-cifar10O'") and "gsb-cifar100" in err
    assert "Traceback" not in err


def _finish(results: Path, name: str, sets: list[str]) -> int:
    """Mark every trainable cpu-profile row of `name` under the configuration `sets` finished (a `.done`)."""
    from bvbench.recipes import load_recipe
    from bvbench.results import DONE
    from bvbench.runner import run_id

    rec = load_recipe(name, "cpu", sets)
    rows = [r for r in rec.rows if r.status == "run"]
    for r in rows:
        d = results / rec.name / r.name / run_id(rec, r, rec.seed, RunContext())
        d.mkdir(parents=True)
        (d / DONE).write_text("x\n")
    return len(rows)


def test_report_only_reads_the_configuration_on_disk_without_any_data(tmp_path: Path) -> None:
    res = tmp_path / "res"
    _finish(res, "gsb-cifar100", ["data.name=cifar10"])  # the nightly ran it on the CIFAR-10 fallback
    n = _finish(res, "quickstart", [])
    plan = {e["recipe"]: e for e in nightly.plan_from_disk(["quickstart", "gsb-cifar100", "bitvit-cifar10"], res,
                                                                 RunContext())}
    assert plan["quickstart"]["status"] == "finished" and plan["quickstart"]["sets"] == [] and n == 4
    gsb = plan["gsb-cifar100"]
    assert gsb["status"] == "finished" and gsb["sets"] == ["data.name=cifar10"] and gsb["data"] == "cifar10"
    assert "data.name=cifar10" in gsb["override"]
    assert plan["bitvit-cifar10"]["status"].startswith("partial (0 of ")
