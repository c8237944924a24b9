"""`bvbench run --logger csv|tensorboard|wandb`: what each backend writes, read back with its own reader."""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bvbench.train.loggers import CsvLogger


def _run_dir(out: Path) -> Path:
    (rd,) = [p for p in (out / "tiny" / "fp").iterdir() if p.is_dir()]  # not the lock file of a killed run
    return rd


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_csv_and_tensorboard_logs_are_read_back(cli, tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    code, _, stderr = cli("run", str(tiny_recipe), "--profile", "smoke", "--set", "train.epochs=2", "--out",
                          str(out), "--device", "cpu", "--logger", "csv", "--logger", "tensorboard")
    assert code == 0, stderr
    rd = _run_dir(out)
    history = _rows(rd / "history.csv")  # written as before, whatever the loggers
    steps, epochs = _rows(rd / "logs" / "steps.csv"), _rows(rd / "logs" / "epochs.csv")
    assert [int(s["step"]) for s in steps] == [1, 2, 3, 4]  # 2 epochs x max_steps_per_epoch 2
    assert [s["epoch"] for s in steps] == ["1", "1", "2", "2"]
    assert [int(e["step"]) for e in epochs] == [2, 4]
    for i, h in enumerate(history):  # the epoch's train loss is the mean of its steps' losses
        assert {k: epochs[i][k] for k in h} == h
        mean = sum(float(s["loss"]) for s in steps[2 * i: 2 * i + 2]) / 2
        assert float(h["train_loss"]) == pytest.approx(mean, rel=1e-4)
    assert all(float(s["images_per_s"]) > 0 and float(s["lr"]) > 0 for s in steps)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(rd / "logs" / "tensorboard"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_s", "epoch/train_loss", "epoch/test_top1",
            "final/top1", "final/params"} <= tags
    loss = ea.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]
    assert [e.value for e in loss] == pytest.approx([float(s["loss"]) for s in steps], rel=1e-4)
    test_top1 = ea.Scalars("epoch/test_top1")
    assert [e.step for e in test_top1] == [2, 4]
    assert [e.value for e in test_top1] == pytest.approx([float(h["test_top1"]) for h in history], rel=1e-4)
    metrics = json.loads((rd / "metrics.json").read_text())
    assert ea.Scalars("final/top1")[0].value == pytest.approx(metrics["top1"])
    texts = {t: ea.Tensors(t)[0].tensor_proto.string_val[0].decode() for t in ea.Tags()["tensors"]}
    assert rd.name in texts["config/text_summary"] and "embed_dim: 32" in texts["config/text_summary"]
    assert '"torch"' in texts["environment/text_summary"]


def test_csv_logger_replaces_the_steps_a_resumed_run_repeats(tmp_path: Path) -> None:
    lg = CsvLogger(tmp_path)
    lg.start(0)
    for step in range(1, 6):
        lg.log_step(step, {"stage": "main", "epoch": 1, "batch": step, "loss": 10.0 - step})
    lg.log_epoch(5, {"stage": "main", "epoch": 1, "train_loss": 7.0})
    lg.close()
    lg = CsvLogger(tmp_path)
    lg.start(3)  # the checkpoint was taken after step 3; steps 4 and 5 run again
    lg.log_step(4, {"stage": "main", "epoch": 1, "batch": 4, "loss": 0.5})
    lg.close()
    steps = _rows(tmp_path / "steps.csv")
    assert [(int(s["step"]), float(s["loss"])) for s in steps] == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 0.5)]
    assert _rows(tmp_path / "epochs.csv") == []


def _scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder))
    ea.Reload()
    return [(e.step, e.value) for e in ea.Scalars(tag)]


@pytest.mark.slow
def test_a_killed_and_resumed_run_logs_every_step_once(tiny_recipe: Path, tmp_path: Path) -> None:
    """SIGKILL after a mid-epoch checkpoint, then --resume: the logs equal those of an uninterrupted run."""
    args = ["run", str(tiny_recipe), "--device", "cpu", "--set", "train.checkpoint_every=2", "--set",
            "train.max_steps_per_epoch=6", "--logger", "csv", "--logger", "tensorboard"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run([sys.executable, "-m", "bvbench", *args, "--out", str(tmp_path / "a")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "bvbench", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    steps = out / "tiny" / "fp"
    while time.monotonic() < deadline:  # killed once epoch 1 is logged and a step checkpoint of epoch 2 exists
        logged = list(steps.glob("*/logs/epochs.csv"))
        if logged and len(_rows(logged[0])) == 1 and len(_rows(logged[0].with_name("steps.csv"))) >= 8:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=60)
    rd, ref_rd = _run_dir(out), _run_dir(tmp_path / "a")
    assert not (rd / ".done").exists()
    resumed = subprocess.run([sys.executable, "-m", "bvbench", *args, "--out", str(out), "--resume"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr

    def strip(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        # Not the timings; nor an epoch's train loss and accuracy: after a mid-epoch resume they average the
        # epoch's remaining steps only, as history.csv does (its per-step losses are compared in steps.csv).
        drop = ("images_per_s", "epoch_time_s", "train_loss", "train_top1")
        return [{k: v for k, v in r.items() if k not in drop} for r in rows]

    for name in ("steps.csv", "epochs.csv"):
        assert strip(_rows(rd / "logs" / name)) == strip(_rows(ref_rd / "logs" / name))
    got, want = _scalars(rd / "logs" / "tensorboard", "train/loss"), _scalars(ref_rd / "logs" / "tensorboard",
                                                                              "train/loss")
    assert [s for s, _ in got] == [s for s, _ in want] == list(range(1, len(want) + 1))
    assert got == want


def test_a_missing_backend_is_one_line_naming_the_pip_command(cli, tiny_recipe: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: `import wandb` raises ImportError
    out = tmp_path / "res"
    code, _, stderr = cli("run", str(tiny_recipe), "--profile", "smoke", "--out", str(out), "--logger", "csv",
                          "--logger", "wandb")
    assert code == 2
    assert stderr.strip() == ("error: --logger wandb needs the wandb package: pip install 'bvbench[wandb]'")
    assert not out.exists()  # nothing trained, nothing written
    code, _, stderr = cli("run", str(tiny_recipe), "--out", str(out), "--logger", "mlflow")
    assert code == 2 and "mlflow" in stderr and "Traceback" not in stderr


def _wandb_records(path: Path) -> list[object]:
    """The protobuf records of a .wandb file (LevelDB log framing: 7-byte file header, 32 KiB blocks,
    7-byte record headers: crc, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, out = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos: pos + 7])
        pos += 7
        if kind == 0 and n == 0:  # zero padding to the end of the block
            pos += left - 7
            continue
        buf, pos = buf + data[pos: pos + n], pos + n
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def _key(item: object) -> str:
    """A history or summary item's key ("train/loss" is stored as the nested key [train, loss])."""
    return item.key or "/".join(item.nested_key)  # type: ignore[attr-defined]


def test_wandb_offline_run_is_read_back(tiny_recipe: Path, tmp_path: Path) -> None:
    pytest.importorskip("wandb", reason="wandb is not installed: pip install 'bvbench[wandb]'")
    out = tmp_path / "res"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bvbench", "run", str(tiny_recipe), "--profile", "smoke",
                           "--out", str(out), "--device", "cpu", "--logger", "wandb"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rd = _run_dir(out)
    (run_file,) = (rd / "logs" / "wandb").glob("offline-run-*/run-*.wandb")
    assert run_file.name == f"run-{(rd / 'logs' / 'wandb_id').read_text().strip()}.wandb"
    records = _wandb_records(run_file)
    history = [{_key(i): json.loads(i.value_json) for i in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]
    losses = {h["_step"]: h["train/loss"] for h in history if "train/loss" in h}
    steps = _rows(rd / "history.csv")
    assert sorted(losses) == [1, 2]
    assert sum(losses.values()) / 2 == pytest.approx(float(steps[0]["train_loss"]), rel=1e-4)
    assert any("epoch/test_top1" in h for h in history)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["run_id"] == rd.name and config["recipe"] == "tiny" and "packages" in config["environment"]
    summary = {_key(i): json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "summary"
               for i in r.summary.update}
    assert summary["final/top1"] == pytest.approx(json.loads((rd / "metrics.json").read_text())["top1"])
