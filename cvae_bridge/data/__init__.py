"""Datasets: paired image/text sets and robot episodes. Importing registers the built-in sources.

    base.py       DataSource (a registered dataset: splits, statistics), PairedDataset, collate
    images/       paired image / caption sources: mnist, fashion_mnist, digits, imagefolder,
                  hf_dataset, and the caption templates
    robot.py      robot episodes as action-chunk samples, the episode sources' base
    frames.py     camera streams read one frame at a time, the per-process open-file cache
    act_hdf5.py   ACT's episode_<i>.hdf5 folders (read and write)
    lerobot/      LeRobotDataset v3.0 folders (metadata, frames, reader, writer)

Imports config, errors, registry and utils only; never the
model, training, evaluation, pipelines or envs (tests/test_layering.py).
"""

from . import act_hdf5, images, lerobot  # noqa: F401
from .base import DataSource, PairedDataset, Sample, Split

__all__ = ["DataSource", "PairedDataset", "Sample", "Split", "build_source"]


def build_source(config) -> DataSource:
    """The registered data source named by `config.type`, built from its config."""
    from ..registry import DATASETS

    return DATASETS.get(config.type)(config)
