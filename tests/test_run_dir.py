"""RunDir reads a run folder through typed records, with one clear error per failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from bvbench.errors import BvbenchError
from bvbench.quant import LSQ
from bvbench.results import Metrics, RunDir


def test_metrics_round_trip_keeps_keys_and_order(tmp_path: Path) -> None:
    record = {"recipe": "r", "row": "fp", "run_id": "x", "top1": 0.5, "blocks": [{"attn_bops": 1.0}],
              "data": {"name": "fake", "display": "Fake"}, "seed": 0}
    RunDir(tmp_path).write_metrics(Metrics.of(record))
    assert list(json.loads((tmp_path / "metrics.json").read_text())) == list(record)
    m = RunDir(tmp_path).metrics()
    assert m.top1 == 0.5 and m.data.display == "Fake" and m.value("blocks") == [{"attn_bops": 1.0}]
    assert m.value("data.name") == "fake" and m.value("nothing") is None


def test_run_dir_errors(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    with pytest.raises(BvbenchError, match="not a bvbench run folder"):
        rd.config()
    with pytest.raises(BvbenchError, match="no metrics.json"):
        rd.metrics()
    with pytest.raises(BvbenchError, match="no checkpoint.pt"):
        rd.checkpoint()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"recipe": "r"}))
    with pytest.raises(BvbenchError, match="has no `row:`"):
        rd.config()
    (tmp_path / "metrics.json").write_text("[1, 2")
    with pytest.raises(BvbenchError, match="not a bvbench metrics record"):
        rd.metrics()


def test_lsq_step_times_codes_is_its_output() -> None:
    torch.manual_seed(0)
    q = LSQ(bits=8, kind="weight", num_channels=4)
    w = torch.randn(4, 6)
    out = q(w).detach()
    step = q.step(w)
    codes = torch.round(out / step)
    assert torch.equal(codes * step, out) and codes.abs().max() <= 128
