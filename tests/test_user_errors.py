"""User errors from adversarial input (issue 12, item 7): each is exit code 2 and one line on stderr, no
traceback, and whatever was already written stays as it was. Real processes, so the exit code is the one a
shell sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parent.parent


def bvbench(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m bvbench ARGS` in a fresh process (this checkout first on the path)."""
    full = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "bvbench", *args], capture_output=True, text=True, cwd=cwd,
                          env=full, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Assert exit code 2, a single `error:` line on stderr naming every needle, and no traceback."""
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ---------------------------------------------------------------- absurd recipe values, caught at load


@pytest.mark.parametrize(
    ("setting", "needles"),
    [
        ("train.lr=.inf", ["train.lr", "finite"]),
        ("train.lr=.nan", ["train.lr", "finite"]),
        ("train.lr=50", ["train.lr", "less than or equal to 10"]),
        ("train.weight_decay=.inf", ["train.weight_decay", "finite"]),
        ("train.epochs=1e9", ["train.epochs", "less than or equal to 100000"]),
        ("seed=18446744073709551617", ["seed", "4294967295"]),
        ("seed=4294967296", ["seed", "4294967295"]),
        ("eval.topk=[0]", ["eval.topk", "positive integers"]),
        ("eval.topk=[5]", ["eval.topk", "including 1"]),
        ("model.num_heads=3", ["model.num_heads 3 does not divide model.embed_dim 32"]),
        ("model.img_size=32", ["model.img_size 32 differs from data.img_size 16"]),
    ],
)
def test_absurd_values_rejected_at_load(tiny_recipe: Path, setting: str, needles: list[str]) -> None:
    one_line_error(bvbench("show", str(tiny_recipe), "--set", setting), "tiny.yaml", *needles)


@pytest.mark.parametrize(("setting", "needle"), [
    ("train.lr=inf", "train.lr"),
    ("train.lr=nan", "train.lr"),
    ("train.weight_decay=inf", "train.weight_decay"),
    ("train.epochs=1000000000", "train.epochs"),
    ("eval.topk=[0]", "eval.topk"),
    ("eval.topk=[5]", "including 1"),
    ("seed=99999999999999999999", "seed"),
])
def test_absurd_values_are_rejected_before_anything_is_written(tiny_recipe: Path, tmp_path: Path, setting: str,
                                                               needle: str) -> None:
    out = tmp_path / "r"
    one_line_error(bvbench("run", str(tiny_recipe), "--profile", "smoke", "--set", setting, "--out", str(out)),
                   needle)
    assert not out.exists()  # rejected before anything was built or written


def test_seed_option_out_of_range(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    one_line_error(bvbench("run", str(tiny_recipe), "--out", str(out), "--seed", str(2**64 + 1)),
                   "--seed", "out of range", "4294967295")
    assert not out.exists()


def test_shapes_known_only_when_built(tiny_recipe: Path, tmp_path: Path) -> None:
    """A head count against timm's default width, and a data size against the model's default size."""
    out = tmp_path / "res"
    base = ["run", str(tiny_recipe), "--profile", "smoke", "--out", str(out), "--device", "cpu"]
    one_line_error(bvbench(*base, "--set", "model.embed_dim=null", "--set", "model.num_heads=5"),
                   "divisible by num_heads")
    one_line_error(bvbench(*base, "--set", "model.img_size=null"), "row 'fp'", "16x16", "224x224", "img_size")
    assert not [p for p in out.rglob("*") if p.is_file()]  # nothing written (rglob of a missing folder is empty)


# ---------------------------------------------------------------- a finished run to attack


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(recipe file, results folder) with one finished smoke run of the tiny recipe's `fp` row."""
    from tests.conftest import write_recipe

    base = tmp_path_factory.mktemp("finished")
    recipe = write_recipe(base)
    r = bvbench("run", str(recipe), "--profile", "smoke", "--out", str(base / "results"), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    return recipe, base / "results"


def copy_results(finished: tuple[Path, Path], dst: Path) -> tuple[Path, Path]:
    """A private copy of the finished results: (results folder, the run folder in it)."""
    import shutil

    res = dst / "results"
    shutil.copytree(finished[1], res)
    (run,) = (res / "tiny" / "fp").iterdir()
    return res, run


def file_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("variant", ["list", "no_row", "python_tag", "bad_field"])
def test_eval_of_a_bad_run_config(finished: tuple[Path, Path], tmp_path: Path, variant: str) -> None:
    _, run = copy_results(finished, tmp_path)
    cfg = run / "config.yaml"
    marker = tmp_path / "pwned"
    text = {
        "list": "- recipe: tiny\n- row: fp\n",
        "no_row": "recipe: tiny\nseed: 0\n",
        "python_tag": f"row: !!python/object/apply:os.system ['touch {marker}']\n",
        "bad_field": cfg.read_text().replace("batch_size: 32", "batch_size: many"),
    }[variant]
    assert text != cfg.read_text()
    cfg.write_text(text)
    needles = {"list": ["is a YAML list, not a mapping", "no `row:`"], "no_row": ["has no `row:`"],
               "python_tag": ["cannot be read", "YAML tag", "python/object/apply", "does not load"],
               "bad_field": ["row.train.batch_size", "integer"]}[variant]
    one_line_error(bvbench("eval", str(run), "--device", "cpu"), str(cfg), *needles)
    assert not marker.exists()


class _CreatesAFile:
    """Unpickling this calls open(path, "w"): a checkpoint that writes a file when loaded unsafely."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (self.path, "w")


def test_hostile_pickle_refused_by_eval_resume_and_export(finished: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    recipe, _ = finished
    res, run = copy_results(finished, tmp_path)
    marker = tmp_path / "pwned"
    good = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({**good, "fit": {"stage": 0}, "hook": _CreatesAFile(marker)}, run / "checkpoint.pt")
    evil = (run / "checkpoint.pt").read_bytes()
    torch.save({"hook": _CreatesAFile(tmp_path / "proof")}, tmp_path / "proof.pt")
    torch.load(tmp_path / "proof.pt", weights_only=False)  # the attack is real: an unsafe load writes the file
    assert (tmp_path / "proof").exists()
    for args in (["eval", str(run), "--device", "cpu"], ["export", str(run), "--out", str(tmp_path / "m.bvb")]):
        one_line_error(bvbench(*args), str(run / "checkpoint.pt"), "refused", "weights_only")
        assert not marker.exists() and not (tmp_path / "m.bvb").exists()
    (run / ".done").unlink()  # an unfinished run whose training checkpoint is the hostile file
    before = file_tree(res)
    r = bvbench("run", str(recipe), "--profile", "smoke", "--out", str(res), "--device", "cpu", "--resume")
    one_line_error(r, str(run / "checkpoint.pt"), "refused", "weights_only")
    assert not marker.exists()
    assert file_tree(res) == before and (run / "checkpoint.pt").read_bytes() == evil


# ---------------------------------------------------------------- a full disk


def test_full_disk_in_a_write_is_a_user_error(tmp_path: Path) -> None:
    """The kernel's own ENOSPC (writing /dev/full) through the wrapper the atomic writers carry."""
    from bvbench.errors import BvbenchError
    from bvbench.results import _user_error_when_disk_full

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    target = tmp_path / "metrics.json"
    target.write_text("old")

    @_user_error_when_disk_full
    def write(path: Path, data: bytes) -> None:
        with open("/dev/full", "wb") as f:
            f.write(data)
            f.flush()

    with pytest.raises(BvbenchError, match=f"no space left on {tmp_path}.*the previous metrics.json is kept"):
        write(target, b"new")
    assert target.read_text() == "old"


@pytest.mark.parametrize("free", [0, 2**40])
def test_torch_write_failure_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           free: int) -> None:
    """torch.save fails in C++ ("enforce fail at inline_container.cc") without an errno: with no free space left
    that is a full disk; otherwise the write failure itself is named. Either way the old file stays."""
    import shutil

    import torch

    from bvbench import results
    from bvbench.errors import BvbenchError

    def failing_save(obj: object, f: object) -> None:  # a path or an open file, as atomic_torch_save passes
        if isinstance(f, str | Path):
            Path(f).write_bytes(b"PK half a zip")
        else:
            f.write(b"PK half a zip")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    target = tmp_path / "checkpoint.pt"
    torch.save({"w": torch.ones(3)}, target)
    before = target.read_bytes()
    monkeypatch.setattr(results.torch, "save", failing_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(total=2**41, used=2**41 - free, free=free))
    expected = "no space left on" if free == 0 else "cannot write .*inline_container"
    with pytest.raises(BvbenchError, match=f"{expected}.*the previous checkpoint.pt is kept"):
        results.atomic_torch_save({"w": torch.zeros(3)}, target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    """A 600 KiB tmpfs: room for one training checkpoint of the tiny model, not for a second next to it."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_during_training_keeps_the_checkpoint_and_resumes(tiny_recipe: Path, tiny_tmpfs: Path) -> None:
    import torch

    out = tiny_tmpfs / "res"
    args = ["run", str(tiny_recipe), "--profile", "smoke", "--set", "train.epochs=3", "--out", str(out),
            "--device", "cpu"]
    one_line_error(bvbench(*args), "no space left on", "the previous checkpoint.pt is kept")
    (run,) = (out / "tiny" / "fp").iterdir()
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["fit"]["epoch"] == 1 and not (run / ".done").exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_tmpfs)], check=True)
    r = bvbench(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert (run / ".done").exists()


# ---------------------------------------------------------------- bad data


def cifar_jpeg(root: Path, per_class: int = 2) -> Path:
    """A CIFAR-10 JPEG copy, `root/cifar10-jpeg/{train,test}/<class>/N.jpg`, solid 32x32 images."""
    from PIL import Image

    from bvbench.data.datasets import CIFAR10_CLASSES

    base = root / "cifar10-jpeg"
    for split in ("train", "test"):
        for label, c in enumerate(CIFAR10_CLASSES):
            (base / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (32, 32), (20 * label, 100, 7 * i)).save(base / split / c / f"{i}.jpg")
    return base


def run_on_cifar(recipe: Path, data: Path, out: Path, *sets: str) -> subprocess.CompletedProcess[str]:
    args = ["run", str(recipe), "--profile", "smoke", "--data-dir", str(data), "--out", str(out), "--device", "cpu",
            "--set", "data.name=cifar10"]
    for s in sets:
        args += ["--set", s]
    return bvbench(*args)


def test_corrupt_image_names_the_file(tiny_recipe: Path, tmp_path: Path) -> None:
    base = cifar_jpeg(tmp_path / "data")
    bad = base / "test" / "dog" / "zzz.jpg"
    bad.write_text("this is not a JPEG")
    r = run_on_cifar(tiny_recipe, tmp_path / "data", tmp_path / "res", "data.num_workers=0")
    one_line_error(r, "corrupt or truncated image", str(bad))


def test_truncated_image_and_worker_errors_stay_one_line(tmp_path: Path) -> None:
    """A truncated JPEG read in a DataLoader worker: the main process gets the same error type with the same one
    line (the worker's traceback is not the message), and the error pickles."""
    import pickle

    from torch.utils.data import DataLoader

    from bvbench.data import build_dataset
    from bvbench.errors import BvbenchError, CorruptDataError
    from bvbench.recipes.schema import DataConfig

    base = cifar_jpeg(tmp_path)
    good = base / "train" / "cat" / "0.jpg"
    bad = base / "train" / "cat" / "1.jpg"
    bad.write_bytes(good.read_bytes()[:200])
    ds, _ = build_dataset(DataConfig(name="cifar10", img_size=16, num_workers=0), tmp_path, "train")
    with pytest.raises(CorruptDataError) as direct:
        list(DataLoader(ds, batch_size=4, num_workers=0))
    assert str(bad) in str(direct.value) and "\n" not in str(direct.value)
    copy = pickle.loads(pickle.dumps(direct.value))
    assert type(copy) is CorruptDataError and str(copy) == str(direct.value)
    with pytest.raises(BvbenchError) as worker:
        list(DataLoader(ds, batch_size=4, num_workers=1))
    assert type(worker.value) is CorruptDataError and str(worker.value) == str(direct.value)


def test_empty_class_folder_is_an_error(tiny_recipe: Path, tmp_path: Path) -> None:
    base = cifar_jpeg(tmp_path / "data")
    empty = base / "train" / "frog"
    for f in empty.iterdir():
        f.unlink()
    r = run_on_cifar(tiny_recipe, tmp_path / "data", tmp_path / "res", "data.num_workers=0")
    one_line_error(r, str(empty), "no images")
    assert not [p for p in (tmp_path / "res").rglob("*") if p.is_file()]  # nothing written (no lock left either)


def test_more_classes_than_the_data_set_has(tmp_path: Path) -> None:
    from bvbench.data import build_dataset
    from bvbench.errors import BvbenchError
    from bvbench.recipes.schema import DataConfig

    base = tmp_path / "tiny-imagenet-200"
    base.mkdir()
    (base / "wnids.txt").write_text("".join(f"n{i:08d}\n" for i in range(202)))
    with pytest.raises(BvbenchError, match="202 classes found, but Tiny ImageNet has 200"):
        build_dataset(DataConfig(name="tinyimagenet"), tmp_path, "train")


# ---------------------------------------------------------------- reports over broken results


@pytest.mark.parametrize("damage", ["metrics_garbage", "metrics_missing", "env_garbage"])
def test_one_broken_run_folder_does_not_break_table_or_plot(finished: tuple[Path, Path], tmp_path: Path,
                                                            damage: str) -> None:
    """A newer finished run of the same row whose files are damaged: table, table --summary and plot skip it
    with a warning naming it and still show the intact run."""
    import json
    import shutil
    import time

    recipe, _ = finished
    res, run = copy_results(finished, tmp_path)
    broken = run.with_name(run.name + "-r2")
    shutil.copytree(run, broken)
    later = time.time() + 60
    os.utime(broken / "config.yaml", (later, later))  # the newest run of the row
    {"metrics_garbage": lambda: (broken / "metrics.json").write_text("{not json"),
     "metrics_missing": lambda: (broken / "metrics.json").unlink(),
     "env_garbage": lambda: (broken / "env.json").write_text("[1, 2")}[damage]()
    top1 = f"{json.loads((run / 'metrics.json').read_text())['top1'] * 100:.2f}"
    for args in (["table", str(recipe), "--format", "md"], ["table", str(recipe), "--summary", "--format", "md"],
                 ["plot", str(recipe)]):
        r = bvbench(*args, "--results", str(res))
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)
        assert "warning" in r.stderr and str(broken) in r.stderr, (args, r.stderr)
        if args[0] == "table":
            assert top1 in r.stdout, r.stdout
    assert (res / "tiny" / "accuracy_vs_ops.png").is_file()


def test_table_out_under_a_file(finished: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, _ = finished
    res, _ = copy_results(finished, tmp_path)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    one_line_error(bvbench("table", str(recipe), "--results", str(res), "--out", str(blocker / "t.md")),
                   f"cannot write {blocker / 't.md'}", f"{blocker} is a file, not a folder")
    assert blocker.read_text() == "keep me"


# ---------------------------------------------------------------- a resumed run's training time


def test_train_time_counts_every_part_of_a_resumed_run(cli, tiny_recipe: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The first part trains slowly (0.1 s per step, 27 steps) until a SIGTERM; the resumed part is fast. The
    finished run's train_time_s must include the first part."""
    import json
    import signal
    import time

    import torch

    import bvbench.train.trainer as trainer_mod

    args = ["run", str(tiny_recipe), "--device", "cpu", "--out", str(tmp_path / "res"), "--set", "train.epochs=4",
            "--set", "train.batch_size=64"]
    real_lr_at, calls = trainer_mod.lr_at, {"n": 0}

    def slow_then_signal(*a: object, **k: object) -> float:
        calls["n"] += 1
        time.sleep(0.1)
        if calls["n"] == 27:  # epoch 4, step 3 of 8
            os.kill(os.getpid(), signal.SIGTERM)
        return real_lr_at(*a, **k)

    monkeypatch.setattr(trainer_mod, "lr_at", slow_then_signal)
    code, _, err = cli(*args)
    assert code != 0 and "interrupted" in err, err
    monkeypatch.setattr(trainer_mod, "lr_at", real_lr_at)
    (run,) = [p for p in (tmp_path / "res" / "tiny" / "fp").iterdir() if p.is_dir()]
    first_part = torch.load(run / "checkpoint.pt", weights_only=True)["train_time_s"]
    assert first_part >= 2.7  # 27 steps of at least 0.1 s
    t0 = time.perf_counter()
    code, _, err = cli(*args, "--resume")
    resumed_part = time.perf_counter() - t0
    assert code == 0, err
    m = json.loads((run / "metrics.json").read_text())
    assert first_part < m["train_time_s"] <= first_part + resumed_part, (first_part, m["train_time_s"], resumed_part)


# ---------------------------------------------------------------- pretrained weights without internet

NO_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}  # a hub that never answers


def test_offline_pretrained_fails_at_once_with_advice_that_works(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from huggingface_hub import constants

    from bvbench.errors import BvbenchError
    from bvbench.models import build_model
    from bvbench.recipes.schema import ModelConfig

    monkeypatch.setattr(constants, "ENDPOINT", NO_HUB["HF_ENDPOINT"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    t0 = time.perf_counter()
    with pytest.raises(BvbenchError) as e:
        build_model(ModelConfig(name="vit_tiny_patch16_224", pretrained=True), 10)
    assert time.perf_counter() - t0 < 30  # before: a minute of hub retries (3 s hub check + building, loaded CI)
    msg = str(e.value)
    assert "\n" not in msg and "--set model.checkpoint=vit_tiny_patch16_224.pth" in msg
    assert "torch.save(timm.create_model('vit_tiny_patch16_224', pretrained=True).state_dict()" in msg
    assert constants.HF_HUB_OFFLINE is False  # offline mode only while building


def test_model_checkpoint_means_no_download(tiny_recipe: Path, tmp_path: Path) -> None:
    """pretrained plus model.checkpoint: the local file (here a hub-style state dict with a 1000-class head) is
    the pretrained model; the hub is never asked, so a machine without internet trains."""
    import timm
    import torch

    ckpt = tmp_path / "vit.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=1000, img_size=16, patch_size=4, embed_dim=32,
                                 depth=2, num_heads=2).state_dict(), ckpt)
    args = ["run", str(tiny_recipe), "--profile", "smoke", "--out", str(tmp_path / "res"), "--device", "cpu",
            "--set", "model.pretrained=true"]
    r = bvbench(*args, "--set", f"model.checkpoint={ckpt}", env=NO_HUB)
    assert r.returncode == 0, r.stderr
    one_line_error(bvbench(*args, env=NO_HUB), "cannot fetch timm pretrained weights", "model.checkpoint=")
