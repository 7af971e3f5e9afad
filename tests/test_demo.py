"""The demo page (cvae_bridge/demo.py): served on a local port and driven through its HTTP API with
gradio_client, on the committed tiny text-to-image model and a rollout folder the test writes."""

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvae_bridge.cli import main
from cvae_bridge.demo import DemoConfig, build_demo, launch_demo, read_rollouts
from cvae_bridge.errors import ConfigError, DependencyError, InputError
from cvae_bridge.evaluation.video import write_video

MODEL = str(Path(__file__).parent / "artifacts" / "text_to_image" / "model")


def write_rollouts(folder):
    """A rollout folder as `cvae-bridge rollout --out F --video-dir F/videos` leaves it: two tasks,
    an MP4 and a GIF that success.json names, and a video it does not."""
    frames = [np.full((16, 24, 3), 40 * i, np.uint8) for i in range(4)]
    videos = folder / "videos"
    mp4 = write_video(videos / "reach-v3_000_seed100000_success.mp4", frames, fps=10)
    gif = write_video(videos / "push-v3_000_seed100000_failure.gif", frames, fps=10)
    write_video(videos / "extra.gif", frames, fps=10)

    def task(rate, steps, result):
        return {"success_rate": rate, "successes": 1, "episodes": 2, "mean_steps": steps, "results": [result]}

    report = {
        "model": "runs/policy/model",
        "suite": "metaworld",
        "mean_success_rate": 0.25,
        "episodes_per_task": 2,
        "seeds": [100000, 100001],
        "tasks": {
            "reach-v3": task(0.5, 120.4, {"seed": 100000, "success": True, "steps": 90, "video": str(mp4)}),
            "push-v3": task(
                0.0,
                500.0,
                {"seed": 100000, "success": False, "steps": 500, "instruction": "push it", "video": str(gif)},
            ),
        },
    }
    (folder / "success.json").write_text(json.dumps(report))
    return mp4, gif


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_page_serves_a_labelled_gallery_and_the_rollouts(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # the images it serves
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    mp4, gif = write_rollouts(tmp_path / "rollout")
    config = DemoConfig(
        model=MODEL, rollouts=str(tmp_path / "rollout"), display_size=16, port=free_port(), prompts=["a one"]
    )
    demo = launch_demo(config, block=False)
    try:
        client = Client(demo.local_url, verbose=False, download_files=str(tmp_path / "downloads"))
        gallery = client.predict("a one\n\na two", 3, 0.8, 5, api_name="/generate")
        assert gallery["columns"] == 3  # a row per prompt
        assert [item["caption"] for item in gallery["value"]] == ["a one"] * 3 + ["a two"] * 3
        images = [Image.open(item["image"]) for item in gallery["value"]]
        assert [image.size for image in images] == [(16, 16)] * 6  # 8 x 8, enlarged twice
        again = client.predict("a one\na two", 3, 0.8, 5, api_name="/generate")["value"]
        assert [np.asarray(Image.open(i["image"])).tolist() for i in again] == [
            np.asarray(image).tolist() for image in images
        ]  # the seed fixes the draws
        with pytest.raises(AppError, match="prompts: expected at least one prompt"):
            client.predict(" \n", 3, 0.8, 5, api_name="/generate")

        summary, table, episodes, video, still = client.predict(api_name="/rollouts")
        assert "metaworld" in summary and "2 episodes per task" in summary
        assert table["headers"] == ["task", "success", "episodes", "mean steps"]
        assert table["data"] == [
            ["reach-v3", "50.0%", 2, 120],
            ["push-v3", "0.0%", 2, 500],
            ["mean", "25.0%", "", ""],
        ]
        assert [label for label, _ in episodes["choices"]] == [
            "extra.gif",  # not in success.json: its file name
            'push-v3, seed 100000: failure in 500 steps, "push it"',
            "reach-v3, seed 100000: success in 90 steps",
        ]
        assert episodes["value"].endswith("extra.gif") and still["visible"] and not video["visible"]
        video, still = client.predict(str(mp4), api_name="/episode")
        assert video["visible"] and video["value"].endswith(mp4.name) and not still["visible"]
        video, still = client.predict(str(gif), api_name="/episode")
        assert still["visible"] and still["value"].endswith(gif.name) and not video["visible"]
        with pytest.raises(AppError):  # only the folder's videos can be chosen
            client.predict(str(tmp_path / "other.gif"), api_name="/episode")
    finally:
        demo.close()


def test_bad_folders_and_settings_are_named(tmp_path, capsys):
    with pytest.raises(ConfigError, match="give a text-to-image model folder, a rollout folder or both"):
        build_demo(DemoConfig())
    with pytest.raises(ConfigError, match=r"num: expected at most max_num \(4\), got 5"):
        build_demo(DemoConfig(model=MODEL, num=5, max_num=4))
    with pytest.raises(InputError, match="success.json not found: expected the folder `cvae-bridge rollout"):
        read_rollouts(tmp_path)
    (tmp_path / "success.json").write_text(json.dumps({"tasks": {"reach-v3": {"episodes": 2}}}))
    with pytest.raises(InputError, match=r"success.json: expected the report .*KeyError\('success_rate'\)"):
        read_rollouts(tmp_path)
    assert main(["demo", "--port", "0", "--model", MODEL]) == 2
    assert "demo.port: expected an integer in [1, 65535], got 0" in capsys.readouterr().err


def test_a_missing_gradio_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    with pytest.raises(DependencyError, match=r'pip install "cvae-bridge\[demo\]"'):
        build_demo(DemoConfig(model=MODEL))
