"""The text-to-image pipeline as diffusers users expect it: an output object with `.images`,
"pil" / "pt" / "np", a generator or a seed, `.to(device)`, unconditional models sampled without
prompts. Runs on the committed tiny models of tests/artifacts."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvae_bridge.cli import main
from cvae_bridge.errors import ConfigError, InputError
from cvae_bridge.pipelines import TextToImagePipeline
from cvae_bridge.pipelines.text_to_image import GenerateConfig, generate_grid
from cvae_bridge.utils.pixels import image_grid

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def pipe():
    return TextToImagePipeline.from_pretrained(ARTIFACTS / "text_to_image" / "model")


def test_output_types_hold_the_same_images(pipe):
    prompts = ["a handwritten one", "a handwritten two"]
    pt = pipe(prompts, num_images_per_prompt=3, seed=4, output_type="pt")
    assert pt.images.shape[0] == 6 and pt.prompts == [prompts[0]] * 3 + [prompts[1]] * 3
    arrays = pipe(prompts, num_images_per_prompt=3, seed=4, output_type="np").images
    assert isinstance(arrays, np.ndarray) and arrays.shape == tuple(pt.images.permute(0, 2, 3, 1).shape)
    np.testing.assert_array_equal(arrays, pt.images.permute(0, 2, 3, 1).numpy())
    pil = pipe(prompts, num_images_per_prompt=3, seed=4).images
    assert len(pil) == 6 and all(isinstance(image, Image.Image) for image in pil)
    # A generator and a seed are the same draws; a str prompt is a list of one.
    by_generator = pipe(prompts[0], generator=torch.Generator().manual_seed(4), output_type="pt").images
    torch.testing.assert_close(by_generator, pipe([prompts[0]], seed=4, output_type="pt").images)
    assert pipe.to("cpu") is pipe and pipe.device == torch.device("cpu")


def test_wrong_calls_are_named(pipe):
    with pytest.raises(ConfigError, match="conditioned on text .*give one or more prompts"):
        pipe()
    with pytest.raises(ConfigError, match="output_type: expected 'pil', 'pt' or 'np'"):
        pipe("a one", output_type="latent")
    with pytest.raises(ConfigError, match="num_images_per_prompt: expected an integer >= 1, got 0"):
        pipe("a one", num_images_per_prompt=0)
    with pytest.raises(ConfigError, match="give one of them"):
        pipe("a one", seed=0, generator=torch.Generator())


def test_an_unconditional_model_is_sampled_without_prompts(tmp_path, capsys):
    pipe = TextToImagePipeline.from_pretrained(ARTIFACTS / "unconditional_vae" / "model")
    out = pipe(num_images_per_prompt=5, seed=0, output_type="pt")
    assert out.images.shape[0] == 5 and out.prompts is None
    with pytest.raises(ConfigError, match="unconditional, sample it without prompts"):
        pipe("a seven")
    grid = tmp_path / "grid.png"
    assert (
        main(
            [
                "generate",
                "--model",
                str(ARTIFACTS / "unconditional_vae" / "model"),
                "--num",
                "4",
                "--out",
                str(grid),
            ]
        )
        == 0
    )
    assert (
        Image.open(grid).size[0] > Image.open(grid).size[1]
        and "no prompt x 4 images" in capsys.readouterr().out
    )


def test_generate_labels_each_row_with_its_prompt_and_enlarges_small_images(tmp_path):
    """The grid of `generate`: 8x8 images enlarged 14 times (to 112 px), each row's prompt written
    in a white strip above it; without labels and at display size 1, the plain grid."""
    prompts = ["a handwritten one", "a handwritten two, in a prompt long enough to wrap onto a second line"]

    def grid(name: str, **options) -> np.ndarray:
        config = GenerateConfig(
            str(ARTIFACTS / "text_to_image" / "model"), prompts, str(tmp_path / name), num=2, **options
        )
        return np.asarray(Image.open(generate_grid(config)))

    labelled, plain, raw = (
        grid("a.png"),
        grid("b.png", labels=False),
        grid("c.png", labels=False, display_size=1),
    )
    cell = 8 * 14 + 4  # an image enlarged 14 times, with its 2-pixel border
    assert raw.shape == (2 * 12, 2 * 12) and plain.shape == (2 * cell, 2 * cell)
    assert labelled.shape[1] == plain.shape[1] and labelled.shape[0] > plain.shape[0]
    # Nearest neighbour: every pixel became a 14x14 block of its value.
    np.testing.assert_array_equal(plain[2 : 2 + cell - 4 : 14, 2 : 2 + cell - 4 : 14], raw[2:10, 2:10])
    block = plain[2 + 14 : 2 + 28, 2 + 14 : 2 + 28]
    assert (block == block[0, 0]).all()
    # Each row of images lies below its strip, unchanged; the strips hold dark text on white, the
    # second one (a wrapped prompt) taller than the first.
    first = next(o for o in range(labelled.shape[0]) if np.array_equal(labelled[o : o + cell], plain[:cell]))
    second = labelled.shape[0] - plain.shape[0] - first
    np.testing.assert_array_equal(labelled[-cell:], plain[cell:])
    strips = [labelled[:first], labelled[first + cell : first + cell + second]]
    assert 0 < first < second
    assert all((strip < 100).any() and (strip == 255).mean() > 0.5 for strip in strips)


def test_grid_labels_must_match_the_rows():
    with pytest.raises(InputError, match=r"row_labels: expected one per row \(2\), got 1"):
        image_grid(torch.zeros(4, 1, 8, 8), columns=2, row_labels=["one"])
