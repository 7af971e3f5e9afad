"""Hugging Face Hub conventions: a model named by repo id is found in the local cache (a hand-made
cache entry here: the tests never use the network), at a revision; push_to_hub uploads the folder
with its card (HfApi replaced by a recorder)."""

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from cvae_bridge import ActionChunkPolicy, ConditionalVAE
from cvae_bridge.config import load_run_config
from cvae_bridge.errors import CheckpointError, ConfigError
from cvae_bridge.hub import NO_EVALUATION_YET, model_card, read_run_config, record_evaluation, save_pretrained
from cvae_bridge.pipelines import TextToImagePipeline

ARTIFACTS = Path(__file__).parent / "artifacts"


def cache_entry(cache: Path, repo_id: str, folder: Path, commit: str, ref: str = "main") -> None:
    """The layout huggingface_hub writes: models--owner--name/{refs/<ref>, snapshots/<commit>/...}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)


def test_a_repo_id_loads_from_the_local_cache_at_a_revision(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    cache_entry(cache, "lab/digits", ARTIFACTS / "text_to_image" / "model", "a" * 40)
    cache_entry(cache, "lab/digits", ARTIFACTS / "unconditional_vae" / "model", "b" * 40, ref="v2")
    cache_entry(cache, "lab/arm", ARTIFACTS / "action_chunk" / "model", "c" * 40)
    model = ConditionalVAE.from_pretrained("lab/digits", cache_dir=cache)
    assert list(model.condition_encoders) == ["caption"]
    assert not ConditionalVAE.from_pretrained("lab/digits", revision="v2", cache_dir=cache).condition_encoders
    pipe = TextToImagePipeline.from_pretrained("lab/digits", cache_dir=cache)
    assert pipe("a one", output_type="pt").images.ndim == 4
    assert ActionChunkPolicy.from_pretrained("lab/arm", cache_dir=cache).chunk_size > 0
    with pytest.raises(
        CheckpointError, match="lab/absent: not a folder, and not in the Hugging Face cache.*OFFLINE"
    ):
        ConditionalVAE.from_pretrained("lab/absent", cache_dir=cache)
    with pytest.raises(ConfigError, match="revision: 'v2' is for a Hub repo id"):
        ConditionalVAE.from_pretrained(ARTIFACTS / "text_to_image" / "model", revision="v2")


def test_push_to_hub_uploads_the_folder_with_its_card(monkeypatch):
    import huggingface_hub

    calls = {}

    class RecordingApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            calls["weights"] = ConditionalVAE.from_pretrained(folder_path).state_dict()
            return "https://huggingface.co/lab/digits/commit/abc"

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    model = ConditionalVAE.from_pretrained(ARTIFACTS / "unconditional_vae" / "model")
    url = model.push_to_hub("lab/digits", private=True, token="t")
    assert (
        url.endswith("/commit/abc") and calls["repo"] == ("lab/digits", True, True) and calls["token"] == "t"
    )
    assert calls["files"] == ["README.md", "config.json", "model.safetensors"]
    assert all(torch.equal(a, b) for a, b in zip(calls["weights"].values(), model.state_dict().values()))


def test_saved_folders_hold_no_absolute_path_and_move_with_their_data(tmp_path):
    """Paths in run_config.json are relative to the folder: nothing of this machine's layout is
    written, and a project moved as a whole (run folder and data) still finds its data."""
    source = ARTIFACTS / "text_to_image" / "model"
    run = load_run_config()  # the default (MNIST) run, its data under a root of our own
    (tmp_path / "project" / "data" / "mnist").mkdir(parents=True)
    run = dataclasses.replace(
        run,
        data=dataclasses.replace(run.data, root=str(tmp_path / "project" / "data" / "mnist")),
        train=dataclasses.replace(run.train, output_dir=str(tmp_path / "project" / "runs" / "a")),
    )
    folder = save_pretrained(
        ConditionalVAE.from_pretrained(source), tmp_path / "project" / "runs" / "a" / "model", run
    )
    for path in folder.iterdir():
        assert str(tmp_path) not in path.read_text(errors="replace"), path.name
    shutil.move(tmp_path / "project", tmp_path / "elsewhere")
    moved = read_run_config(tmp_path / "elsewhere" / "runs" / "a" / "model")
    assert Path(moved.data.root) == tmp_path / "elsewhere" / "data" / "mnist"
    assert Path(moved.train.output_dir) == tmp_path / "elsewhere" / "runs" / "a"


def test_evaluations_add_their_figures_to_the_model_card(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(ARTIFACTS / "text_to_image" / "model", folder)
    card = folder / "README.md"
    card.write_text(model_card(ConditionalVAE.from_pretrained(folder)))
    assert NO_EVALUATION_YET in card.read_text()
    assert "added the figures" in record_evaluation(folder, "eval, test split", "| nll | 90 |")
    assert "added the figures" in record_evaluation(folder, "rollout, 50 episodes", "| success | 9% |")
    record_evaluation(folder, "eval, test split", "| nll | 80 |")  # the same evaluation again: replaced
    text = card.read_text()
    assert NO_EVALUATION_YET not in text and "| nll | 90 |" not in text
    evaluation = text[text.index("## Evaluation") :]
    assert evaluation.index("### eval, test split\n\n| nll | 80 |") < evaluation.index(
        "### rollout, 50 episodes\n\n| success | 9% |"
    )
    assert text.startswith("---\nlibrary_name: cvae-bridge")  # the front matter and the rest stay

    # A Hub cache entry's files are links into shared blobs: never written through.
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "README.md").symlink_to(card)
    assert "not updated" in record_evaluation(linked, "eval, test split", "| nll | 1 |")
    assert "| nll | 80 |" in card.read_text()
    assert "not a local folder" in record_evaluation(tmp_path / "absent", "eval", "| nll | 1 |")
