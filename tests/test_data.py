"""Tests for bru_core.data.

MNIST and CIFAR-10/100 are exercised end to end through torchvision's real dataset
classes: each test writes a miniature copy of the data set in the exact on-disk format
torchvision reads (idx files for MNIST, Python 2 pickles for CIFAR) under its own
``tmp_path``, so the loader's cache (keyed by the resolved folder) never mixes tests.
``digits`` needs no files and is used for the split, normalisation and batching tests.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import torchvision

from bru_core.data import (
    DATASETS,
    Data,
    Split,
    dataset_shape,
    load_data,
    random_crop_flip,
    synthetic_data,
)
from bru_core.errors import ConfigError, DataNotFoundError

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------- writers


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_idx_images(path: Path, images: np.ndarray) -> None:
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", 2051, n, rows, cols) + images.astype(np.uint8).tobytes())


def _write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def _tagged_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images whose first pixel is the image's index (a tag to find it by)."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images.reshape(n, -1)[:, 0] = np.arange(n, dtype=np.uint8)
    return images


def _write_mnist(root: Path, n_train: int = 50, n_test: int = 20) -> dict[str, np.ndarray]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    written = {
        "train_images": _tagged_images(n_train, (28, 28), seed=1),
        "train_labels": (np.arange(n_train) * 7 % 10).astype(np.uint8),
        "test_images": _tagged_images(n_test, (28, 28), seed=2),
        "test_labels": (np.arange(n_test) * 3 % 10).astype(np.uint8),
    }
    _write_idx_images(raw / "train-images-idx3-ubyte", written["train_images"])
    _write_idx_labels(raw / "train-labels-idx1-ubyte", written["train_labels"])
    _write_idx_images(raw / "t10k-images-idx3-ubyte", written["test_images"])
    _write_idx_labels(raw / "t10k-labels-idx1-ubyte", written["test_labels"])
    return written


class _Py2Pickler(pickle._Pickler):
    """Pickles str the way Python 2 pickled its byte strings (SHORT_BINSTRING / BINSTRING).

    The real CIFAR files are Python 2 pickles with byte-string keys; torchvision reads them
    with ``encoding="latin1"``, which turns those keys into str."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: str) -> None:
        data = obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str


def _write_py2_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _cifar_rows(images_hwc: np.ndarray) -> np.ndarray:
    """N x 32 x 32 x 3 (HWC) -> N x 3072 rows: the R plane, then G, then B, each row-major."""
    return np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), 3072))


def _cifar_images(n: int, seed: int) -> np.ndarray:
    """Tagged random images in HWC layout: pixel (row 0, col 0) of the red plane is the index."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n, dtype=np.uint8)
    return images


def _write_cifar10(root: Path, monkeypatch: pytest.MonkeyPatch, per_batch: int = 4, n_test: int = 10) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_images = _cifar_images(5 * per_batch, seed=3)
    train_labels = [int(x) for x in np.arange(5 * per_batch) * 3 % 10]
    test_images = _cifar_images(n_test, seed=4)
    test_images[0] = 0
    test_images[0, 5, 20, 1] = 250  # the only bright pixel of test image 0: channel G, row 5, col 20
    test_labels = [int(x) for x in np.arange(n_test) % 10]
    for b in range(5):
        part = slice(b * per_batch, (b + 1) * per_batch)
        _write_py2_pickle(
            folder / f"data_batch_{b + 1}",
            {
                "batch_label": f"training batch {b + 1} of 5",
                "labels": train_labels[part],
                "data": _cifar_rows(train_images[part]),
                "filenames": [f"train_{i}.png" for i in range(b * per_batch, (b + 1) * per_batch)],
            },
        )
    _write_py2_pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": test_labels,
            "data": _cifar_rows(test_images),
            "filenames": [f"test_{i}.png" for i in range(n_test)],
        },
    )
    _write_py2_pickle(
        folder / "batches.meta",
        {"num_cases_per_batch": per_batch, "label_names": CIFAR10_LABEL_NAMES, "num_vis": 3072},
    )
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[f"data_batch_{i}", _md5(folder / f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(cls, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(
        cls, "meta", {"filename": "batches.meta", "key": "label_names", "md5": _md5(folder / "batches.meta")}
    )
    return {
        "train_images": train_images,
        "train_labels": np.array(train_labels),
        "test_images": test_images,
        "test_labels": np.array(test_labels),
    }


def _write_cifar100(root: Path, monkeypatch: pytest.MonkeyPatch, n_train: int = 30, n_test: int = 10) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train_images = _cifar_images(n_train, seed=5)
    train_fine = [int(x) for x in np.arange(n_train) * 37 % 100]
    test_images = _cifar_images(n_test, seed=6)
    test_images[3] = 0
    test_images[3, 31, 2, 2] = 199  # the only bright pixel of test image 3: channel B, row 31, col 2
    test_fine = [int(x) for x in (99 - np.arange(n_test) * 11) % 100]
    for name, images, fine in (("train", train_images, train_fine), ("test", test_images, test_fine)):
        _write_py2_pickle(
            folder / name,
            {
                "filenames": [f"{name}_{i}.png" for i in range(len(fine))],
                "batch_label": f"{name}ing batch 1 of 1",
                "fine_labels": fine,
                "coarse_labels": [x // 5 for x in fine],
                "data": _cifar_rows(images),
            },
        )
    _write_py2_pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine_{i}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i}" for i in range(20)],
        },
    )
    cls = torchvision.datasets.CIFAR100
    monkeypatch.setattr(cls, "train_list", [["train", _md5(folder / "train")]])
    monkeypatch.setattr(cls, "test_list", [["test", _md5(folder / "test")]])
    monkeypatch.setattr(cls, "meta", {"filename": "meta", "key": "fine_label_names", "md5": _md5(folder / "meta")})
    return {
        "train_images": train_images,
        "train_labels": np.array(train_fine),
        "test_images": test_images,
        "test_labels": np.array(test_fine),
    }


# --------------------------------------------------------------------------- helpers


def _train_and_val_by_tag(data: Data, tag: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and validation examples together, sorted by the tag pixel (the written index)."""
    images = torch.cat([data.train.images, data.val.images])
    labels = torch.cat([data.train.labels, data.val.labels])
    order = torch.argsort(images[(slice(None), *tag)].long())
    return images[order], labels[order]


def _examples(split: Split) -> Counter:
    """The split as a multiset of (image bytes, label)."""
    flat = split.images.flatten(1).numpy()
    return Counter((row.tobytes(), int(label)) for row, label in zip(flat, split.labels.tolist(), strict=True))


def _window_matches(image: torch.Tensor, out: torch.Tensor, padding: int) -> list[tuple[int, int, bool]]:
    """Every (dy, dx, flipped) for which ``out`` is that window of the zero-padded ``image``."""
    _, h, w = image.shape
    padded = torch.nn.functional.pad(image, (padding, padding, padding, padding))
    found = []
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            window = padded[:, dy : dy + h, dx : dx + w]
            for flipped in (False, True):
                if torch.equal(window.flip(-1) if flipped else window, out):
                    found.append((dy, dx, flipped))
    return found


# --------------------------------------------------------------------------- MNIST


def test_mnist_round_trips_written_idx_files(tmp_path: Path) -> None:
    written = _write_mnist(tmp_path)
    data = load_data("mnist", tmp_path)

    assert data.info.name == "mnist"
    assert data.info.n_classes == 10
    assert data.info.input_shape == (1, 28, 28)
    assert data.train.images.dtype == torch.uint8
    assert data.train.labels.dtype == torch.int64
    assert data.train.images.shape == (45, 1, 28, 28)
    assert data.val.images.shape == (round(50 * 0.1), 1, 28, 28)
    assert data.test.images.shape == (20, 1, 28, 28)
    assert (data.info.n_train, data.info.n_val, data.info.n_test) == (45, 5, 20)

    images, labels = _train_and_val_by_tag(data, (0, 0, 0))
    assert torch.equal(images, torch.from_numpy(written["train_images"]).unsqueeze(1))
    assert torch.equal(labels, torch.from_numpy(written["train_labels"]).long())

    assert torch.equal(data.test.images, torch.from_numpy(written["test_images"]).unsqueeze(1))
    assert torch.equal(data.test.labels, torch.from_numpy(written["test_labels"]).long())


def test_mnist_train_and_val_are_disjoint(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    data = load_data("mnist", tmp_path, split_seed=3)
    train_tags = set(data.train.images[:, 0, 0, 0].tolist())
    val_tags = set(data.val.images[:, 0, 0, 0].tolist())
    assert not train_tags & val_tags
    assert train_tags | val_tags == set(range(50))


def test_missing_mnist_names_folder_files_and_download_option(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as excinfo:
        load_data("mnist", tmp_path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(tmp_path / "MNIST" / "raw") in message
    for name in MNIST_FILES:
        assert name in message
    assert "--download" in message


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_round_trips_written_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = _write_cifar10(tmp_path, monkeypatch)
    data = load_data("cifar10", tmp_path)

    assert data.info.n_classes == 10
    assert data.info.input_shape == (3, 32, 32)
    assert data.train.images.dtype == torch.uint8
    assert data.train.images.shape == (18, 3, 32, 32)
    assert data.val.images.shape == (2, 3, 32, 32)
    assert data.test.images.shape == (10, 3, 32, 32)

    # the one bright pixel written at channel G, row 5, col 20 of test image 0 is there and only there
    first = data.test.images[0]
    assert first[1, 5, 20] == 250
    assert torch.count_nonzero(first) == 1

    assert torch.equal(data.test.images, torch.from_numpy(written["test_images"]).permute(0, 3, 1, 2))
    assert torch.equal(data.test.labels, torch.from_numpy(written["test_labels"]).long())

    images, labels = _train_and_val_by_tag(data, (0, 0, 0))
    assert torch.equal(images, torch.from_numpy(written["train_images"]).permute(0, 3, 1, 2))
    assert torch.equal(labels, torch.from_numpy(written["train_labels"]).long())


def test_cifar100_round_trips_written_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = _write_cifar100(tmp_path, monkeypatch)
    data = load_data("cifar100", tmp_path)

    assert data.info.n_classes == 100
    assert data.info.input_shape == (3, 32, 32)
    assert data.train.images.dtype == torch.uint8
    assert data.train.images.shape == (27, 3, 32, 32)
    assert data.val.images.shape == (3, 3, 32, 32)
    assert data.test.images.shape == (10, 3, 32, 32)

    third = data.test.images[3]
    assert third[2, 31, 2] == 199
    assert torch.count_nonzero(third) == 1

    assert torch.equal(data.test.images, torch.from_numpy(written["test_images"]).permute(0, 3, 1, 2))
    assert torch.equal(data.test.labels, torch.from_numpy(written["test_labels"]).long())  # fine labels

    images, labels = _train_and_val_by_tag(data, (0, 0, 0))
    assert torch.equal(images, torch.from_numpy(written["train_images"]).permute(0, 3, 1, 2))
    assert torch.equal(labels, torch.from_numpy(written["train_labels"]).long())


def test_partial_cifar10_names_the_missing_files(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    present = {"data_batch_1", "data_batch_3", "batches.meta"}
    for name in present:
        (folder / name).write_bytes(b"x")
    with pytest.raises(DataNotFoundError) as excinfo:
        load_data("cifar10", tmp_path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(folder) in message
    assert "--download" in message
    for name in CIFAR10_FILES:
        assert name in message  # all expected files are listed
    missing_part = message.split("missing", 1)[1].split(")", 1)[0]
    missing = {name.strip() for name in missing_part.split(",")}
    assert missing == set(CIFAR10_FILES) - present


def test_corrupt_cifar10_raises_data_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_cifar10(tmp_path, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")  # md5 no longer matches
    with pytest.raises(DataNotFoundError) as excinfo:
        load_data("cifar10", tmp_path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar-10-batches-py") in message


def test_augment_defaults_per_data_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_cifar10(tmp_path, monkeypatch)
    assert load_data("cifar10", tmp_path).augment is True
    assert load_data("cifar10", tmp_path, augment=False).augment is False
    assert load_data("digits", tmp_path).augment is False
    assert load_data("digits", tmp_path, augment=True).augment is True


def test_cifar_normalised_train_images_are_standard_per_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_cifar10(tmp_path, monkeypatch)
    data = load_data("cifar10", tmp_path)
    pixels = data.train.images.float() / 255
    assert data.mean.shape == data.std.shape == (3,)
    torch.testing.assert_close(data.mean, pixels.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(data.std, pixels.std(dim=(0, 2, 3)))
    normalised = data.normalise(data.train.images)
    assert normalised.dtype == torch.float32
    torch.testing.assert_close(normalised.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(normalised.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- digits and splits


def test_digits_sizes_shape_and_classes(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    data = load_data("digits", tmp_path)
    total = len(data.train) + len(data.val) + len(data.test)
    assert total == 1797
    assert (data.info.n_train, data.info.n_val, data.info.n_test) == (len(data.train), len(data.val), len(data.test))
    assert len(data.test) == pytest.approx(0.2 * 1797, abs=1)
    assert len(data.val) == round((len(data.train) + len(data.val)) * 0.1)
    for split in (data.train, data.val, data.test):
        assert split.images.dtype == torch.uint8
        assert split.images.shape[1:] == (1, 28, 28)
        assert split.labels.dtype == torch.int64
    assert data.info.n_classes == 10
    assert data.info.input_shape == (1, 28, 28)
    assert dataset_shape("digits") == ((1, 28, 28), 10)
    labels = torch.cat([data.train.labels, data.val.labels, data.test.labels])
    assert torch.equal(torch.bincount(labels, minlength=10), torch.bincount(torch.as_tensor(load_digits().target)))
    assert int(data.train.images.max()) > 200  # the strokes use the uint8 range, not 0..16


def test_dataset_shape_of_every_data_set() -> None:
    assert dataset_shape("mnist") == ((1, 28, 28), 10)
    assert dataset_shape("cifar10") == ((3, 32, 32), 10)
    assert dataset_shape("cifar100") == ((3, 32, 32), 100)
    assert set(DATASETS) == {"digits", "mnist", "cifar10", "cifar100"}


def test_same_split_seed_gives_same_validation_set(tmp_path: Path) -> None:
    a = load_data("digits", tmp_path, split_seed=7)
    b = load_data("digits", tmp_path, split_seed=7)
    assert torch.equal(a.val.images, b.val.images)
    assert torch.equal(a.val.labels, b.val.labels)
    assert torch.equal(a.train.images, b.train.images)


def test_different_split_seed_gives_different_validation_set(tmp_path: Path) -> None:
    a = load_data("digits", tmp_path, split_seed=0)
    b = load_data("digits", tmp_path, split_seed=1)
    assert len(a.val) == len(b.val)
    assert _examples(a.val) != _examples(b.val)
    # the held-out test set never depends on the split seed
    assert torch.equal(a.test.images, b.test.images)
    assert torch.equal(a.test.labels, b.test.labels)


def test_train_and_val_partition_the_training_set(tmp_path: Path) -> None:
    a = load_data("digits", tmp_path, split_seed=0)
    b = load_data("digits", tmp_path, split_seed=5)
    whole_a = _examples(a.train) + _examples(a.val)
    whole_b = _examples(b.train) + _examples(b.val)
    # counts add up exactly, so no example is in both train and val (duplicates counted as such)
    assert sum(whole_a.values()) == len(a.train) + len(a.val)
    assert whole_a == whole_b
    assert not set(_examples(a.test)) <= set(whole_a)  # the test set is something else


def test_normalisation_statistics_come_from_train_only(tmp_path: Path) -> None:
    data = load_data("digits", tmp_path)
    train = data.train.images.float() / 255
    assert data.mean.shape == data.std.shape == (1,)
    torch.testing.assert_close(data.mean, train.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(data.std, train.std(dim=(0, 2, 3)))
    for other in (data.val, data.test):
        pixels = other.images.float() / 255
        assert not torch.allclose(data.mean, pixels.mean(dim=(0, 2, 3)), rtol=0, atol=1e-5)
    normalised = data.normalise(data.train.images)
    torch.testing.assert_close(normalised.mean(dim=(0, 2, 3)), torch.zeros(1), atol=1e-4, rtol=0)
    torch.testing.assert_close(normalised.std(dim=(0, 2, 3)), torch.ones(1), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- batches


def _labelled_by_index(split: Split) -> Split:
    return Split(split.images, torch.arange(len(split)))


def test_batches_cover_every_example_once_per_epoch(tmp_path: Path) -> None:
    data = load_data("digits", tmp_path)
    split = _labelled_by_index(data.train)
    n = len(split)
    batches = list(data.batches(split, 100, order=torch.Generator().manual_seed(0)))
    assert len(batches) == data.n_batches(split, 100) == -(-n // 100)
    assert [len(labels) for _, _, labels in batches] == [100] * (n // 100) + [n % 100]
    assert n % 100 != 0  # so the last batch above is the partial one
    seen = torch.cat([labels for _, _, labels in batches])
    assert torch.equal(seen.sort().values, torch.arange(n))
    assert not torch.equal(seen, torch.arange(n))  # shuffled
    for inputs, images, labels in batches:
        assert torch.equal(images, split.images[labels])  # images travel with their labels
        assert inputs.dtype == torch.float32
        torch.testing.assert_close(inputs, data.normalise(images))


def test_batches_same_seed_same_order_other_seed_other_order(tmp_path: Path) -> None:
    data = load_data("digits", tmp_path)
    split = _labelled_by_index(data.train)

    def order(seed: int) -> torch.Tensor:
        return torch.cat(
            [labels for _, _, labels in data.batches(split, 64, order=torch.Generator().manual_seed(seed))]
        )

    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))


def test_batches_in_order_without_generator(tmp_path: Path) -> None:
    data = load_data("digits", tmp_path)
    split = _labelled_by_index(data.val)
    batches = list(data.batches(split, 50))
    assert torch.equal(torch.cat([labels for _, _, labels in batches]), torch.arange(len(split)))
    assert torch.equal(torch.cat([images for _, images, _ in batches]), split.images)
    assert len(batches[-1][2]) == len(split) - 50 * (len(batches) - 1) < 50


def test_batches_augment_only_when_data_set_augments(tmp_path: Path) -> None:
    plain = load_data("digits", tmp_path)
    assert plain.augment is False
    split = _labelled_by_index(plain.train)
    for _, images, labels in plain.batches(split, 256, augment=torch.Generator().manual_seed(0)):
        assert torch.equal(images, split.images[labels])

    augmented = replace(plain, augment=True)
    changed = 0
    for _, images, labels in augmented.batches(split, 256, augment=torch.Generator().manual_seed(0)):
        assert images.shape == split.images[labels].shape
        changed += int((images != split.images[labels]).flatten(1).any(1).sum())
    assert changed > len(split) // 2


# --------------------------------------------------------------------------- augmentation


def _random_images(n: int, c: int = 3, h: int = 12, w: int = 12, seed: int = 0) -> torch.Tensor:
    # strictly positive pixels, so zero padding is distinguishable from image content
    return torch.randint(1, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_random_crop_flip_keeps_shape_and_dtype() -> None:
    images = _random_images(16, c=3, h=32, w=32)
    out = random_crop_flip(images, torch.Generator().manual_seed(0), padding=4)
    assert out.shape == images.shape
    assert out.dtype == torch.uint8
    assert out.device == images.device


def test_random_crop_flip_is_reproducible_with_the_same_seed() -> None:
    images = _random_images(32)
    a = random_crop_flip(images, torch.Generator().manual_seed(11), padding=4)
    b = random_crop_flip(images, torch.Generator().manual_seed(11), padding=4)
    c = random_crop_flip(images, torch.Generator().manual_seed(12), padding=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_random_crop_flip_outputs_are_shifted_mirrored_windows() -> None:
    images = _random_images(200)
    out = random_crop_flip(images, torch.Generator().manual_seed(0), padding=4)
    seen = []
    for i in range(len(images)):
        matches = _window_matches(images[i], out[i], padding=4)
        assert len(matches) == 1, f"image {i}: {matches}"
        seen.append(matches[0])
    flips = {flipped for _, _, flipped in seen}
    offsets = {(dy, dx) for dy, dx, _ in seen}
    assert flips == {False, True}
    assert len(offsets) >= 20
    assert {dy for dy, _ in offsets} >= {0, 8} and {dx for _, dx in offsets} >= {0, 8}  # the extremes occur


def test_random_crop_flip_without_padding_only_mirrors() -> None:
    images = _random_images(64)
    out = random_crop_flip(images, torch.Generator().manual_seed(1), padding=0)
    flipped = 0
    for image, result in zip(images, out, strict=True):
        if torch.equal(result, image.flip(-1)):
            flipped += 1
        else:
            assert torch.equal(result, image)
    assert 0 < flipped < len(images)


# --------------------------------------------------------------------------- bad arguments and synthetic


def test_unknown_data_set_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_data("imagenet", tmp_path)
    message = str(excinfo.value)
    assert "imagenet" in message
    for name in ("digits", "mnist", "cifar10", "cifar100"):
        assert name in message
    with pytest.raises(ConfigError):
        dataset_shape("imagenet")


@pytest.mark.parametrize("val_fraction", [0.0, 1.0, -0.1, 1.5])
def test_val_fraction_outside_open_unit_interval_is_rejected(tmp_path: Path, val_fraction: float) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        load_data("digits", tmp_path, val_fraction=val_fraction)


def test_val_fraction_that_leaves_no_training_data_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        load_data("digits", tmp_path, val_fraction=0.9999)


def test_synthetic_data_has_the_cifar_shape() -> None:
    data = synthetic_data("cifar10", n_train=10)
    assert data.train.images.shape == (10, 3, 32, 32)
    assert data.train.images.dtype == torch.uint8
    assert data.info.input_shape == (3, 32, 32)
    assert data.info.n_classes == 10
    assert data.info.n_train == 10
    assert int(data.train.labels.min()) >= 0 and int(data.train.labels.max()) < 10
    assert data.mean.shape == data.std.shape == (3,)
    assert data.augment is True
    assert torch.equal(data.train.images, synthetic_data("cifar10", n_train=10).train.images)
