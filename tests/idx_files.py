"""Tiny MNIST-style idx folders (the `root` of the mnist and fashion_mnist datasets), written by tests."""

import gzip
import struct
from pathlib import Path

import numpy as np

from cvae_bridge.data.images import IDX_FILES


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = (
        struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def idx_folder(root: Path, gz: bool, n_train=12, n_test=5, h=6, w=5, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n, (image_name, label_name) in (
        ("train", n_train, IDX_FILES["train"]),
        ("test", n_test, IDX_FILES["test"]),
    ):
        images = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / image_name, images, gz)
        write_idx(root / label_name, labels, gz)
        arrays[split] = (images, labels)
    return arrays
