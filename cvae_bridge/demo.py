"""A demo page (Gradio, the `demo` extra): prompts in, a labelled gallery out; a policy's rollout
videos with their success table.

    cvae-bridge demo --model runs/mnist_text_to_image/model [--rollouts runs/metaworld_mt10/rollout]
    launch_demo(DemoConfig(model="runs/mnist_text_to_image/model"))   # serves until Ctrl-C

Tabs, one per folder given:
- "Generate" (`model`, a text-to-image model folder): prompts (one per line), images per prompt,
  temperature and seed in; a gallery out, a row per prompt, each image captioned with its prompt.
- "Rollouts" (`rollouts`, the folder `cvae-bridge rollout --out DIR` wrote): the success table of
  its success.json and a player for each video found under the folder (MP4 or GIF), captioned with
  the episode's task, seed, outcome and instruction (`rollout --out DIR --video-dir DIR/videos`).

Its HTTP API (gradio_client) has the endpoints /generate (the button), /rollouts (the tab read
again from the folder: its Reload button) and /episode (the menu). The page reaches nothing outside
this machine: Gradio's telemetry and version check are off, and its theme uses the fonts that
Gradio ships (no Google Fonts).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from .config import PositiveFloat, PositiveInt, Range, Seed
from .errors import ConfigError, CvaeBridgeError, DependencyError, InputError
from .hub import RUN_CONFIG_NAME, read_run_config
from .pipelines.text_to_image import TextToImagePipeline
from .utils.pixels import DISPLAY_SIZE, display_scale, image_grid

if TYPE_CHECKING:
    import gradio as gr

REPORT_NAME = "success.json"  # what `cvae-bridge rollout` writes into its --out folder
VIDEO_SUFFIXES = (".mp4", ".gif")
TABLE_HEADERS = ["task", "success", "episodes", "mean steps"]


@dataclass
class DemoConfig:
    """What `cvae-bridge demo` serves: a tab for each folder given (at least one)."""

    model: str | None = None  # a text-to-image model folder: the "Generate" tab
    rollouts: str | None = None  # a folder `cvae-bridge rollout` wrote: the "Rollouts" tab
    prompts: list[str] = field(default_factory=list)  # the first prompts; empty: the run's eval.prompts
    num: PositiveInt = 4  # images per prompt, at first
    max_num: PositiveInt = 16  # the most images per prompt the page offers
    temperature: PositiveFloat = 1.0  # at first; scales the prior's standard deviation
    seed: Seed = 0  # at first
    device: str = "auto"  # the GPU where there is one
    display_size: PositiveInt = DISPLAY_SIZE  # images enlarged (nearest neighbour) to about this many pixels
    host: str = "127.0.0.1"  # "0.0.0.0" serves the network
    port: Annotated[int, Range(1, 65535)] | None = None  # None: the first free one from 7860


def build_demo(config: DemoConfig) -> gr.Blocks:
    """The page, not yet served (`launch_demo` serves it)."""
    if config.model is None and config.rollouts is None:
        raise ConfigError("model, rollouts: give a text-to-image model folder, a rollout folder or both")
    if config.num > config.max_num:
        raise ConfigError(f"num: expected at most max_num ({config.max_num}), got {config.num}")
    gr = _import_gradio()
    with gr.Blocks(title="cvae_bridge demo", analytics_enabled=False) as demo:
        gr.Markdown("# cvae_bridge demo")
        if config.model is not None:
            with gr.Tab("Generate"):
                _generate_tab(gr, config)
        if config.rollouts is not None:
            with gr.Tab("Rollouts"):
                _rollouts_tab(gr, Path(config.rollouts))
    return demo


def launch_demo(config: DemoConfig, block: bool = True) -> gr.Blocks:
    """Serve the page at http://host:port; `block` waits until Ctrl-C (else it serves from a thread
    until `demo.close()`)."""
    demo = build_demo(config)
    gr = _import_gradio()
    demo.launch(
        server_name=config.host,
        server_port=config.port,
        prevent_thread_lock=not block,
        share=False,
        ssr_mode=False,  # no Node server
        allowed_paths=[config.rollouts] if config.rollouts is not None else None,  # the videos
        footer_links=["api"],
        quiet=not block,
        theme=gr.themes.Default(),  # its fonts are files Gradio serves itself
    )
    return demo


def _import_gradio() -> Any:
    # Telemetry and the version check would call api.gradio.app; the env variable is what turns them all off.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as error:
        raise DependencyError(
            'the demo page needs Gradio: pip install "cvae-bridge[demo]" (or pip install gradio)'
        ) from error
    return gradio


def _generate_tab(gr: Any, config: DemoConfig) -> None:
    pipe = TextToImagePipeline.from_pretrained(config.model, device=config.device)
    conditional = pipe.caption_key is not None
    prompts = config.prompts or _run_prompts(Path(config.model))

    def samples(lines: list[str], num: int, temperature: float, seed: int) -> list[tuple[Any, str]]:
        images = pipe(
            lines or None, num_images_per_prompt=num, temperature=temperature, seed=seed, output_type="pt"
        ).images
        scale = display_scale(images.shape[-2:], config.display_size)
        captions = [line for line in lines for _ in range(num)] or [f"sample {i}" for i in range(num)]
        return [(image_grid(x[None], columns=1, padding=0, scale=scale), c) for x, c in zip(images, captions)]

    def gallery(items: list[tuple[Any, str]], num: int) -> Any:
        # a component: rendered where it is built, the new value and layout where an event returns it
        return gr.Gallery(items, columns=num, height=680, label="samples", format="png", object_fit="contain")

    def generate(text: str, num: int, temperature: float, seed: int) -> Any:
        lines = [line.strip() for line in text.splitlines() if line.strip()] if conditional else []
        if conditional and not lines:
            raise gr.Error("prompts: expected at least one prompt, one per line")
        try:
            return gallery(samples(lines, num, temperature, seed), num)
        except CvaeBridgeError as error:
            raise gr.Error(str(error)) from error

    with gr.Row():
        with gr.Column(scale=1):
            text = gr.Textbox(
                "\n".join(prompts),
                lines=max(3, min(len(prompts), 10)),
                label="prompts, one per line" if conditional else "prompts (none: an unconditional model)",
                interactive=conditional,
            )
            num = gr.Slider(1, config.max_num, config.num, step=1, precision=0, label="images per prompt")
            temperature = gr.Slider(0.05, 2.0, config.temperature, step=0.05, label="temperature")
            seed = gr.Number(config.seed, precision=0, minimum=0, maximum=2**31 - 1, label="seed")
            button = gr.Button("Generate", variant="primary")
        with gr.Column(scale=3):  # the page opens with the samples of its first prompts
            shown = prompts or not conditional
            output = gallery(
                samples(prompts, config.num, config.temperature, config.seed) if shown else [], config.num
            )
    button.click(generate, [text, num, temperature, seed], output, api_name="generate")


def _run_prompts(model: Path) -> list[str]:
    """The prompts of the model's sample grids (its run's eval.prompts); none without a run config."""
    return list(read_run_config(model).eval.prompts) if (model / RUN_CONFIG_NAME).is_file() else []


def _rollouts_tab(gr: Any, folder: Path) -> None:
    # These return components: built where they are called in the layout, new values where an
    # event returns them.
    def player(path: str | None) -> tuple[Any, Any]:
        """An MP4 in a video player, a GIF as an image."""
        mp4 = path is not None and Path(path).suffix.lower() == ".mp4"
        gif = path is not None and not mp4
        return (
            gr.Video(
                path if mp4 else None, autoplay=True, loop=True, height=480, label="rollout", visible=mp4
            ),
            gr.Image(path if gif else None, type="filepath", height=480, label="rollout", visible=gif),
        )

    def episode_views(episodes: dict[str, str]) -> tuple[Any, Any, Any]:
        """A menu of the videos by caption, and the player showing the first."""
        first = next(iter(episodes), None)
        menu = gr.Dropdown([(c, p) for p, c in episodes.items()], value=first, label="episode")
        return menu, *player(first)

    def read() -> tuple[Any, ...]:
        summary, rows, episodes = read_rollouts(folder)
        return summary, rows, *episode_views(episodes)

    summary, rows, episodes = read_rollouts(folder)  # a missing or malformed report raises here
    with gr.Row():
        with gr.Column():
            heading = gr.Markdown(summary)
            table = gr.Dataframe(rows, headers=TABLE_HEADERS, interactive=False, label="success per task")
            reload = gr.Button("Reload", size="sm")  # after a rerun of the rollout
        with gr.Column():
            choice, video, gif = episode_views(episodes)
    choice.change(player, choice, [video, gif], api_name="episode")
    reload.click(read, None, [heading, table, choice, video, gif], api_name="rollouts")


def read_rollouts(folder: str | Path) -> tuple[str, list[list[Any]], dict[str, str]]:
    """A rollout folder's summary line, its success table (a row per task, then the mean) and its
    videos (path -> caption), in name order. A video that success.json names gets its episode's
    task, seed, outcome and instruction as caption, any other its file name."""
    folder = Path(folder)
    path = folder / REPORT_NAME
    if not path.is_file():
        raise InputError(
            f"rollouts: {path} not found: expected the folder `cvae-bridge rollout --out DIR` writes"
        )
    try:
        report = json.loads(path.read_text())
        tasks = report["tasks"]
        rows = [
            [task, f"{100 * row['success_rate']:.1f}%", row["episodes"], round(row["mean_steps"])]
            for task, row in tasks.items()
        ]
        rows.append(["mean", f"{100 * report['mean_success_rate']:.1f}%", "", ""])
        named = {
            Path(result["video"]).name: _caption(task, result)
            for task, row in tasks.items()
            for result in row["results"]
            if result.get("video")
        }
        summary = (
            f"**{report['suite']}**: `{report['model']}`, {report['episodes_per_task']} episodes per task "
            f"(seeds {report['seeds'][0]} .. {report['seeds'][1]})"
        )
    except (AttributeError, KeyError, TypeError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise InputError(
            f"{path}: expected the report `cvae-bridge rollout` writes (tasks with success_rate, episodes, "
            f"mean_steps and results; mean_success_rate, suite, model, episodes_per_task, seeds): {error!r}"
        ) from error
    videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    return summary, rows, {str(p): named.get(p.name, p.name) for p in videos}


def _caption(task: str, result: dict[str, Any]) -> str:
    outcome = "success" if result["success"] else "failure"
    text = f"{task}, seed {result['seed']}: {outcome} in {result['steps']} steps"
    return f'{text}, "{result["instruction"]}"' if result.get("instruction") else text
