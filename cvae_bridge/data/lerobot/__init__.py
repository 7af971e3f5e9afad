"""LeRobotDataset v3.0 (huggingface/lerobot), read and written without the `lerobot` package.

Layout below the dataset root:

    meta/info.json                               codebase_version "v3.0", fps, features (dtype,
                                                 shape, names), data_path / video_path templates,
                                                 total_episodes, ...
    meta/stats.json                              per feature: min, max, mean, std, count, and
                                                 the quantiles q01, q10, q50, q90, q99
    meta/tasks.parquet                           task text (pandas index) -> task_index
    meta/episodes/chunk-XXX/file-XXX.parquet     a row per episode: episode_index, tasks, length,
                                                 data/chunk_index, data/file_index,
                                                 dataset_from_index, dataset_to_index,
                                                 videos/<key>/{chunk_index, file_index,
                                                 from_timestamp, to_timestamp}, stats/...
    data/chunk-XXX/file-XXX.parquet              a row per frame, many episodes per file:
                                                 feature columns, timestamp, frame_index,
                                                 episode_index, index, task_index
    videos/<key>/chunk-XXX/file-XXX.mp4          many episodes per file, from_timestamp onwards

A dataset is named by its folder or, as in LeRobot, by its repo id ("owner/name"), looked up under
$HF_LEROBOT_HOME (default ~/.cache/huggingface/lerobot).

Image features are stored in the data files (`dtype: "image"`, a struct of PNG `bytes` and
`path`) or as videos (`dtype: "video"`, decoded with PyAV: `pip install "cvae-bridge[video]"`).
Numeric columns are read when the source is built; images are decoded one frame per sample (the
encoded PNG bytes of an episode are read on its first use and kept in a per-process cache).
"""

from .meta import INFO_PATH, read_episodes_metadata, read_info, read_tasks
from .reader import LeRobotConfig, LeRobotSource
from .writer import LeRobotDatasetWriter, write_lerobot_dataset

__all__ = [
    "INFO_PATH",
    "LeRobotConfig",
    "LeRobotDatasetWriter",
    "LeRobotSource",
    "read_episodes_metadata",
    "read_info",
    "read_tasks",
    "write_lerobot_dataset",
]
