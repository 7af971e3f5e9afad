"""The text-to-image pipeline as diffusers users expect it: an output object with `.images`,
"pil" / "pt" / "np", a generator or a seed, `.to(device)`, unconditional models sampled without
prompts. Runs on the committed tiny models of tests/artifacts."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvae_bridge.cli import main
from cvae_bridge.errors import ConfigError
from cvae_bridge.pipelines import TextToImagePipeline

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
