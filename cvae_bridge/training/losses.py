"""Training-only losses: terms that sharpen image targets beyond a pixel-wise likelihood.

Pixel-wise likelihoods average over the plausible images for a latent, which shows as blur.
Modern image autoencoders add two terms on the reconstruction x_hat (the likelihood's mean):

    perceptual     distance between ImageNet features (EfficientNet-Lite0, frozen) of x and
                   x_hat: unit-normalised channels, squared differences averaged per layer
    adversarial    a small patch discriminator D with the hinge loss: D learns to tell x from
                   x_hat; the decoder learns to make D(x_hat) score as real

They are set per target under `train.sharpen` and live here, with the trainer, not in the model
(as diffusers' train_autoencoderkl.py keeps its discriminator): a saved model holds neither the
discriminator nor a reference to the perceptual network. Both weigh in from `start_step` on; the
discriminator trains from the first step, so it is useful once its term counts. Everything
happens in the model's forward/backward pass and one optimiser (the discriminator in a parameter
group of its own): the decoder's adversarial term reads D through detached weights, and D's own
loss sees x_hat detached, so neither term pushes the other network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..config import SharpenConfig
from ..errors import ConfigError
from ..imagenet import imagenet_normalize, load_efficientnet_lite0


class PerceptualDistance(nn.Module):
    """LPIPS-style distance on the first blocks of a frozen ImageNet EfficientNet-Lite0."""

    def __init__(self, resolution: int, blocks: list[int]):
        super().__init__()
        self.resolution, self.blocks = resolution, sorted(blocks)
        self.network = load_efficientnet_lite0(resolution).requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualDistance:
        return super().train(False)  # frozen BatchNorm statistics

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate(
            images.expand(-1, 3, -1, -1), size=(self.resolution,) * 2, mode="bilinear", align_corners=False
        )
        net = self.network
        x = net._swish(net._bn0(net._conv_stem(imagenet_normalize(x))))
        found = []
        for index, block in enumerate(net._blocks[: self.blocks[-1] + 1]):
            x = block(x)
            if index in self.blocks:
                found.append(F.normalize(x, dim=1))
        return found

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1] -> (B,) distances."""
        return sum(((fa - fb) ** 2).sum(1).mean((1, 2)) for fa, fb in zip(self.features(a), self.features(b)))


class PatchDiscriminator(nn.Module):
    """Strided convolutions to one real/fake logit per image patch (PatchGAN)."""

    def __init__(self, channels: int, widths: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        previous = channels
        for width in widths:
            layers += [
                nn.Conv2d(previous, width, 4, stride=2, padding=1),
                nn.GroupNorm(min(8, width), width),
                nn.LeakyReLU(0.2),
            ]
            previous = width
        layers.append(nn.Conv2d(previous, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1)


class Sharpener(nn.Module):
    def __init__(self, config: SharpenConfig, channels: int):
        super().__init__()
        self.config = config
        self.perceptual = (
            PerceptualDistance(config.perceptual_resolution, config.perceptual_blocks)
            if config.perceptual_weight > 0
            else None
        )
        self.discriminator = (
            PatchDiscriminator(channels, config.discriminator_widths)
            if config.adversarial_weight > 0
            else None
        )

    def external_modules(self) -> list[str]:
        return ["perceptual"] if self.perceptual is not None else []

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Loss terms, each averaged over the batch. `loss` is what joins the training loss.
        Before `start_step` only the discriminator's own term is computed: the decoder's terms,
        the perceptual network's forward and backward above all, would count for nothing."""
        on = step >= self.config.start_step
        terms: dict[str, torch.Tensor] = {}
        loss = x.new_zeros(())
        if self.perceptual is not None and on:
            terms["perceptual"] = self.perceptual(x, x_hat).mean()
            loss = loss + self.config.perceptual_weight * terms["perceptual"]
        if self.discriminator is not None:
            if on:
                frozen = {n: p.detach() for n, p in self.discriminator.named_parameters()}
                terms["adversarial"] = -functional_call(self.discriminator, frozen, (x_hat,)).mean()
                loss = loss + self.config.adversarial_weight * terms["adversarial"]
            real, fake = self.discriminator(x), self.discriminator(x_hat.detach())
            terms["discriminator"] = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
            loss = loss + terms["discriminator"]
        terms["loss"] = loss
        return terms


class TrainingLosses(nn.Module):
    """The sharpening terms of every target named in `train.sharpen`, checked against the model.

    `forward(batch, reconstructions, step)` takes the targets and the model's differentiable
    reconstructions of them (`model(batch, step, reconstructions=losses.targets)`) and returns
    `loss`, to add to the model's, and each term as `<term>_<target>`.
    """

    def __init__(self, configs: dict[str, SharpenConfig], model: nn.Module):
        super().__init__()
        for name in configs:
            where = f"train.sharpen.{name}"
            if name not in model.decoders:
                raise ConfigError(
                    f"{where}: the model has no target {name!r}; its targets: {sorted(model.decoders)}"
                )
            decoder = model.decoders[name]
            if decoder.output_kind != "image":
                raise ConfigError(
                    f"{where}: perceptual and adversarial terms need an image target (C, H, W), not a "
                    f"{decoder.output_kind} target of shape {decoder.event_shape}"
                )
            if name in model.normalizers:
                raise ConfigError(
                    f"{where}: the terms compare images in [0, 1]; remove {name!r} from model.normalize"
                )
        self.sharpeners = nn.ModuleDict(
            {n: Sharpener(c, model.decoders[n].channels) for n, c in configs.items() if c.enabled}
        )

    @property
    def targets(self) -> list[str]:
        return list(self.sharpeners)

    def external_modules(self) -> list[str]:
        return [f"sharpeners.{n}.{sub}" for n, s in self.sharpeners.items() for sub in s.external_modules()]

    def forward(
        self, batch: dict[str, torch.Tensor], reconstructions: dict[str, torch.Tensor], step: int
    ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        losses = []
        for name, sharpener in self.sharpeners.items():
            parts = sharpener(batch[name], reconstructions[name], step)
            losses.append(parts.pop("loss"))
            out.update({f"{term}_{name}": value.detach() for term, value in parts.items()})
        out["loss"] = sum(losses[1:], losses[0])
        return out
