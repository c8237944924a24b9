"""The registered data sets: where each is looked for on disk, how it is read, and what to do when it is missing."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from bvbench.data.base import (
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArraySource,
    DatasetInfo,
    FileSource,
    ImageSource,
)
from bvbench.errors import DataMissingError
from bvbench.registry import Registry

Split = Literal["train", "test"]
Loader = Callable[[Path, Split, bool, DatasetInfo], ImageSource]


@dataclass
class DatasetSpec:
    """A registered data set: its static info and the function that reads it (filling in `display`/`source`)."""

    info: DatasetInfo
    load: Loader
    how: str  # how to get it, for `bvbench list datasets` and error messages


DATASETS: Registry[DatasetSpec] = Registry("dataset")

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
CHAOYANG_CLASSES = ["normal", "serrated", "adenocarcinoma", "adenoma"]
FAKE_SEED = 20240229
FAKE_SIZES = {"train": 512, "test": 128}
CIFAR_JPEG_DIRS = ("cifar10-jpeg", "cifar10")


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


def _missing(msg: str) -> DataMissingError:
    """A DataMissingError whose message is always a single line."""
    return DataMissingError(_one_line(msg))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _subdirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _images_in(path: Path) -> list[str]:
    """Image files directly inside `path`, sorted by name."""
    return sorted(e.path for e in os.scandir(path) if e.is_file() and _is_image(e.name))


def _scan_class_folders(split_dir: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """`split_dir/<class>/*.<image>` for each class, labels in the order of `classes`."""
    paths: list[str] = []
    targets: list[int] = []
    for label, c in enumerate(classes):
        files = _images_in(split_dir / c)
        if not files:
            raise _missing(f"the class folder {split_dir / c} holds no images; every class needs images "
                           f"(add them or remove the folder)")
        paths += files
        targets += [label] * len(files)
    return paths, targets


def _set_classes(info: DatasetInfo, classes: list[str], where: Path) -> None:
    """Record the classes actually found: more than the data set has is an error (a foreign or damaged copy),
    fewer (a subset) shows in `display`."""
    if len(classes) > info.num_classes:
        raise _missing(f"{info.display} at {where}: {len(classes)} classes found, but {info.display} has "
                       f"{info.num_classes}; remove the extra class folders (e.g. {', '.join(classes[-2:])})")
    if len(classes) != info.num_classes:
        info.display = f"{info.display} ({len(classes)} of {info.num_classes} classes)"
    info.classes = list(classes)
    info.num_classes = len(classes)


def _require_images(info: DatasetInfo, paths: list[str], where: Path, layout: str) -> None:
    if not paths:
        raise _missing(f"{info.display}: no images found under {where}; expected the layout {layout}")


# ---------------------------------------------------------------- torchvision data sets


def _torchvision_error(info: DatasetInfo, path: Path, root: Path, download: bool, err: Exception) -> DataMissingError:
    if download:
        return _missing(
            f"{info.display}: downloading into {root} failed ({type(err).__name__}: {err}); "
            f"without internet, place the official release at {path} yourself"
        )
    return _missing(
        f"{info.display} at {path} is incomplete or corrupted (torchvision's check failed); "
        "delete it and pass --download to fetch it again"
    )


def _load_cifar(cls_name: str, root: Path, split: Split, download: bool, info: DatasetInfo) -> ArraySource:
    """The official CIFAR pickle release through torchvision (downloaded only when `download`)."""
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    path = root / cls.base_folder
    try:
        ds = cls(str(root), train=split == "train", download=download)
    except Exception as e:  # torchvision raises RuntimeError for bad data, URLError/OSError for downloads
        raise _torchvision_error(info, path, root, download, e) from None
    info.classes = list(ds.classes)
    info.source = str(path)
    return ArraySource(np.ascontiguousarray(ds.data), ds.targets)


def _cifar_jpeg_dir(root: Path, split: Split) -> Path | None:
    for name in CIFAR_JPEG_DIRS:
        base = root / name
        if (base / "train").is_dir() and (base / "test").is_dir():
            return base / split
    return None


def load_cifar10(root: Path, split: Split, download: bool, info: DatasetInfo) -> ImageSource:
    """The official pickle release (preferred, or downloaded), else the JPEG copy in class folders."""
    official = root / "cifar-10-batches-py"
    jpeg = None if download or official.exists() else _cifar_jpeg_dir(root, split)
    if jpeg is None:
        if not download and not official.exists():
            raise _missing(
                f"CIFAR-10 not found: expected the official release at {official} (pass --download to fetch it) "
                f"or the JPEG copy at {root / 'cifar10-jpeg'}/{{train,test}}/<class>/*.jpg "
                f"(classes {', '.join(CIFAR10_CLASSES)})"
            )
        return _load_cifar("CIFAR10", root, split, download, info)
    found = _subdirs(jpeg)
    if sorted(found) != sorted(CIFAR10_CLASSES):
        raise _missing(
            f"CIFAR-10 (JPEG copy) at {jpeg}: expected the class folders {', '.join(CIFAR10_CLASSES)}, "
            f"found {', '.join(found) or 'none'}"
        )
    paths, targets = _scan_class_folders(jpeg, CIFAR10_CLASSES)
    _require_images(info, paths, jpeg, "<class>/*.jpg")
    info.display = "CIFAR-10 (JPEG copy)"
    info.source = str(jpeg.parent)
    return FileSource(paths, targets)


def load_cifar100(root: Path, split: Split, download: bool, info: DatasetInfo) -> ImageSource:
    """The official CIFAR-100 pickle release through torchvision."""
    path = root / "cifar-100-python"
    if not download and not path.exists():
        raise _missing(f"CIFAR-100 not found: expected the official release at {path} (pass --download to fetch it)")
    return _load_cifar("CIFAR100", root, split, download, info)


def load_flowers102(root: Path, split: Split, download: bool, info: DatasetInfo) -> ImageSource:
    """Oxford Flowers-102 through torchvision; "train" is the official train+val (2,040 images), "test" the test."""
    from torchvision.datasets import Flowers102

    path = root / "flowers-102"
    if not download and not path.exists():
        raise _missing(
            f"Oxford Flowers-102 not found: expected the official release at {path} "
            "(jpg/, imagelabels.mat, setid.mat; pass --download to fetch it)"
        )
    parts = ("train", "val") if split == "train" else ("test",)
    paths: list[str] = []
    targets: list[int] = []
    try:
        for i, part in enumerate(parts):
            ds = Flowers102(str(root), split=part, download=download and i == 0)
            paths += [str(p) for p in ds._image_files]
            targets += list(ds._labels)
    except Exception as e:
        raise _torchvision_error(info, path, root, download, e) from None
    info.source = f"{path} ({'+'.join(parts)})"
    return FileSource(paths, targets)


# ---------------------------------------------------------------- manual-download data sets

TINY_LAYOUT = (
    "tiny-imagenet-200/wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt"
)
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def load_tinyimagenet(root: Path, split: Split, download: bool, info: DatasetInfo) -> ImageSource:
    """The official tiny-imagenet-200 layout; classes are the sorted wnids, "test" is the labelled val split."""
    base = root / "tiny-imagenet-200"
    wnids_file = base / "wnids.txt"
    if not wnids_file.is_file():
        raise _missing(
            f"Tiny ImageNet not found: expected {wnids_file} (layout {TINY_LAYOUT}); bvbench cannot download it, "
            f"get {TINY_URL} and unzip it into {root}"
        )
    classes = sorted({w.strip() for w in wnids_file.read_text().split() if w.strip()})
    _set_classes(info, classes, wnids_file)
    label = {w: i for i, w in enumerate(classes)}
    paths: list[str] = []
    targets: list[int] = []
    if split == "train":
        where = base / "train"
        for w in classes:
            d = where / w / "images"
            if not d.is_dir():
                raise _missing(f"Tiny ImageNet: missing {d} (layout {TINY_LAYOUT})")
            files = _images_in(d)
            if not files:
                raise _missing(f"Tiny ImageNet: the class folder {d} holds no images (layout {TINY_LAYOUT})")
            paths += files
            targets += [label[w]] * len(files)
    else:
        where = base / "val"
        ann = where / "val_annotations.txt"
        if not ann.is_file():
            raise _missing(f"Tiny ImageNet: missing {ann} (layout {TINY_LAYOUT})")
        for n, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2 or fields[1] not in label:
                raise _missing(f"Tiny ImageNet: {ann} line {n}: expected '<file>\\t<wnid>...' with a wnid from wnids.txt")
            p = where / "images" / fields[0]
            if not p.is_file():
                raise _missing(f"Tiny ImageNet: {ann} line {n} names {p}, which does not exist")
            paths.append(str(p))
            targets.append(label[fields[1]])
    _require_images(info, paths, where, TINY_LAYOUT)
    info.source = str(base)
    return FileSource(paths, targets)


IMAGENET_LAYOUT = "imagenet/train/<wnid>/*.JPEG and imagenet/val/<wnid>/*.JPEG (val sorted into class folders)"


def load_imagenet(root: Path, split: Split, download: bool, info: DatasetInfo) -> ImageSource:
    """ImageNet-1k in class folders; classes are the sorted wnid folder names (the usual ImageFolder order)."""
    base = root / "imagenet"
    folder = base / ("train" if split == "train" else "val")
    if not folder.is_dir():
        raise _missing(
            f"ImageNet-1k not found: expected {folder} (layout {IMAGENET_LAYOUT}); bvbench cannot download it, "
            "get ILSVRC2012 from https://image-net.org and unpack it there"
        )
    classes = _subdirs(folder)
    other = base / ("val" if split == "train" else "train")
    if other.is_dir():
        other_classes = _subdirs(other)
        if other_classes != classes:
            diff = sorted(set(classes) ^ set(other_classes))
            raise _missing(
                f"ImageNet-1k: the class folders of {base / 'train'} and {base / 'val'} differ "
                f"({len(diff)} not in both, e.g. {', '.join(diff[:3])})"
            )
    _set_classes(info, classes, folder)
    paths, targets = _scan_class_folders(folder, classes)
    _require_images(info, paths, folder, IMAGENET_LAYOUT)
    info.source = str(base)
    return FileSource(paths, targets)


CHAOYANG_LAYOUT = 'chaoyang/train.json and chaoyang/test.json, lists of {"name": "train/xxx.jpg", "label": 0-3}'


def load_chaoyang(root: Path, split: Split, download: bool, info: DatasetInfo) -> ImageSource:
    """The official Chaoyang layout: JSON lists of images (relative to the chaoyang folder) with labels 0-3."""
    base = root / "chaoyang"
    index = base / f"{split}.json"
    if not index.is_file():
        raise _missing(
            f"Chaoyang not found: expected {index} (layout {CHAOYANG_LAYOUT}); bvbench cannot download it, "
            "request it from https://bupt-ai-cz.github.io/HSA-NRL/ and unpack it there"
        )
    try:
        entries = json.loads(index.read_text())
        pairs = [(str(e["name"]), int(e["label"])) for e in entries]
    except (ValueError, TypeError, KeyError) as e:
        raise _missing(f"Chaoyang: {index} is not a JSON list of {{name, label}} entries ({e})") from None
    bad = [lab for _, lab in pairs if not 0 <= lab < len(CHAOYANG_CLASSES)]
    if bad:
        raise _missing(f"Chaoyang: {index} has label {bad[0]}; labels must be 0-{len(CHAOYANG_CLASSES) - 1}")
    paths = [base / name for name, _ in pairs]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise _missing(f"Chaoyang: {len(absent)} images listed in {index} do not exist, e.g. {absent[0]}")
    _require_images(info, [str(p) for p in paths], base, CHAOYANG_LAYOUT)
    info.source = str(base)
    return FileSource(paths, [lab for _, lab in pairs])


# ---------------------------------------------------------------- bundled and synthetic


def load_digits(root: Path, split: Split, download: bool, info: DatasetInfo) -> ImageSource:
    """scikit-learn's 8x8 digits, 0..16 scaled to 0..255 and replicated to RGB; a stratified 80/20 split."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    d = sk_load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    idx = np.arange(len(images))
    train_idx, test_idx = train_test_split(idx, test_size=0.2, stratify=d.target, random_state=0)
    sel = np.sort(train_idx if split == "train" else test_idx)
    rgb = np.repeat(images[sel][..., None], 3, axis=-1)
    info.source = "sklearn.datasets.load_digits (stratified 80/20 split, random_state=0)"
    return ArraySource(np.ascontiguousarray(rgb), d.target[sel])


def fake_arrays(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic learnable images: each class is a fixed smooth random template plus per-image noise."""
    rng = np.random.default_rng(FAKE_SEED)
    low = rng.uniform(40, 215, size=(10, 8, 8, 3))
    templates = low.repeat(4, axis=1).repeat(4, axis=2)  # [10, 32, 32, 3]
    n = FAKE_SIZES[split]
    srng = np.random.default_rng([FAKE_SEED, 0 if split == "train" else 1])
    labels = srng.permutation(np.arange(n) % 10)
    noise = srng.normal(0.0, 40.0, size=(n, 32, 32, 3))
    images = np.rint(templates[labels] + noise).clip(0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def load_fake(root: Path, split: Split, download: bool, info: DatasetInfo) -> ImageSource:
    """Synthetic data for tests: 512 train / 128 test images of 10 classes, always the same."""
    images, labels = fake_arrays(split)
    info.source = f"synthetic (class templates + noise, seed {FAKE_SEED})"
    return ArraySource(images, labels)


# ---------------------------------------------------------------- registry


def _imagenet_classes() -> list[str]:
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


def _register(name: str, info: DatasetInfo, load: Loader, how: str) -> None:
    DATASETS.add(
        name,
        DatasetSpec(info=info, load=load, how=how),
        display=info.display,
        classes=info.num_classes,
        img_size=info.img_size,
        source=how,
    )


_register(
    "cifar10",
    DatasetInfo("cifar10", "CIFAR-10", 10, 32, list(CIFAR10_CLASSES),
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    load_cifar10,
    "torchvision (--download) into <data>/cifar-10-batches-py, or the JPEG copy at <data>/cifar10-jpeg/",
)
_register(
    "cifar100",
    DatasetInfo("cifar100", "CIFAR-100", 100, 32, list(CIFAR100_CLASSES),
                (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    load_cifar100,
    "torchvision (--download) into <data>/cifar-100-python",
)
_register(
    "flowers102",
    DatasetInfo("flowers102", "Oxford Flowers-102", 102, 224, [], IMAGENET_MEAN, IMAGENET_STD),
    load_flowers102,
    "torchvision (--download) into <data>/flowers-102; train = official train+val",
)
_register(
    "tinyimagenet",
    DatasetInfo("tinyimagenet", "Tiny ImageNet", 200, 64, [], (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
    load_tinyimagenet,
    f"manual: unzip {TINY_URL} into <data>/ (test = val split)",
)
_register(
    "imagenet",
    DatasetInfo("imagenet", "ImageNet-1k", 1000, 224, [], IMAGENET_MEAN, IMAGENET_STD),
    load_imagenet,
    "manual: ILSVRC2012 from image-net.org as <data>/imagenet/{train,val}/<wnid>/",
)
_register(
    "chaoyang",
    DatasetInfo("chaoyang", "Chaoyang", 4, 512, list(CHAOYANG_CLASSES), IMAGENET_MEAN, IMAGENET_STD),
    load_chaoyang,
    "manual: from bupt-ai-cz.github.io/HSA-NRL as <data>/chaoyang/{train,test}.json + images",
)
_register(
    "digits",
    DatasetInfo("digits", "Digits (scikit-learn 8x8)", 10, 8, [str(i) for i in range(10)],
                (0.3053, 0.3053, 0.3053), (0.3760, 0.3760, 0.3760)),
    load_digits,
    "bundled with scikit-learn (no download)",
)
_register(
    "fake",
    DatasetInfo("fake", "Fake (synthetic)", 10, 32, [f"class{i}" for i in range(10)],
                (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    load_fake,
    "generated (deterministic, for tests)",
)


def static_info(name: str) -> DatasetInfo:
    """A copy of the registered info, with lazily known class names (Flowers, ImageNet) filled in."""
    info = DATASETS.get(name).info.copy()
    if not info.classes:
        if name == "flowers102":
            from torchvision.datasets import Flowers102

            info.classes = list(Flowers102.classes)
        elif name == "imagenet":
            info.classes = _imagenet_classes()
    return info
