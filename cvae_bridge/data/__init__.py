"""Datasets: paired image/text sets and robot episodes. Importing registers the built-in sources."""

from . import act_hdf5, images, lerobot  # noqa: F401
from .base import DataSource, PairedDataset, Sample, Split

__all__ = ["DataSource", "PairedDataset", "Sample", "Split", "build_source"]


def build_source(config) -> DataSource:
    """The registered data source named by `config.type`, built from its config."""
    from ..registry import DATASETS

    return DATASETS.get(config.type)(config)
