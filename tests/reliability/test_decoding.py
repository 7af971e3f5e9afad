"""Config and model files that cannot be decoded, or that would expand far beyond their size, get
an error naming the file and what was expected, bounded in length, before anything is built:
YAML alias bombs and deep nesting, duplicate keys, text that is not UTF-8, and a model folder's
config.json edited to an architecture its weights file does not hold."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from cvae_bridge import ConditionalVAE
from cvae_bridge.config import load_run_config
from cvae_bridge.errors import CheckpointError, ConfigError
from cvae_bridge.training.finetune import load_adapter

ARTIFACTS = Path(__file__).parents[1] / "artifacts"

ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)

BAD_YAML = [
    ("alias bomb", ALIAS_BOMB, r"expands to more than 1,000,000 values"),
    ("deep nesting", "model: " + "[" * 20000 + "]" * 20000, r"nested more than the parser can follow"),
    ("nesting past the bound", "model: " + "[" * 150 + "]" * 150, r"values nested 151 deep"),
    ("duplicate key", "model: {}\ndata: {}\nmodel: {latent_dim: 3}\n", r"duplicate key 'model'"),
]


@pytest.mark.parametrize("text, message", [case[1:] for case in BAD_YAML], ids=[case[0] for case in BAD_YAML])
def test_config_files_that_expand_or_repeat_are_refused(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message) as error:
        load_run_config(path)
    assert str(path) in str(error.value) and len(str(error.value)) < 500
    assert time.perf_counter() - start < 10


def test_overrides_are_parsed_as_strictly_as_files():
    with pytest.raises(ConfigError, match=r"override model.kl .*duplicate key 'beta'") as error:
        load_run_config(None, ["model.kl={beta: 1, beta: 2}"])
    assert len(str(error.value)) < 500
    with pytest.raises(ConfigError, match=r"override train.freeze: nested"):
        load_run_config(None, ["train.freeze=" + "[" * 20000 + "]" * 20000])


def test_merge_keys_may_be_overridden(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("kl: &kl {beta: 1.0, warmup_steps: 5}\nmodel:\n  kl:\n    <<: *kl\n    beta: 2.0\n")
    with pytest.raises(ConfigError) as error:  # the run config has no `kl` key and no targets
        load_run_config(path)
    assert "duplicate" not in str(error.value)


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes("model: {latent_dim: 4}\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(
        ConfigError, match=rf"config file {path} is not UTF-8 text \(byte 0xe9 at offset 28\)"
    ):
        load_run_config(path)


@pytest.fixture
def model_folder(tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(ARTIFACTS / "text_to_image" / "model", folder)
    return folder


def test_a_model_config_that_is_not_utf8_is_named(model_folder):
    path = model_folder / "config.json"
    path.write_bytes(path.read_bytes().replace(b'"model"', b'"mod\xffel"'))
    with pytest.raises(CheckpointError, match=rf"{path} is not UTF-8 text \(byte 0xff"):
        ConditionalVAE.from_pretrained(model_folder)


def test_a_model_config_edited_to_a_huge_architecture_is_refused_before_allocating(model_folder):
    path = model_folder / "config.json"
    config = json.loads(path.read_text())
    config["model"]["d_model"] = 2_000_000  # ~10^13 parameters in the token projections
    path.write_text(json.dumps(config))
    start = time.perf_counter()
    with pytest.raises(
        CheckpointError, match=r"model.safetensors does not match the model built from its config: .*mismatch"
    ) as error:
        ConditionalVAE.from_pretrained(model_folder)
    assert "2000000" in str(error.value) and len(str(error.value)) < 1000  # five tensors named at most
    assert time.perf_counter() - start < 30  # an allocation of that size would fail or swap first


def test_a_corrupt_adapter_config_is_named(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"base_model": 3}')
    with pytest.raises(CheckpointError, match=r"adapter_config.json: expected a JSON object with base_model"):
        load_adapter(tmp_path)
