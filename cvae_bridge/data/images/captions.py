"""Caption templates: several phrasings per class, the last few held out of training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...errors import ConfigError
from ...utils.phrasings import Phrasings

Phrasing = Literal["train", "heldout"]  # of PhrasingSet, those a dataset split draws from


def _with_article(name: str) -> str:
    """'an eight', 'an ankle boot', 'a one', 'a t-shirt'."""
    vowel_sound = name[:1] in "aeio" and not name.startswith("one")
    return f"{'an' if vowel_sound else 'a'} {name}"


DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


DIGIT_TEMPLATES = (
    "a handwritten {name}",
    "the digit {name}",
    "a drawing of the number {digit}",
    "{name}, written by hand",
    "an image showing {a_name}",
    "the number {digit}, handwritten",
    "a scribbled digit {digit}",
    "a picture of the digit {name}",
    "someone wrote the number {name}",
    # Held out of training (the last `heldout` = 3):
    "a sketch of the numeral {digit}",
    "{a_name} drawn in ink",
    "the handwritten figure {name}",
)


FASHION_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)


FASHION_TEMPLATES = (
    "a photo of {a_name}",
    "{a_name}",
    "an image of {a_name}",
    "a picture of {a_name}",
    "a grayscale photo of {a_name}",
    "a product shot of {a_name}",
    "{a_name} on a plain background",
    "a small picture of {a_name}",
    "a black and white image of {a_name}",
    # Held out of training (the last `heldout` = 3):
    "a catalogue photo showing {a_name}",
    "this is {a_name}",
    "a low-resolution photo of {a_name}",
)


@dataclass(frozen=True)
class CaptionTemplates:
    """Caption phrasings for a labelled dataset. Templates may use `{name}` (the class name),
    `{a_name}` (with its article) and `{digit}` (the class index as a numeral). The last
    `heldout` templates are reserved for evaluation."""

    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    heldout: int = 2

    def __post_init__(self):
        if not 1 <= self.heldout < len(self.templates):
            raise ConfigError(
                f"heldout must leave at least one training template and hold out at least one; "
                f"got {self.heldout} of {len(self.templates)} templates"
            )
        for template in self.templates:  # fail on a bad placeholder now, not mid-epoch
            try:
                self.render(template, 0)
            except (KeyError, IndexError, ValueError) as error:
                raise ConfigError(
                    f"caption template {template!r}: {error!r}; use {{name}}, {{a_name}} or {{digit}}"
                ) from None

    def render(self, template: str, label: int) -> str:
        name = self.class_names[label]
        return template.format(name=name, a_name=_with_article(name), digit=str(label))

    def phrasings(self, which: Phrasing) -> tuple[str, ...]:
        split = Phrasings(self.templates[: -self.heldout], self.templates[-self.heldout :])
        return split.pick(which)

    def captions(self, which: Phrasing) -> list[list[str]]:
        """captions(which)[label]: every caption of that class in the phrasing set."""
        templates = self.phrasings(which)
        return [[self.render(t, label) for t in templates] for label in range(len(self.class_names))]

    def prompts(self, which: Phrasing) -> list[tuple[str, int]]:
        """Every (caption, label) pair of the phrasing set, class by class: prompts for generating
        images (from held-out phrasings, say) and checking them with a classifier."""
        return [
            (caption, label) for label, captions in enumerate(self.captions(which)) for caption in captions
        ]


DIGIT_CAPTIONS = CaptionTemplates(DIGIT_NAMES, DIGIT_TEMPLATES, heldout=3)


FASHION_CAPTIONS = CaptionTemplates(FASHION_NAMES, FASHION_TEMPLATES, heldout=3)
