"""Each on-disk layout, written tiny by the test: labels, class order, shapes, normalisation, missing data."""

from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import bvbench.data.datasets as dsmod
from bvbench.data import build_dataset, data_root, dataset_info
from bvbench.data.datasets import CIFAR10_CLASSES
from bvbench.errors import BvbenchError, DataMissingError
from bvbench.recipes import DataConfig


def cfg(name: str, **kw) -> DataConfig:
    return DataConfig(name=name, **kw)


@pytest.fixture
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let torchvision accept the tiny hand-written releases (their md5s cannot match the official ones)."""
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.flowers102 as tv_flowers

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(tv_flowers, "check_integrity", lambda *a, **k: True)


# ---------------------------------------------------------------- CIFAR-10 JPEG copy


@pytest.mark.parametrize("folder", ["cifar10-jpeg", "cifar10"])
def test_cifar10_jpeg_copy(tmp_path: Path, cifar_jpeg, folder: str, decode_labels, grey) -> None:
    base = cifar_jpeg(tmp_path, 3, 2, folder)
    train, info = build_dataset(cfg("cifar10"), tmp_path, "train")
    test, tinfo = build_dataset(cfg("cifar10"), tmp_path, "test")
    assert info.display == tinfo.display == "CIFAR-10 (JPEG copy)"
    assert info.source == str(base)
    assert info.classes == CIFAR10_CLASSES and info.num_classes == 10
    assert len(train) == 30 and len(test) == 20
    assert train.targets == [lab for lab in range(10) for _ in range(3)]  # official label order, files in order
    assert decode_labels(train, info.mean, info.std) == train.targets
    x, y = test[5]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and isinstance(y, int) and y == 2
    expected = (grey(2) / 255 - torch.tensor(info.mean)) / torch.tensor(info.std)
    assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=0.02)


def test_cifar10_jpeg_img_size_override(tmp_path: Path, cifar_jpeg) -> None:
    cifar_jpeg(tmp_path, 1, 1)
    ds, info = build_dataset(cfg("cifar10", img_size=48), tmp_path, "test")
    assert ds[0][0].shape == (3, 48, 48) and info.img_size == 32


def test_cifar10_jpeg_wrong_class_folders(tmp_path: Path, cifar_jpeg) -> None:
    base = cifar_jpeg(tmp_path, 1, 1)
    (base / "test" / "truck").rename(base / "test" / "lorry")
    with pytest.raises(DataMissingError, match="lorry") as e:
        build_dataset(cfg("cifar10"), tmp_path, "test")
    assert "truck" in str(e.value) and "\n" not in str(e.value)


def test_cifar10_missing_names_both_options(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as e:
        build_dataset(cfg("cifar10"), tmp_path, "train")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("CIFAR-10")
    assert str(tmp_path / "cifar-10-batches-py") in msg and "--download" in msg
    assert str(tmp_path / "cifar10-jpeg") in msg


# ---------------------------------------------------------------- CIFAR pickle releases (torchvision)


def test_cifar10_official_pickle(tmp_path: Path, cifar_pickle, no_md5) -> None:
    base = cifar_pickle(tmp_path)
    train, info = build_dataset(cfg("cifar10"), tmp_path, "train")
    test, _ = build_dataset(cfg("cifar10"), tmp_path, "test")
    assert info.display == "CIFAR-10" and info.source == str(base)
    assert len(train) == 100 and len(test) == 20
    entry = pickle.loads((base / "test_batch").read_bytes())
    assert test.targets == entry["labels"]
    raw = torch.from_numpy(entry["data"][3].reshape(3, 32, 32)).float() / 255
    norm = (raw - torch.tensor(info.mean)[:, None, None]) / torch.tensor(info.std)[:, None, None]
    x, y = test[3]
    assert y == entry["labels"][3] and torch.allclose(x, norm, atol=1e-5)  # lossless: exact normalisation


def test_cifar10_prefers_official_over_jpeg(tmp_path: Path, cifar_pickle, cifar_jpeg, no_md5) -> None:
    cifar_jpeg(tmp_path, 1, 1)
    cifar_pickle(tmp_path)
    ds, info = build_dataset(cfg("cifar10"), tmp_path, "test")
    assert info.display == "CIFAR-10" and info.source.endswith("cifar-10-batches-py") and len(ds) == 20


def test_cifar10_corrupt_official_is_an_error(tmp_path: Path, cifar_pickle, cifar_jpeg) -> None:
    cifar_jpeg(tmp_path, 1, 1)
    cifar_pickle(tmp_path)  # real md5 check: the tiny files fail it; never fall back silently to the JPEG copy
    with pytest.raises(DataMissingError, match="corrupted") as e:
        build_dataset(cfg("cifar10"), tmp_path, "test")
    assert "--download" in str(e.value) and "\n" not in str(e.value)


def test_download_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    def offline(*a, **k):
        raise urllib.error.URLError("no internet\nat all")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(DataMissingError, match="CIFAR-100: downloading") as e:
        build_dataset(cfg("cifar100"), tmp_path, "train", download=True)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def test_cifar100_official_pickle(tmp_path: Path, cifar_pickle, no_md5) -> None:
    base = cifar_pickle(tmp_path, hundred=True)
    ds, info = build_dataset(cfg("cifar100"), tmp_path, "train")
    assert info.display == "CIFAR-100" and info.num_classes == 100 and info.classes[:2] == ["c00", "c01"]
    assert ds.targets == pickle.loads((base / "train").read_bytes())["fine_labels"]
    assert ds[0][0].shape == (3, 32, 32)


def test_cifar100_missing(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as e:
        build_dataset(cfg("cifar100"), tmp_path, "test")
    msg = str(e.value)
    assert "CIFAR-100" in msg and str(tmp_path / "cifar-100-python") in msg and "--download" in msg
    assert "\n" not in msg


# ---------------------------------------------------------------- Flowers-102 (torchvision)


def test_flowers102_layout(tmp_path: Path, flowers, no_md5, decode_labels) -> None:
    flowers(tmp_path)
    train, info = build_dataset(cfg("flowers102", img_size=32), tmp_path, "train")
    test, _ = build_dataset(cfg("flowers102", img_size=32), tmp_path, "test")
    assert info.display == "Oxford Flowers-102" and info.num_classes == 102 and len(info.classes) == 102
    assert "train+val" in info.source
    assert len(train) == 6 and len(test) == 6  # train = official train + val
    assert train.targets == [0, 1, 2, 0, 1, 2]
    assert decode_labels(test, info.mean, info.std) == test.targets
    assert test[0][0].shape == (3, 32, 32)  # non-square 50x40 images: resize + center crop


def test_flowers102_missing(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as e:
        build_dataset(cfg("flowers102"), tmp_path, "train")
    msg = str(e.value)
    assert "Flowers-102" in msg and str(tmp_path / "flowers-102") in msg and "--download" in msg


# ---------------------------------------------------------------- Tiny ImageNet


def test_tinyimagenet_layout(tmp_path: Path, tiny_imagenet, decode_labels) -> None:
    base, order = tiny_imagenet(tmp_path)
    train, info = build_dataset(cfg("tinyimagenet"), tmp_path, "train")
    test, _ = build_dataset(cfg("tinyimagenet"), tmp_path, "test")
    assert info.classes == order == sorted(order)  # sorted wnids, whatever the order of wnids.txt
    assert info.num_classes == 3 and info.display == "Tiny ImageNet (3 of 200 classes)"
    assert info.source == str(base)
    assert train.targets == [0, 0, 1, 1, 2, 2]
    assert test.targets == [1, 2, 0, 1]  # from val_annotations.txt
    assert decode_labels(train, info.mean, info.std) == train.targets
    assert decode_labels(test, info.mean, info.std) == test.targets
    assert test[0][0].shape == (3, 64, 64)


def test_tinyimagenet_bad_annotation(tmp_path: Path, tiny_imagenet) -> None:
    base, _ = tiny_imagenet(tmp_path)
    with (base / "val" / "val_annotations.txt").open("a") as f:
        f.write("val_9.JPEG\tn09999999\t0\t0\t1\t1\n")
    with pytest.raises(DataMissingError, match="line 5"):
        build_dataset(cfg("tinyimagenet"), tmp_path, "test")


def test_tinyimagenet_missing(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as e:
        build_dataset(cfg("tinyimagenet"), tmp_path, "train")
    msg = str(e.value)
    assert "Tiny ImageNet" in msg and str(tmp_path / "tiny-imagenet-200") in msg
    assert "val_annotations.txt" in msg and "tiny-imagenet-200.zip" in msg and "\n" not in msg


# ---------------------------------------------------------------- ImageNet


def test_imagenet_layout(tmp_path: Path, imagenet, decode_labels) -> None:
    base = imagenet(tmp_path)
    train, info = build_dataset(cfg("imagenet", img_size=32), tmp_path, "train")
    val, _ = build_dataset(cfg("imagenet", img_size=32), tmp_path, "test")
    assert info.classes == ["n01440764", "n01443537", "n01484850"]
    assert info.display == "ImageNet-1k (3 of 1000 classes)" and info.source == str(base)
    assert train.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2] and val.targets == [0, 1, 2]
    assert decode_labels(val, info.mean, info.std) == [0, 1, 2]
    assert val[0][0].shape == (3, 32, 32) and train[0][0].shape == (3, 32, 32)


def test_imagenet_class_folders_must_agree(tmp_path: Path, imagenet) -> None:
    base = imagenet(tmp_path)
    (base / "val" / "n01484850").rename(base / "val" / "n09999999")
    with pytest.raises(DataMissingError, match="differ"):
        build_dataset(cfg("imagenet"), tmp_path, "test")


def test_imagenet_missing(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as e:
        build_dataset(cfg("imagenet"), tmp_path, "test")
    msg = str(e.value)
    assert "ImageNet" in msg and str(tmp_path / "imagenet" / "val") in msg and "<wnid>" in msg and "\n" not in msg


# ---------------------------------------------------------------- Chaoyang


def test_chaoyang_layout(tmp_path: Path, chaoyang, decode_labels) -> None:
    base = chaoyang(tmp_path)
    train, info = build_dataset(cfg("chaoyang", img_size=32), tmp_path, "train")
    test, _ = build_dataset(cfg("chaoyang", img_size=32), tmp_path, "test")
    assert info.display == "Chaoyang" and info.num_classes == 4 and info.source == str(base)
    assert len(train) == 12 and len(test) == 8
    assert test.targets == [0, 0, 1, 1, 2, 2, 3, 3]
    assert decode_labels(train, info.mean, info.std) == train.targets
    assert test[0][0].shape == (3, 32, 32)


def test_chaoyang_missing_image_and_bad_label(tmp_path: Path, chaoyang) -> None:
    base = chaoyang(tmp_path)
    (base / "test" / "3_1.jpg").unlink()
    with pytest.raises(DataMissingError, match="do not exist"):
        build_dataset(cfg("chaoyang"), tmp_path, "test")
    (base / "train.json").write_text('[{"name": "train/0_0.jpg", "label": 7}]')
    with pytest.raises(DataMissingError, match="label 7"):
        build_dataset(cfg("chaoyang"), tmp_path, "train")


def test_chaoyang_missing(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as e:
        build_dataset(cfg("chaoyang"), tmp_path, "train")
    msg = str(e.value)
    assert "Chaoyang" in msg and str(tmp_path / "chaoyang" / "train.json") in msg and '"label"' in msg
    assert "\n" not in msg


# ---------------------------------------------------------------- root, registry


def test_env_data_root_is_used(tmp_path: Path, cifar_jpeg, monkeypatch: pytest.MonkeyPatch) -> None:
    cifar_jpeg(tmp_path / "envroot", 1, 1)
    monkeypatch.setenv("BVBENCH_DATA", str(tmp_path / "envroot"))
    assert data_root() == tmp_path / "envroot"
    assert data_root(tmp_path / "cli") == tmp_path / "cli"  # --data-dir wins
    ds, info = build_dataset(cfg("cifar10"), data_root(), "test")
    assert len(ds) == 10 and info.source == str(tmp_path / "envroot" / "cifar10-jpeg")
    monkeypatch.delenv("BVBENCH_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "bvbench"
    assert data_root(None) == data_root("")


def test_dataset_info_is_static_and_a_copy(tmp_path: Path) -> None:
    info = dataset_info("cifar10")
    assert (info.name, info.display, info.num_classes, info.img_size, info.source) == ("cifar10", "CIFAR-10", 10, 32, "")
    info.classes.append("x")
    assert dataset_info("cifar10").classes == CIFAR10_CLASSES
    c100 = dataset_info("cifar100").classes
    assert len(c100) == len(set(c100)) == 100 and c100 == sorted(c100)
    assert len(dataset_info("imagenet").classes) == 1000
    assert dataset_info("chaoyang").num_classes == 4 and dataset_info("chaoyang").img_size == 512
    assert dataset_info("tinyimagenet").img_size == 64


def test_unknown_dataset_suggests() -> None:
    with pytest.raises(BvbenchError, match="Did you mean: cifar100"):
        dataset_info("cifar-100")
    with pytest.raises(BvbenchError, match="unknown dataset"):
        build_dataset(cfg("imagenett"), Path("/nonexistent"), "train")


def test_registry_meta_for_listing() -> None:
    names = dsmod.DATASETS.names()
    assert names == sorted(["cifar10", "cifar100", "flowers102", "tinyimagenet", "imagenet", "chaoyang", "digits", "fake"])
    for n in names:
        meta = dsmod.DATASETS.meta(n)
        assert set(meta) == {"display", "classes", "img_size", "source"} and meta["source"]
        assert meta["classes"] == dataset_info(n).num_classes


def test_missing_never_one_of_multiple_lines(tmp_path: Path) -> None:
    for name in ("cifar10", "cifar100", "flowers102", "tinyimagenet", "imagenet", "chaoyang"):
        for split in ("train", "test"):
            with pytest.raises(DataMissingError) as e:
                build_dataset(cfg(name), tmp_path, split)  # type: ignore[arg-type]
            assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
            assert isinstance(e.value, BvbenchError) and e.value.exit_code == 2
    assert not np.any([p.exists() for p in tmp_path.iterdir()])  # nothing was downloaded or created
