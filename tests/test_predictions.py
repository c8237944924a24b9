"""predictions.npz: written by every finished run (here a smoke run on fake data), read back without pickles, and
consistent with the run's metrics.json."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from bvbench.data import build_dataset
from bvbench.errors import BvbenchError
from bvbench.evaluate.predictions import FILENAME, read_predictions
from bvbench.recipes import load_recipe


def test_a_smoke_run_writes_predictions_that_read_back(cli, tmp_path: Path) -> None:
    out = tmp_path / "res"
    code, _, err = cli("run", "quickstart", "--profile", "smoke", "--set", "data.name=fake", "--rows", "fp",
                       "--out", str(out), "--device", "cpu")
    assert code == 0, err
    (rd,) = (out / "quickstart" / "fp").iterdir()
    m = json.loads((rd / "metrics.json").read_text())
    p = read_predictions(rd / FILENAME)
    n = m["data"]["test_size"]
    assert len(p.index) == len(p.label) == len(p.top1) == n and p.top5 is not None and p.top5.shape == (n, 5)
    assert all(a.dtype.kind == "i" for a in (p.index, p.label, p.top1, p.top5))
    assert p.accuracy == pytest.approx(m["top1"], abs=1e-6)
    assert (p.top5 == p.label[:, None]).any(axis=1).mean() == pytest.approx(m["top5"], abs=1e-6)
    assert np.array_equal(p.top5[:, 0], p.top1)
    # the index is the image's place in the test split: its labels are the data set's
    rec = load_recipe("quickstart", "smoke", ["data.name=fake"])
    ds, _ = build_dataset(rec.row("fp").data, tmp_path, "test")
    assert len(np.unique(p.index)) == n and np.array_equal(ds.source.targets[p.index], p.label)
    assert not list(rd.glob("*.tmp")) and not list(rd.glob(".predictions*"))  # written atomically

    code, text, err = cli("table", "quickstart", "--results", str(out), "--format", "md")
    assert code == 0, err
    assert "quickstart — Claims" in text and "not run (bitnet)" in text


def test_pickled_or_broken_files_are_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, index=np.array([{"a": 1}], dtype=object), label=np.array([0]), top1=np.array([0]))
    (tmp_path / "pickled.npz").write_bytes(buf.getvalue())
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not a zip")
    buf = io.BytesIO()
    np.savez(buf, index=np.arange(3), label=np.arange(2), top1=np.arange(3))
    (tmp_path / "ragged.npz").write_bytes(buf.getvalue())
    for name in ("pickled", "broken", "ragged", "missing"):
        with pytest.raises(BvbenchError, match="predictions"):
            read_predictions(tmp_path / f"{name}.npz")
