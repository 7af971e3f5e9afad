"""LeRobot v3 metadata: the layout's paths and constants, info.json, tasks and the episodes table."""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import DependencyError, InputError
from ...utils.files import confined_path

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DEFAULT_EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE_PATTERN + ".parquet"
DEFAULT_DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
DEFAULT_VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
DEFAULT_CHUNK_SIZE = 1000  # files per chunk folder
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 500
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
VISUAL = ("image", "video")
# The per-element quantiles LeRobot (0.4) keeps in every feature's stats, beside min, max, mean,
# std and count; `stats/<feature>/q01` ... columns of meta/episodes and keys of meta/stats.json.
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def _arrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:  # pragma: no cover - pyarrow is in the `data` extra
        raise DependencyError(
            'reading LeRobot datasets needs pyarrow: pip install "cvae-bridge[data]"'
        ) from error
    return pa, pq


def _av():
    try:
        import av
    except ImportError as error:
        raise DependencyError(
            'this LeRobot dataset stores images as videos; decoding them needs PyAV: pip install "cvae-bridge[video]"'
        ) from error
    return av


# ---------------------------------------------------------------------------------------------
# Where a dataset is: a folder, or a repo id under LeRobot's home.


def lerobot_home() -> Path:
    """LeRobot's dataset cache: $HF_LEROBOT_HOME, else $HF_HOME/lerobot (HF_HOME defaulting to
    $XDG_CACHE_HOME/huggingface, ~/.cache/huggingface), as `lerobot.utils.constants` has it."""
    if os.environ.get("HF_LEROBOT_HOME"):
        return Path(os.environ["HF_LEROBOT_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    hf_home = os.environ.get("HF_HOME") or os.path.join(cache, "huggingface")
    return Path(os.path.expandvars(hf_home)).expanduser() / "lerobot"


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def dataset_root(path: str | Path) -> Path:
    """The folder of a LeRobot dataset named by `path`: the folder itself if it exists, else, for
    a repo id ("owner/name"), its folder under `lerobot_home()`, where LeRobot keeps it."""
    folder = Path(path)
    if folder.is_dir() or not _REPO_ID.match(str(path)):
        if not folder.is_dir():
            raise InputError(f"{folder}: LeRobot dataset folder does not exist")
        return folder
    cached = lerobot_home() / str(path)
    if not cached.is_dir():
        raise InputError(
            f"{path}: neither a folder nor a dataset under LeRobot's home {cached.parent.parent} "
            f"(HF_LEROBOT_HOME, default ~/.cache/huggingface/lerobot); give the dataset folder, or "
            f"download it there first (`hf download {path} --repo-type dataset --local-dir {cached}`)"
        )
    return cached


# ---------------------------------------------------------------------------------------------
# Metadata.


def read_info(root: Path) -> dict:
    """meta/info.json, checked: a v3 codebase version, features, fps, data_path."""
    path = root / INFO_PATH
    if not path.is_file():
        raise InputError(f"{path}: missing; {root} is not a LeRobot dataset folder")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not readable JSON: {error}") from error
    if not isinstance(info, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(info).__name__}")
    version = info.get("codebase_version")
    if not isinstance(version, str) or not version.startswith("v3"):
        raise InputError(
            f"{path}: codebase_version {version!r} is not supported; this reader supports LeRobotDataset "
            f"{CODEBASE_VERSION} (v3.x). Convert older datasets with lerobot's "
            f"`python -m lerobot.datasets.v30.convert_dataset_v21_to_v30`"
        )
    features = info.get("features")
    if not isinstance(features, dict) or not all(
        isinstance(f, dict) and "dtype" in f and isinstance(f.get("shape"), (list, tuple))
        for f in features.values()
    ):
        raise InputError(f"{path}: features: expected a mapping name -> {{dtype, shape, names}}")
    fps = info.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0:
        raise InputError(f"{path}: fps: expected a positive number, got {fps!r}")
    if not isinstance(info.get("data_path"), str):
        raise InputError(
            f"{path}: data_path: expected a path template such as {DEFAULT_DATA_PATH!r}, got {info.get('data_path')!r:.80}"
        )
    return info


# A path template is checked before it is filled: fields are plain names from the ones given,
# with no conversion (!r) and at most a zero-padded width (`03d`) of up to MAX_TEMPLATE_WIDTH digits,
# so that neither `{chunk_index:05000d}` nor `{chunk_index.__class__}` can build an absurd name.
MAX_TEMPLATE_LENGTH = 1024
MAX_TEMPLATE_WIDTH = 20
_FORMAT_SPEC = re.compile(r"0?(\d{1,3})?d?")


def check_template(template: str, what: str, fields: Sequence[str]) -> None:
    """Refuse a path template that could expand to an absurd name (see MAX_TEMPLATE_WIDTH)."""
    expected = f"a path template with fields {sorted(fields)} (as in {DEFAULT_DATA_PATH!r})"
    if len(template) > MAX_TEMPLATE_LENGTH:
        raise InputError(
            f"{what}: {len(template)} characters, more than {MAX_TEMPLATE_LENGTH}; expected {expected}"
        )
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as error:
        raise InputError(
            f"{what}: template {template!r:.80} is malformed ({error}); expected {expected}"
        ) from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        match = _FORMAT_SPEC.fullmatch(spec or "")
        if (
            name not in fields
            or conversion is not None
            or match is None
            or int(match.group(1) or 0) > MAX_TEMPLATE_WIDTH
        ):
            field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise InputError(
                f"{what}: template field {field!r:.80} is not allowed: expected {expected}, "
                f"each an optional zero-padded width of at most {MAX_TEMPLATE_WIDTH} digits ('03d')"
            )


def _templated(root: Path, template: str, what: str, **fields: Any) -> Path:
    check_template(template, what, list(fields))
    try:
        relative = template.format(**fields)
    except (KeyError, IndexError, ValueError) as error:
        raise InputError(
            f"{what}: template {template!r:.80} cannot be filled with {sorted(fields)}: {error!r:.80}"
        ) from error
    return confined_path(root, relative, what)


def _parquet_file(path: Path):
    pa, pq = _arrow()
    if not path.is_file():
        raise InputError(f"{path}: parquet file is missing")
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"{path}: cannot read parquet file (truncated or corrupt): {error}") from error


def _read(path: Path, columns: Sequence[str] | None = None, parquet: Any = None):
    pa, _ = _arrow()
    parquet = parquet if parquet is not None else _parquet_file(path)
    if columns is not None:
        missing = [c for c in columns if c not in parquet.schema_arrow.names]
        if missing:
            raise InputError(f"{path}: column(s) {missing} missing; columns: {parquet.schema_arrow.names}")
    try:
        return parquet.read(columns=list(columns) if columns is not None else None)
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"{path}: cannot read parquet file (truncated or corrupt): {error}") from error


def read_tasks(root: Path) -> dict[int, str]:
    """meta/tasks.parquet as task_index -> text (the text is the pandas index of the table)."""
    path = root / TASKS_PATH
    parquet = _parquet_file(path)
    names = parquet.schema_arrow.names
    text_column = next((c for c in ("task", "__index_level_0__") if c in names), None)
    if text_column is None:
        metadata = parquet.schema_arrow.metadata or {}
        try:
            index_columns = json.loads(metadata.get(b"pandas", b"{}")).get("index_columns", [])
        except (json.JSONDecodeError, AttributeError):
            index_columns = []
        text_column = next((c for c in index_columns if isinstance(c, str) and c in names), None)
    if text_column is None or "task_index" not in names:
        raise InputError(
            f"{path}: expected columns task_index and the task text (task or the pandas index); columns: {names}"
        )
    table = _read(path, [text_column, "task_index"], parquet)
    texts, indices = table.column(0).to_pylist(), table.column(1).to_pylist()
    return {int(i): str(t) for t, i in zip(texts, indices)}


def read_episodes_metadata(root: Path) -> list[dict]:
    """Every row of meta/episodes/chunk-*/file-*.parquet (stats columns left out)."""
    files = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise InputError(f"{root / EPISODES_DIR}: no chunk-*/file-*.parquet episode metadata files")
    rows = []
    for path in files:
        parquet = _parquet_file(path)
        columns = [c for c in parquet.schema_arrow.names if not c.startswith("stats/")]
        for required in ("episode_index", "data/chunk_index", "data/file_index"):
            if required not in columns:
                raise InputError(f"{path}: column {required!r} missing; columns: {columns}")
        for row in _read(path, columns, parquet).to_pylist():
            row["_file"] = path
            rows.append(row)
    return rows
