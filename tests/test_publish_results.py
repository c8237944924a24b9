"""scripts/publish-results.sh (the nightly's last step): results/ as a `results` branch of a real git remote."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "publish-results.sh"
pytestmark = pytest.mark.skipif(shutil.which("git") is None or shutil.which("bash") is None,
                                reason="needs git and bash")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def publish(repo: Path, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(results)], cwd=repo, capture_output=True, text=True, timeout=60)


def test_results_become_a_branch_without_checkpoints_and_the_checkout_is_untouched(tmp_path: Path) -> None:
    remote, repo, res = tmp_path / "remote.git", tmp_path / "repo", tmp_path / "repo" / "results"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(tmp_path, "init", "-q", str(repo))
    git(repo, "remote", "add", "origin", str(remote))
    run = res / "quickstart" / "fp" / "run1"
    run.mkdir(parents=True)
    (res / "README.md").write_text("# bvbench results\n")
    (res / "quickstart" / "table.md").write_text("| a |\n")
    (run / "metrics.json").write_text("{}\n")
    (run / "checkpoint.pt").write_bytes(b"weights")
    (run / "confusion.png").write_bytes(b"png")
    (res / "quickstart" / "fp" / ".run1.lock").write_text("{}")

    first = publish(repo, res)
    assert first.returncode == 0, first.stderr
    files = set(git(remote, "ls-tree", "-r", "--name-only", "results").splitlines())
    assert files == {"README.md", "quickstart/table.md", "quickstart/fp/run1/metrics.json"}
    assert git(repo, "status", "--porcelain") == "?? results/"  # nothing staged in the checkout
    assert publish(repo, res).stdout.startswith("publish-results: origin/results already holds")

    (res / "README.md").write_text("# bvbench results\nnight 2\n")
    assert publish(repo, res).returncode == 0
    log = git(remote, "log", "--format=%s", "results").splitlines()
    assert len(log) == 2 and all(s.startswith("results: nightly of ") for s in log)
    assert git(remote, "show", "results:README.md").endswith("night 2")


def test_without_a_readme_nothing_is_published(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    git(tmp_path, "init", "-q")
    p = publish(tmp_path, tmp_path / "results")
    assert p.returncode == 2 and "README.md is missing" in p.stderr
