"""Rollout videos (evaluation/video.py): MP4 by default, GIF as an option, each frame captioned with
the task, the step and the outcome. Frames here are plain colours, so the caption is all that
differs from them."""

import sys

import numpy as np
import pytest
from PIL import Image

from cvae_bridge.errors import ConfigError, DependencyError
from cvae_bridge.evaluation.video import caption_episode, check_video_format, write_video

av = pytest.importorskip("av")

COLOUR = np.array([30, 90, 140], dtype=np.uint8)


def episode(steps: int, height: int = 96, width: int = 240) -> list[np.ndarray]:
    """The frames of an episode of `steps` steps: the reset's, then one per step."""
    return [np.broadcast_to(COLOUR, (height, width, 3)).copy() for _ in range(steps + 1)]


def decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.format.name) == ("h264", "yuv420p")
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]


def test_an_mp4_holds_every_captioned_frame(tmp_path):
    frames = caption_episode(episode(12), "reach-v3", "reach the red goal", success=True)
    path = write_video(tmp_path / "videos" / "reach.mp4", frames, fps=80)
    video = decoded(path)
    assert len(video) == 13 and video[0].shape == (96, 240, 3)
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == 80
    # The caption's band at the top changed the pixels; the rest of the scene is as rendered (up to
    # the encoder's losses), and the last frame's outcome is written in another colour.
    top, bottom = video[5][:12].astype(int), video[5][48:].astype(int)  # two lines of text above
    assert np.abs(top - COLOUR).max() > 60 and np.abs(bottom - COLOUR).max() < 12
    assert np.abs(video[-1][:12].astype(int) - video[-2][:12]).max() > 60
    assert np.array_equal(frames[3][48:], episode(0)[0][48:]) and not np.array_equal(frames[3], frames[4])


def test_odd_sizes_are_padded_to_even_ones(tmp_path):
    video = decoded(write_video(tmp_path / "odd.mp4", episode(3, height=45, width=61), fps=50))
    assert len(video) == 4 and video[0].shape == (46, 62, 3)


def test_a_gif_keeps_every_nth_frame_in_real_time(tmp_path):
    frames = [frame + np.uint8(10 * k) for k, frame in enumerate(episode(12))]  # distinct frames
    with Image.open(write_video(tmp_path / "reach.gif", frames, fps=80)) as gif:
        assert gif.n_frames == len(range(0, 13, 4)) and gif.info["duration"] == 50  # 80 fps / 4


def test_formats_and_a_missing_encoder_are_named(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"video_format: expected one of \['mp4', 'gif'\], got 'webm'"):
        check_video_format("webm", encode=False)
    with pytest.raises(ConfigError, match=r"expected a file name ending in .mp4 or .gif, got 'a.avi'"):
        write_video(tmp_path / "a.avi", episode(1), fps=10)
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed
    check_video_format("mp4", encode=False)  # no video to write: nothing needed
    check_video_format("gif", encode=True)
    with pytest.raises(DependencyError, match=r'pip install "cvae-bridge\[sim\]"'):
        check_video_format("mp4", encode=True)
