"""ACT-style action chunks: the policy's query period and temporal ensembling, how it feeds
observations to the model, overfitting recorded episodes of both dataset formats, the shipped
configs, and `cvae-bridge replay`."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from conftest import ALOHA_SIM_FEATURES, CONFIGS

from cvae_bridge import ConditionalVAE, ModelConfig, from_dict
from cvae_bridge.cli import main
from cvae_bridge.config import RunConfig, load_run_config
from cvae_bridge.data.act_hdf5 import write_act_hdf5
from cvae_bridge.data.lerobot import write_lerobot_dataset
from cvae_bridge.data.resolve import resolve_run_config
from cvae_bridge.errors import ConfigError, InputError
from cvae_bridge.pipelines import ActionChunkPolicy
from cvae_bridge.training import train
from cvae_bridge.utils.pixels import frame_tensor

K = 8
FEATURES = {"qpos": "observation.state", "top": "observation.images.top", "action": "action"}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_act(chunk=K, dim=2, image=True):
    """ACT in miniature: state (+ a small camera) -> a chunk of `chunk` actions of `dim`."""
    conditions = {"qpos": {"type": "vector", "shape": [3]}}
    if image:
        conditions["top"] = {"type": "image", "widths": [8, 8], "blocks": 0}
    layers = {"heads": 2, "ff_dim": 64, "dropout": 0.0}
    return {
        "d_model": 32,
        "latent_dim": 4,
        "conditions": conditions,
        "targets": {
            "action": {
                "encoder": {"type": "action", "dim": dim, "chunk_size": chunk},
                "decoder": {
                    "type": "action",
                    "dim": dim,
                    "chunk_size": chunk,
                    "encoder_layers": 1,
                    "decoder_layers": 1,
                    **layers,
                },
                "likelihood": {"type": "laplace", "scale": "fixed"},
                "reduction": "mean",
            }
        },
        "posterior": {"type": "transformer", "conditions": ["qpos"], "layers": 1, **layers},
        "kl": {"beta": 10.0},
        "normalize": ["qpos", "action"],
    }


def build(config) -> ConditionalVAE:
    torch.manual_seed(0)
    model = ConditionalVAE(from_dict(ModelConfig, config))
    dim = model.decoders["action"].channels
    model.set_normalization(
        {
            "qpos": (torch.tensor([1.0, -2.0, 3.0]), torch.tensor([2.0, 0.5, 4.0])),
            "action": (torch.full((dim,), 5.0), torch.full((dim,), 3.0)),
        }
    )
    return model


class KnownChunks:
    """Stands in for model.sample: the q-th query returns the chunk 10 q + j at its step j, plus
    100 b for environment b; records the model inputs it was given."""

    def __init__(self, chunk: int, dim: int):
        self.chunk, self.dim, self.inputs = chunk, dim, []

    def __call__(self, conditions, latent="sample", **_):
        assert latent == "mean"  # z = 0, the prior mean
        size = len(conditions["qpos"])
        values = (
            10.0 * len(self.inputs) + torch.arange(self.chunk)[None, :] + 100.0 * torch.arange(size)[:, None]
        )
        self.inputs.append(conditions)
        return {"action": values[..., None].expand(size, self.chunk, self.dim)}


def known_policy(chunk=4, image=False, **options):
    model = build(tiny_act(chunk=chunk, dim=2, image=image))
    policy = ActionChunkPolicy(model, FEATURES, image_size=[6, 6], **options)
    fake = KnownChunks(chunk, 2)
    policy.model.sample = fake
    return policy, fake


STATE = {"observation.state": np.array([0.5, 1.0, -1.0], dtype=np.float32)}


def test_temporal_ensembling_averages_stored_chunks_oldest_first():
    policy, fake = known_policy(chunk=4, temporal_ensemble=0.5)
    actions = [policy.select_action(STATE) for _ in range(5)]
    assert len(fake.inputs) == 5 and actions[0].shape == (2,)
    w = [math.exp(-0.5 * i) for i in range(4)]  # i = 0: the oldest prediction
    # Step 3: the chunks predicted at steps 0, 1, 2, 3 hold 0 + 3, 10 + 2, 20 + 1, 30 + 0 for it.
    assert actions[3] == pytest.approx([(3 * w[0] + 12 * w[1] + 21 * w[2] + 30 * w[3]) / sum(w)] * 2)
    assert actions[3][0] == pytest.approx(11.2388116)
    # Step 4: the chunk of step 0 covers steps 0..3 only; those of steps 1..4 hold 13, 22, 31, 40.
    assert actions[4] == pytest.approx([(13 * w[0] + 22 * w[1] + 31 * w[2] + 40 * w[3]) / sum(w)] * 2)
    assert actions[0] == pytest.approx([0.0, 0.0])
    policy.reset()
    assert policy.select_action(STATE) == pytest.approx([50.0, 50.0])  # a fresh query, nothing kept


@pytest.mark.parametrize("period, queries", [(1, [0, 1, 2, 3, 4, 5]), (3, [0, 3]), (None, [0, 4])])
def test_query_period_runs_the_chunk_open_loop_in_between(period, queries):
    policy, fake = known_policy(chunk=4, query_period=period)
    actions = [policy.select_action(STATE)[0] for _ in range(6)]
    expected = []
    for t in range(6):
        start = max(q for q in queries if q <= t)
        expected.append(10 * queries.index(start) + (t - start))
    assert actions == expected
    assert len(fake.inputs) == len(queries)


def test_invalid_options_are_rejected():
    with pytest.raises(ConfigError, match="query_period: expected 1 .. 4"):
        known_policy(chunk=4, query_period=5)
    with pytest.raises(ConfigError, match="temporal ensembling queries every step"):
        known_policy(chunk=4, query_period=2, temporal_ensemble=0.01)


def test_batch_of_environments():
    policy, fake = known_policy(chunk=4, query_period=1)
    states = {"observation.state": np.zeros((3, 3), dtype=np.float32)}
    actions = policy.select_action(states)
    assert actions.shape == (3, 2) and actions[:, 0].tolist() == [0.0, 100.0, 200.0]
    with pytest.raises(InputError, match="one environment after a batch of 3 environments"):
        policy.select_action(STATE)
    policy.reset()
    assert policy.select_action(STATE).shape == (2,)


def test_observations_are_converted_not_normalised():
    """The policy maps observation keys to model inputs and turns images into float (3, H, W) in
    [0, 1] at the configured size; normalising states is left to the model."""
    policy, fake = known_policy(chunk=4, image=True, query_period=1)
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 10, 12, 3), dtype=np.uint8)
    states = np.array([[0.5, 1.0, -1.0], [2.0, 3.0, 4.0]], dtype=np.float32)
    policy.select_action(
        {"observation.state": states, "observation.images.top": frames, "observation.velocity": np.zeros(3)}
    )
    inputs = fake.inputs[0]
    assert inputs["qpos"].dtype == torch.float32 and torch.equal(inputs["qpos"], torch.from_numpy(states))
    assert inputs["top"].shape == (2, 3, 6, 6) and 0 <= inputs["top"].min() and inputs["top"].max() <= 1
    torch.testing.assert_close(inputs["top"][1], frame_tensor(frames[1], (6, 6)))
    with pytest.raises(InputError, match="missing 'observation.images.top' \\(model input 'top'\\)"):
        policy.select_action(STATE)

    # With the real model: the action is the model's own (normalising, un-normalising) output.
    model = build(tiny_act(chunk=4, image=True))
    real = ActionChunkPolicy(model, FEATURES, image_size=[6, 6], query_period=1)
    action = real.select_action({"observation.state": states[0], "observation.images.top": frames[0]})
    expected = model.sample(
        {"qpos": torch.from_numpy(states[:1]), "top": frame_tensor(frames[0], (6, 6))[None]}, latent="mean"
    )
    np.testing.assert_allclose(action, expected["action"][0, 0].numpy(), rtol=1e-5)


def test_lerobot_batches_give_the_same_actions_as_numpy_observations():
    """LeRobot's convention: torch tensors, images float (B, 3, H, W) in [0, 1]; the action comes
    back as a (B, d) tensor, predict_action_chunk gives the whole chunk."""
    model = build(tiny_act(chunk=4, image=True))
    frames = np.random.default_rng(1).integers(0, 256, size=(2, 10, 12, 3), dtype=np.uint8)
    states = np.array([[0.5, 1.0, -1.0], [2.0, 3.0, 4.0]], dtype=np.float32)
    numpy_policy = ActionChunkPolicy(model, FEATURES, image_size=[6, 6], temporal_ensemble=0.01)
    torch_policy = ActionChunkPolicy(model, FEATURES, image_size=[6, 6], temporal_ensemble=0.01)
    lerobot = {
        "observation.state": torch.from_numpy(states),
        "observation.images.top": torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255,
    }
    for _ in range(3):
        expected = numpy_policy.select_action({"observation.state": states, "observation.images.top": frames})
        action = torch_policy.select_action(lerobot)
        assert isinstance(action, torch.Tensor) and action.shape == (2, 2)
        torch.testing.assert_close(action, torch.from_numpy(expected), rtol=1e-5, atol=1e-5)
    chunk = torch_policy.predict_action_chunk(lerobot)
    assert chunk.shape == (2, 4, 2) and torch_policy.step == 3  # the stored chunks are untouched
    with pytest.raises(InputError, match=r"expected a float image .* in \[0, 1\].*torch.uint8"):
        torch_policy.predict_action_chunk({**lerobot, "observation.images.top": torch.from_numpy(frames)})
    with pytest.raises(InputError, match=r"image values must lie in \[0, 1\]"):
        torch_policy.predict_action_chunk(
            {**lerobot, "observation.images.top": lerobot["observation.images.top"] * 255}
        )


def test_a_lerobot_batch_carries_the_instruction_as_task():
    config = load_run_config(
        CONFIGS / "act_aloha_state.yaml",
        ["model.conditions.instruction={type: text, output: pooled}", "data.instruction_key=instruction"],
    )
    config, _ = resolve_run_config(config, ALOHA_SIM_FEATURES)  # the sizes of an ALOHA sim dataset
    model = ConditionalVAE(config.model)
    model.set_normalization(
        {n: (torch.zeros(d), torch.ones(d)) for n, d in (("qpos", 14), ("env_state", 7), ("action", 14))}
    )
    policy = ActionChunkPolicy(model, config.data.features, instruction_key=config.data.instruction_key)
    batch = {"observation.state": torch.zeros(2, 14), "observation.environment_state": torch.zeros(2, 7)}
    tasks = ["transfer the cube", "insert the peg"]
    chunk = policy.predict_action_chunk({**batch, "task": tasks})
    torch.testing.assert_close(chunk, policy.predict_action_chunk(batch, tasks))
    assert policy.select_action({**batch, "task": tasks}).shape == (2, 14)


# ---------------------------------------------------------------------------------------------
# Training on recorded episodes, replay.


def spinning_episodes(lengths=(12, 5, 10)):
    """Episode e: a point turning at 0.3 rad per step from phase 2e; the action is the next
    position. Episode 1 is shorter than the chunk (K = 8)."""
    episodes = []
    for e, n in enumerate(lengths):
        t = np.arange(n + 1)
        angle = 2.0 * e + 0.3 * t
        image = np.zeros((n, 8, 8, 3), np.uint8)
        image[..., e] = 200
        episodes.append(
            {
                "observation.state": np.stack([np.cos(angle), np.sin(angle), 0.1 * t], 1)[:n].astype(
                    np.float32
                ),
                "observation.images.top": image,
                "action": np.stack([np.sin(angle), 0.5 * np.cos(angle)], 1)[1:].astype(np.float32),
                "task": "follow the circle",
            }
        )
    return episodes


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny ACT overfitted on episodes in the LeRobot layout; the same episodes as ACT HDF5."""
    root = tmp_path_factory.mktemp("act")
    write_lerobot_dataset(root / "lerobot", spinning_episodes(), fps=10)
    write_act_hdf5(root / "hdf5", spinning_episodes())
    config = from_dict(
        RunConfig,
        {
            "model": tiny_act(),
            "data": {
                "type": "lerobot",
                "path": str(root / "lerobot"),
                "features": FEATURES,
                "chunk_size": K,
                "image_size": [6, 6],
                "val_fraction": 0.0,
            },
            "train": {
                "output_dir": str(root / "run"),
                "steps": 200,
                "batch_size": 16,
                "lr": 3e-3,
                "warmup_steps": 10,
                "eval_every": 0,
                "checkpoint_every": 0,
                "progress_bar": False,
                "trackers": [],
            },
        },
    )
    train(config)
    return root


# An untrained model is off by about 0.45 here (actions span [-1, 1]); 200 steps reach about 0.01.
L1_THRESHOLD = 0.05


@pytest.mark.parametrize("options", [[], ["--query-period", "1"], ["--temporal-ensemble", "0.5"]])
def test_policy_reproduces_the_recorded_actions(trained, options):
    reports = {}
    for layout in ("lerobot", "hdf5"):
        out = trained / f"replay_{layout}.json"
        assert (
            main(
                [
                    "replay",
                    "--model",
                    str(trained / "run" / "model"),
                    "--data",
                    str(trained / layout),
                    "--out",
                    str(out),
                    *options,
                ]
            )
            == 0
        )
        reports[layout] = json.loads(out.read_text())
    report = reports["lerobot"]
    assert [e["frames"] for e in report["episodes"]] == [12, 5, 10] and report["frames"] == 27
    assert report["l1"] < L1_THRESHOLD, report
    assert max(e["l1"] for e in report["episodes"]) < 2 * L1_THRESHOLD
    assert reports["hdf5"]["l1"] == pytest.approx(report["l1"], rel=1e-5)


def test_replay_selects_episodes_and_names_unknown_ones(trained, capsys):
    from cvae_bridge.evaluation.replay import ReplayConfig, replay_episodes

    model, data = str(trained / "run" / "model"), str(trained / "hdf5")
    report = replay_episodes(ReplayConfig(model, data, episodes=[1], query_period=2))
    assert [e["episode"] for e in report["episodes"]] == [1] and report["query_period"] == 2
    progress = capsys.readouterr().err  # the bar counts the frames replayed
    assert "replay: 100%" in progress and f"| {report['frames']}/{report['frames']} [" in progress
    replay_episodes(ReplayConfig(model, data, episodes=[1], progress_bar=False))
    assert "replay" not in capsys.readouterr().err
    with pytest.raises(InputError, match=r"episodes: \[7\] are not in"):
        replay_episodes(ReplayConfig(model, data, episodes=[7]))


def test_replay_in_bfloat16_is_near_float32(trained):
    from cvae_bridge.evaluation.replay import ReplayConfig, replay_episodes
    from cvae_bridge.pipelines.policy import native_bf16

    model, data = str(trained / "run" / "model"), str(trained / "hdf5")
    fp32 = replay_episodes(ReplayConfig(model, data, episodes=[1], progress_bar=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bf16 = replay_episodes(ReplayConfig(model, data, episodes=[1], progress_bar=False, dtype="bfloat16"))
    emulated = [w for w in caught if "emulates" in str(w.message)]
    assert len(emulated) == (0 if native_bf16(torch.device("cpu")) else 1)
    assert bf16["l1"] != fp32["l1"] and bf16["l1"] == pytest.approx(fp32["l1"], abs=0.05)


# ---------------------------------------------------------------------------------------------
# The shipped configs.


def test_act_image_config_has_act_sizes():
    config, _ = resolve_run_config(load_run_config(CONFIGS / "act_aloha.yaml"), ALOHA_SIM_FEATURES)
    model = ConditionalVAE(config.model)
    count = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in model.condition_encoders["top"].backbone.parameters())
    # ACT's paper: about 80M, ResNet18's trunk (11.2M) included; EfficientNet-Lite0's trunk is 3.4M
    assert 68e6 < count - backbone < 75e6 and 3e6 < backbone < 4e6, (count, backbone)
    decoder = config.model.targets["action"].decoder
    assert (decoder.encoder_layers, decoder.decoder_layers, decoder.ff_dim, decoder.chunk_size) == (
        4,
        7,
        3200,
        100,
    )
    assert config.train.mixed_precision == "bf16" and config.model.conditions["top"].finetune
    with torch.inference_mode():  # total stride 32, as ResNet18: 480x640 -> 15x20 tokens
        tokens = model.condition_encoders["top"](torch.zeros(1, 3, 480, 640))
    assert tokens.x.shape == (1, 300, 512)


def act_episodes(lengths=(30, 20)):
    rng = np.random.default_rng(0)
    return [
        {
            "observation.state": rng.normal(size=(n, 14)).astype(np.float32),
            "observation.environment_state": rng.normal(size=(n, 7)).astype(np.float32),
            "action": rng.normal(size=(n, 14)).astype(np.float32),
        }
        for n in lengths
    ]


@pytest.mark.parametrize("layout", ["lerobot", "act_hdf5"])
def test_state_config_trains_from_either_format(tmp_path, layout):
    data = tmp_path / "data"
    if layout == "lerobot":
        write_lerobot_dataset(data, act_episodes(), fps=50)
    else:
        write_act_hdf5(data, act_episodes())
    settings = [
        f"data.type={layout}",
        f"data.path={data}",
        f"train.output_dir={tmp_path / 'run'}",
        "train.steps=2",
        "train.batch_size=4",
        "train.eval_every=0",
        "train.progress_bar=false",
        "train.trackers=[]",
    ]
    assert (
        main(["train", str(CONFIGS / "act_aloha_state.yaml"), *[a for s in settings for a in ("--set", s)]])
        == 0
    )
    policy = ActionChunkPolicy.from_pretrained(tmp_path / "run" / "model", temporal_ensemble=0.01)
    action = policy.select_action(
        {"observation.state": np.zeros(14), "observation.environment_state": np.zeros(7)}
    )
    assert action.shape == (14,) and np.isfinite(action).all()


def test_one_override_removes_a_modality(tmp_path):
    """ACT's own HDF5 files have no environment state: `model.conditions.env_state=null` drops it
    from the model, the data features and the normalisation, and the policy needs the joints only."""
    data = tmp_path / "data"
    write_act_hdf5(
        data, [{k: v for k, v in e.items() if k != "observation.environment_state"} for e in act_episodes()]
    )
    settings = [
        "model.conditions.env_state=null",
        "data.type=act_hdf5",
        f"data.path={data}",
        f"train.output_dir={tmp_path / 'run'}",
        "train.steps=2",
        "train.batch_size=4",
        "train.eval_every=0",
        "train.progress_bar=false",
        "train.trackers=[]",
    ]
    config = load_run_config(CONFIGS / "act_aloha_state.yaml", settings)
    assert list(config.model.conditions) == ["qpos"] and "env_state" not in config.model.normalize
    assert "env_state" not in config.data.features and config.model.posterior.conditions == ["qpos"]
    assert (
        main(["train", str(CONFIGS / "act_aloha_state.yaml"), *[a for s in settings for a in ("--set", s)]])
        == 0
    )
    policy = ActionChunkPolicy.from_pretrained(tmp_path / "run" / "model")
    assert policy.select_action({"observation.state": np.zeros(14)}).shape == (14,)


def test_instruction_variant_builds_and_takes_the_task_text():
    overrides = [
        "model.conditions.instruction={type: text, output: tokens}",
        "data.instruction_key=instruction",
    ]
    config, _ = resolve_run_config(
        load_run_config(CONFIGS / "act_aloha_state.yaml", overrides), ALOHA_SIM_FEATURES
    )
    model = ConditionalVAE(config.model)
    model.set_normalization(
        {n: (torch.zeros(d), torch.ones(d)) for n, d in (("qpos", 14), ("env_state", 7), ("action", 14))}
    )
    policy = ActionChunkPolicy(model, config.data.features, instruction_key=config.data.instruction_key)
    observation = {"observation.state": np.zeros((2, 14)), "observation.environment_state": np.zeros((2, 7))}
    assert policy.select_action(observation, ["transfer the cube", "insert the peg"]).shape == (2, 14)
    policy.reset()
    with pytest.raises(InputError, match="conditioned on 'instruction'; pass the task text"):
        policy.select_action(observation)


def test_action_decoder_at_inference_drops_only_a_mask_that_hides_nothing():
    """Without gradients a mask with no padded token is left out (a faster attention): the same
    chunk; a mask that pads tokens still hides them."""
    from cvae_bridge.modalities.action import ActionDecoder, ActionDecoderConfig
    from cvae_bridge.modalities.base import Tokens

    torch.manual_seed(0)
    config = ActionDecoderConfig(dim=2, chunk_size=K, encoder_layers=1, decoder_layers=1, heads=2, ff_dim=32)
    decoder = ActionDecoder(config, d_model=16, latent_dim=4, conditioned=True).eval()
    z, tokens = torch.randn(2, 4), torch.randn(2, 5, 16)
    valid = torch.ones(2, 5, dtype=torch.bool)
    masked = decoder(z, Tokens(tokens, valid)).detach()  # with gradients: the mask is passed
    with torch.no_grad():
        torch.testing.assert_close(decoder(z, Tokens(tokens, valid)), masked)
        valid[:, -2:] = False
        padded = decoder(z, Tokens(tokens, valid))
        tokens[:, -2:] = 100.0  # hidden tokens do not count
        torch.testing.assert_close(decoder(z, Tokens(tokens, valid)), padded)
        assert not torch.allclose(padded, masked, atol=1e-3)
