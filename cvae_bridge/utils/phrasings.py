"""Phrasings with a held-out part: a task's instructions (envs/suites.py) and a class's caption
templates (data/images/captions.py) both keep some phrasings out of training, so that a model can
be checked on wordings it never saw."""

from __future__ import annotations

from typing import Literal, NamedTuple

from ..errors import ConfigError

PhrasingSet = Literal["train", "heldout", "all"]
PHRASING_SETS = ("train", "heldout", "all")


class Phrasings(NamedTuple):
    train: tuple[str, ...]  # what training sees
    heldout: tuple[str, ...]  # for evaluation only

    def pick(self, which: PhrasingSet) -> tuple[str, ...]:
        if which not in PHRASING_SETS:
            raise ConfigError(f"unknown phrasing set {which!r}; expected one of {list(PHRASING_SETS)}")
        return self.train + self.heldout if which == "all" else getattr(self, which)
