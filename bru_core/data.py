"""Data sets held in memory as tensors, batched by seeded permutations.

MNIST and CIFAR-10/100 come through torchvision's own dataset classes (so the files on
disk are the ones torchvision downloads); ``digits`` is scikit-learn's bundled 8x8 digits,
upsampled to 28x28, so every MNIST model runs offline.

As in airbench, images stay uint8 on the training device until a batch is drawn; each
batch is indexed with a seeded permutation, augmented (CIFAR: random crop with padding,
horizontal flip) in one batched op, and normalised with statistics of the training split.
A validation split is carved from the training set with its own seed; the test set is
never part of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from bru_core.errors import ConfigError, DataNotFoundError

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: the digits test set is the same for every run and every user


@dataclass(frozen=True)
class _Source:
    """Where torchvision keeps one data set under the data folder, and its classes."""

    folder: str
    files: tuple[str, ...]
    n_classes: int
    shape: tuple[int, int, int]


_SOURCES: dict[str, _Source] = {
    "mnist": _Source(
        "MNIST/raw",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        10,
        (1, 28, 28),
    ),
    "cifar10": _Source(
        "cifar-10-batches-py",
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
        10,
        (3, 32, 32),
    ),
    "cifar100": _Source("cifar-100-python", ("train", "test", "meta"), 100, (3, 32, 32)),
}
DATASETS = ("digits", *_SOURCES)
AUGMENTED_BY_DEFAULT = frozenset({"cifar10", "cifar100"})


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its data."""

    name: str
    input_shape: tuple[int, int, int]  # C, H, W
    n_classes: int
    n_train: int
    n_val: int
    n_test: int

    @property
    def n_inputs(self) -> int:
        c, h, w = self.input_shape
        return c * h * w


@dataclass(frozen=True)
class Split:
    images: Tensor  # uint8, N x C x H x W
    labels: Tensor  # int64, N

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


def dataset_shape(name: str) -> tuple[tuple[int, int, int], int]:
    """(C, H, W) and the number of classes, without loading anything."""
    check_dataset(name)
    if name == "digits":
        return (1, 28, 28), 10
    return _SOURCES[name].shape, _SOURCES[name].n_classes


def check_dataset(name: str) -> str:
    if name not in DATASETS:
        raise ConfigError(f"dataset: unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return name


# --------------------------------------------------------------------------- raw loading


def _digits() -> tuple[Split, Split]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # N,1,8,8 in [0,1]
    big = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
    images = (big.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_test = round(len(labels) * DIGITS_TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return Split(images[train], labels[train]), Split(images[test], labels[test])


def _require_files(name: str, root: Path) -> None:
    source = _SOURCES[name]
    folder = root / source.folder
    missing = [f for f in source.files if not (folder / f).is_file()]
    if missing:
        raise DataNotFoundError(
            f"{name} not found in {folder} (expected {', '.join(source.files)}; missing {', '.join(missing)}): "
            f"pass --download to fetch it, or --data-dir to point at a folder that has it"
        )


def check_available(name: str, data_dir: Path | str, download: bool = False) -> None:
    """Raise DataNotFoundError (one line) unless the data set can be loaded: for checks
    before long work starts."""
    check_dataset(name)
    if name in _SOURCES and not download:
        _require_files(name, Path(data_dir).expanduser().resolve())


def _torchvision(name: str, root: Path, download: bool) -> tuple[Split, Split]:
    from torchvision import datasets

    if not download:
        _require_files(name, root)
    cls = {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    try:
        parts = [cls(root=str(root), train=train, download=download) for train in (True, False)]
    except (RuntimeError, OSError, ValueError, AssertionError, TypeError) as exc:  # corrupt files, failed download
        detail = str(exc).splitlines()[0] if str(exc) else f"{type(exc).__name__} (malformed file)"
        detail = detail.replace("You can use download=True to download it", "pass --download to fetch it again")
        raise DataNotFoundError(f"{name} in {root / _SOURCES[name].folder} could not be read: {detail}") from exc
    splits = []
    for part in parts:
        images = torch.as_tensor(np.asarray(part.data))
        images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)  # N,C,H,W
        labels = torch.as_tensor(np.asarray(part.targets), dtype=torch.int64)
        splits.append(Split(images.contiguous(), labels))
    return splits[0], splits[1]


@lru_cache(maxsize=4)
def _raw(name: str, root: str, download: bool) -> tuple[Split, Split]:
    """Train and test splits as uint8 tensors on the CPU (cached: searches reload often)."""
    return _digits() if name == "digits" else _torchvision(name, Path(root), download)


# --------------------------------------------------------------------------- in memory


def random_crop_flip(images: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """Random crop with zero padding and horizontal flip, batched on the images' device.

    The random numbers come from a CPU generator, so the same seed gives the same
    augmentation on any device."""
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator).to(device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator).to(device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(device)
    rows = dy + torch.arange(h, device=device)  # n, h
    cols = dx + torch.arange(w, device=device)  # n, w
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip is reversed column order
    return padded[
        torch.arange(n, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


@dataclass(frozen=True)
class Data:
    """Train, validation and test splits of one data set, on one device."""

    info: DataInfo
    train: Split
    val: Split
    test: Split
    mean: Tensor  # per channel, of the training split, in [0, 1] units
    std: Tensor
    augment: bool

    @property
    def device(self) -> torch.device:
        return self.train.images.device

    def to(self, device: torch.device | str) -> Data:
        return replace(
            self,
            train=self.train.to(device),
            val=self.val.to(device),
            test=self.test.to(device),
            mean=self.mean.to(device),
            std=self.std.to(device),
        )

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 images -> float32, standardised with the training split's statistics."""
        scale = (1.0 / (255.0 * self.std)).view(1, -1, 1, 1)
        shift = (-self.mean / self.std).view(1, -1, 1, 1)
        return torch.addcmul(shift, images.float(), scale)

    @staticmethod
    def pixels(images: Tensor) -> Tensor:
        """uint8 images -> float32 in [0, 1], flattened: the auto-encoder's target."""
        return images.flatten(1).float().div_(255.0)

    def batches(
        self,
        split: Split,
        batch_size: int,
        order: torch.Generator | None = None,
        augment: torch.Generator | None = None,
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """(normalised inputs, raw uint8 images, labels) per batch.

        ``order``: a generator for a fresh permutation (None: in order). ``augment``: a
        generator for random crop + flip (None, or a data set without augmentation: none)."""
        n = len(split)
        if order is None:
            index = torch.arange(n, device=split.labels.device)
        else:
            index = torch.randperm(n, generator=order).to(split.labels.device)
        for start in range(0, n, batch_size):
            take = index[start : start + batch_size]
            images = split.images[take]
            if augment is not None and self.augment:
                images = random_crop_flip(images, augment)
            yield self.normalise(images), images, split.labels[take]

    def n_batches(self, split: Split, batch_size: int) -> int:
        return -(-len(split) // batch_size)


def load_data(
    name: str,
    data_dir: Path | str,
    *,
    download: bool = False,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    augment: bool | None = None,
    device: torch.device | str = "cpu",
) -> Data:
    """Load a data set, carve a seeded validation split from its training set, and move
    everything to ``device``."""
    check_dataset(name)
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction: must be between 0 and 1 (exclusive), got {val_fraction}")
    full_train, cached_test = _raw(name, str(Path(data_dir).expanduser().resolve()), download)
    test = Split(cached_test.images.clone(), cached_test.labels.clone())  # callers may change it
    n_val = max(1, round(len(full_train) * val_fraction))
    if n_val >= len(full_train):
        raise ConfigError(f"val_fraction: {val_fraction} leaves no training data ({len(full_train)} examples)")
    order = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(split_seed))
    val_index, train_index = order[:n_val], order[n_val:]
    train = Split(full_train.images[train_index], full_train.labels[train_index])
    val = Split(full_train.images[val_index], full_train.labels[val_index])
    pixels = train.images.float().div_(255.0)
    mean = pixels.mean(dim=(0, 2, 3))
    std = pixels.std(dim=(0, 2, 3)).clamp_(min=1e-6)
    shape, n_classes = dataset_shape(name)
    if tuple(train.images.shape[1:]) != shape:
        raise DataNotFoundError(f"{name}: images on disk are {tuple(train.images.shape[1:])}, expected {shape}")
    info = DataInfo(name, shape, n_classes, len(train), len(val), len(test))
    use_augment = name in AUGMENTED_BY_DEFAULT if augment is None else augment
    return Data(info, train, val, test, mean, std, use_augment).to(device)


def synthetic_data(
    name: str, n_train: int, n_val: int = 0, n_test: int = 0, seed: int = 0, device: torch.device | str = "cpu"
) -> Data:
    """Random images and labels shaped like a data set: for benchmarks, not for learning."""
    shape, n_classes = dataset_shape(name)
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        return Split(
            torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8),
            torch.randint(0, n_classes, (n,), generator=g),
        )

    train, val, test = split(n_train), split(max(n_val, 1)), split(max(n_test, 1))
    mean, std = torch.full((shape[0],), 0.5), torch.full((shape[0],), 0.29)
    info = DataInfo(f"{name}-shaped", shape, n_classes, n_train, len(val), len(test))
    return Data(info, train, val, test, mean, std, name in AUGMENTED_BY_DEFAULT).to(device)
