"""Rollout videos: an episode's camera frames, captioned with the step, the task and its outcome.

    write_video(path, frames, fps)     .mp4 (H.264, yuv420p: plays in browsers) or .gif, by suffix
    check_video_format(kind, encode)   before a rollout: "mp4" or "gif", and MP4 encodable here
    caption_episode(frames, ...)       each frame with "<task> | step k | running|success|failure"

MP4 keeps every frame at the simulator's rate; a GIF keeps every n-th frame so as to play at
about GIF_FPS (browsers slow GIF frames shorter than 20 ms down), both in real time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DependencyError
from ..utils.drawing import caption

VIDEO_FORMATS = ("mp4", "gif")
GIF_FPS = 20
STATUS_COLOURS = {"running": (255, 255, 255), "success": (90, 230, 90), "failure": (255, 100, 100)}


def caption_episode(
    frames: Sequence[np.ndarray], task: str, instruction: str | None, success: bool
) -> list[np.ndarray]:
    """Frame k (k = 0 the reset) captioned with the task, the step and "running", the last one with
    the episode's outcome; the instruction, where the policy got one, on the line below."""
    outcome = "success" if success else "failure"
    captioned = []
    for k, frame in enumerate(frames):
        status = outcome if k == len(frames) - 1 else "running"
        lines = [(f"{task} | step {k} | {status}", STATUS_COLOURS[status])]
        if instruction:
            lines.append((f'"{instruction}"', STATUS_COLOURS["running"]))
        captioned.append(caption(frame, lines))
    return captioned


def check_video_format(kind: str, encode: bool) -> None:
    """A ConfigError for a format other than mp4 / gif; with `encode` (videos will be written), a
    DependencyError where MP4 cannot be encoded: before the episodes run, not after."""
    if kind not in VIDEO_FORMATS:
        raise ConfigError(f"video_format: expected one of {list(VIDEO_FORMATS)}, got {kind!r}")
    if encode and kind == "mp4":
        _pyav()


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: int) -> Path:
    """(H, W, 3) uint8 `frames` shown at `fps` as `path`: an MP4 or a GIF, from its suffix."""
    path = Path(path)
    kind = path.suffix.lstrip(".").lower()
    if kind not in VIDEO_FORMATS:
        raise ConfigError(f"video: expected a file name ending in .mp4 or .gif, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    (_write_mp4 if kind == "mp4" else _write_gif)(path, frames, fps)
    return path


def _pyav():
    """The `av` module, with an H.264 encoder."""
    try:
        import av
    except ImportError as error:
        raise DependencyError(
            'MP4 videos need PyAV: pip install "cvae-bridge[sim]" (or pip install av), or choose video_format gif'
        ) from error
    if "libx264" not in av.codecs_available:
        raise DependencyError(
            "MP4 videos need an H.264 encoder (libx264), which this PyAV lacks: pip install av "
            "(its wheels include one), or choose video_format gif"
        )
    return av


def _write_mp4(path: Path, frames: Sequence[np.ndarray], fps: int) -> None:
    av = _pyav()
    height, width = frames[0].shape[:2]
    # yuv420p halves the chroma planes, so both sides must be even: repeat the last row / column
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(np.pad(frame, pad, mode="edge"), format="rgb24")
            container.mux(stream.encode(picture))
        container.mux(stream.encode())  # flush the encoder's buffered frames


def _write_gif(path: Path, frames: Sequence[np.ndarray], fps: int) -> None:
    from PIL import Image

    stride = max(1, round(fps / GIF_FPS))
    images = [Image.fromarray(frame) for frame in frames[::stride]]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 * stride / fps), loop=0)
