"""The training loop, on Accelerate: CPU or GPU, one process or many (`accelerate launch`).

    train(config)                 -> a run folder: config.yaml, parameters.json, checkpoints/, logs/,
                                     samples/, log.jsonl, and model/ (save_pretrained) at the end
                                     (or of the last step, when a stop signal ends the run)
    train(config, resume=True)    -> continues from the newest checkpoint, exactly

Each optimiser step takes `grad_accum` micro-batches. Data order, dropout and latent noise are
functions of the seed and the step, so a resumed run reaches the same weights as an
uninterrupted one (bitwise on CPU).

A step does not wait for the device: its loss figures and its non-finite flag stay there, and a
non-finite step is skipped by the fused optimiser itself. They are read (one transfer) on log,
evaluation and checkpoint steps, where the skipped steps are reported (train.on_nonfinite).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..config import RunConfig, to_dict, write_yaml
from ..data import build_source
from ..data.base import collate, to_device
from ..data.resolve import resolve_run_config
from ..diagnostics import training_diagnostics
from ..errors import CheckpointError, ConfigError, InputError, NonFiniteLossError
from ..hub import save_pretrained
from ..model import ConditionalVAE
from ..samples import save_sample_grid
from ..utils.files import atomic_write_text, folder_lock
from ..utils.runtime import keep_freed_memory
from .checkpoints import (
    config_changes,
    flatten,
    install_model_hooks,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from .ema import EMA
from .finetune import (
    add_lora,
    freeze,
    load_initial_weights,
    merge_lora,
    save_adapter,
)
from .launch import agreed, any_process, make_accelerator, mean_over_processes
from .losses import TrainingLosses
from .optimizer import build_optimizer, lr_factor
from .sampler import EpochBatchSampler
from .step_figures import StepFigures, read_figures, skipped_on_device
from .stop_signals import ignore_stop_signals, stop_requests, stop_workers


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path
    step: int
    status: Literal["completed", "interrupted"]
    metrics: dict[str, float]  # the last logged training figures
    stop_signal: int | None = None  # the signal (SIGINT, SIGTERM) that interrupted the run


def train(config: RunConfig, resume: bool = False) -> TrainResult:
    """Train the model of `config` on its dataset; see the module docstring."""
    return Trainer(config).fit(resume=resume)


def check_first_batch(model: ConditionalVAE, dataset: Dataset, batch_size: int, where: str) -> None:
    """Collate the first `batch_size` samples and check the batch against the model."""
    samples = [dataset[i] for i in range(min(batch_size, len(dataset)))]
    where = f"{where}, first {len(samples)} samples"
    batch = collate(samples, where)
    try:
        model.check_batch(batch)
    except InputError as error:
        raise InputError(f"{where}: {error}") from None


class Trainer:
    def __init__(self, config: RunConfig):
        self.config = config
        cfg = config.train
        self.output_dir = Path(cfg.output_dir)
        keep_freed_memory()
        self.accelerator = make_accelerator(cfg)
        # Each process draws its own latent noise and dropout; DDP copies rank 0's initial weights.
        set_seed(cfg.seed, device_specific=True)

        # Sizes and cameras the config leaves unset come from a robot dataset's features.
        config, notes = resolve_run_config(config)
        self.config = config
        for note in notes:
            self.accelerator.print(f"from the data: {note}")
        self.source = build_source(config.data)
        self.train_set = self.source.split("train")
        self.eval_set = self.source.split(config.eval.split) if cfg.eval_every else None

        model = ConditionalVAE(config.model)
        # Data that does not fit the model fails here, naming the key, before statistics, the
        # optimiser, worker processes or run files exist (the model still checks every batch).
        check_first_batch(model, self.train_set, cfg.batch_size, f"dataset {config.data.type!r}, train split")
        if model.normalizers:
            stats = self.source.statistics(list(model.normalizers))
            model.set_normalization(
                {n: (torch.as_tensor(m), torch.as_tensor(s)) for n, (m, s) in stats.items()}
            )
        # Fine-tuning: before any run file exists, so that a folder that does not fit writes nothing.
        self.init_report = (
            load_initial_weights(model, cfg.init_from, cfg.init_strict) if cfg.init_from else None
        )
        self.frozen = freeze(model, cfg.freeze)
        if cfg.lora and not cfg.lora.merge and not cfg.init_from:
            raise ConfigError(
                "train.lora.merge: false saves adapters for a base model: set train.init_from to it"
            )
        self.adapted = add_lora(model, cfg.lora) if cfg.lora else []
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        self.parameter_counts = {
            "trainable": trainable,
            "frozen": total - trainable,
            "lora_layers": len(self.adapted),
        }
        self.accelerator.print(
            f"parameters: {trainable:,} trainable, {total - trainable:,} frozen"
            + (f"; LoRA adapters on {len(self.adapted)} layers" if self.adapted else "")
        )
        losses = TrainingLosses(cfg.sharpen, model)
        optimizer = build_optimizer(model, cfg, losses)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.schedule, cfg.min_lr_ratio)
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        # The training losses' own weights (a discriminator) are all-reduced like the model's;
        # without trainable weights they need no wrapper.
        if any(p.requires_grad for p in losses.parameters()):
            self.losses = self.accelerator.prepare(losses)
        else:
            self.losses = losses.to(self.accelerator.device)
        self.ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
        install_model_hooks(self.accelerator, self.model, self.losses, None if self.adapted else config)

        self.sampler = EpochBatchSampler(
            len(self.train_set),
            cfg.batch_size,
            cfg.seed,
            self.accelerator.process_index,
            self.accelerator.num_processes,
        )
        self.loader = DataLoader(
            self.train_set,
            batch_sampler=self.sampler,
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,
            pin_memory=self.accelerator.device.type == "cuda",
            generator=torch.Generator(),  # keeps worker seeding off the global random stream
            worker_init_fn=ignore_stop_signals,
        )
        self._stop_signal: int | None = None
        # The fused AdamW skips a step on the device where `found_inf` is 1, as under torch's
        # GradScaler; fp16 runs that scaler, which sets found_inf itself.
        self._skip_on_device = (
            getattr(self.optimizer.optimizer, "_step_supports_amp_scaling", False)
            and self.accelerator.mixed_precision != "fp16"
        )

    @property
    def unwrapped(self) -> ConditionalVAE:
        return self.accelerator.unwrap_model(self.model)

    @property
    def unwrapped_losses(self) -> TrainingLosses:
        return self.accelerator.unwrap_model(self.losses)

    # -- the loop --------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> TrainResult:
        # One run per output folder, locked before anything is written there; the main process
        # holds the lock for all of them.
        main = self.accelerator.is_main_process
        with folder_lock(self.output_dir) if main else contextlib.nullcontext():
            try:
                return self._fit(resume)
            finally:
                stop_workers(self.loader)  # on every way out of a run

    def _fit(self, resume: bool) -> TrainResult:
        cfg = self.config.train
        step = self._start(resume)
        batches = self._batches(step * cfg.grad_accum)
        bar = tqdm(
            total=cfg.steps,
            initial=step,
            disable=not (cfg.progress_bar and self.accelerator.is_main_process),
            dynamic_ncols=True,
        )
        sums: dict[str, float] = defaultdict(float)
        pending: list[StepFigures] = []  # the steps whose figures are still on the device
        metrics: dict[str, float] = {}
        tick, seen, waited = time.perf_counter(), 0, 0.0
        self._train_mode()  # once: evaluation switches it back after its own eval()
        self.losses.train()
        with stop_requests(self._request_stop):
            while step < cfg.steps:
                before = time.perf_counter()
                try:
                    micro_batches = [next(batches) for _ in range(cfg.grad_accum)]
                except RuntimeError:
                    # A DataLoader worker that the stop signal killed: stop at the last whole step.
                    if self._stop_signal is None or self.accelerator.num_processes > 1:
                        raise
                    self._settle(pending, sums)
                    return self._interrupted(step, bar, metrics)
                waited += time.perf_counter() - before
                pending.append(self._step(micro_batches, step))
                step += 1
                seen += cfg.batch_size * cfg.grad_accum * self.accelerator.num_processes
                bar.update(1)
                log = step % cfg.log_every == 0 or step == cfg.steps
                evaluate = bool(cfg.eval_every) and step % cfg.eval_every == 0
                checkpoint = step == cfg.steps or bool(
                    cfg.checkpoint_every and step % cfg.checkpoint_every == 0
                )
                if log or evaluate or checkpoint:
                    # Waits for the device: no evaluation or checkpoint follows an unreported
                    # non-finite step.
                    self._settle(pending, sums)
                if log:
                    elapsed = time.perf_counter() - tick
                    count = step % cfg.log_every or cfg.log_every
                    metrics = mean_over_processes(
                        self.accelerator, {k: float(v) / count for k, v in sums.items()}
                    )
                    # data_wait: the share of the interval's wall time spent blocked on the data loader
                    metrics.update(
                        lr=self.scheduler.get_last_lr()[0],
                        examples_per_s=seen / elapsed,
                        data_wait=waited / elapsed,
                    )
                    self._log("train", step, metrics)
                    bar.set_postfix(
                        loss=f"{metrics['loss']:.2f}",
                        kl=f"{metrics.get('kl', 0):.2f}",
                        ex_s=f"{metrics['examples_per_s']:.0f}",
                    )
                    sums.clear()
                    tick, seen, waited = time.perf_counter(), 0, 0.0
                if evaluate:
                    self._evaluate(step)
                if agreed(self.accelerator, self._stop_signal is not None):
                    self._settle(pending, sums)
                    return self._interrupted(step, bar, metrics)
                if checkpoint:
                    save_checkpoint(
                        self.accelerator, self.output_dir, {"step": step}, self.ema, cfg.keep_checkpoints
                    )
        bar.close()
        model_dir = self._export()
        self.accelerator.end_training()
        return TrainResult(self.output_dir, model_dir, step, "completed", metrics)

    def _interrupted(self, step: int, bar: tqdm, metrics: dict[str, float]) -> TrainResult:
        """Checkpoint `step` (the last completed one), export its model (so that it can be tried
        at once; the card says the step) and end the run stopped by a signal."""
        cfg = self.config.train
        save_checkpoint(self.accelerator, self.output_dir, {"step": step}, self.ema, cfg.keep_checkpoints)
        bar.close()
        model_dir = self._export(step)
        self.accelerator.print(f"stopped by signal {self._stop_signal} at step {step}; resume with --resume")
        self.accelerator.end_training()
        return TrainResult(self.output_dir, model_dir, step, "interrupted", metrics, self._stop_signal)

    def _request_stop(self, signum: int) -> None:
        """A stop signal: checkpoint and stop after the current step."""
        self._stop_signal = signum

    def _start(self, resume: bool) -> int:
        """Restore the newest checkpoint (resume) or start a fresh run folder; returns the step."""
        checkpoints = list_checkpoints(self.output_dir)
        step = 0
        if resume and checkpoints:
            changes = self._config_changes()
            step = load_checkpoint(self.accelerator, checkpoints[-1], self.ema, changes)["step"]
            self.accelerator.print(f"resuming from {checkpoints[-1]} (step {step})")
        elif resume:
            self.accelerator.print(
                f"--resume: no checkpoint in {self.output_dir / 'checkpoints'}, starting at step 0"
            )
        elif checkpoints:
            raise CheckpointError(
                f"{self.output_dir} already holds checkpoints (newest {checkpoints[-1].name}): pass --resume to "
                f"continue it, or set train.output_dir to a new folder"
            )
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_yaml(self.config, self.output_dir / "config.yaml")
            atomic_write_text(self.output_dir / "parameters.json", json.dumps(self.parameter_counts) + "\n")
            if self.init_report is not None and step == 0:
                atomic_write_text(self.output_dir / "init.json", json.dumps(self.init_report, indent=2))
                report = self.init_report
                self.accelerator.print(
                    f"initialised from {report['init_from']}: {len(report['loaded'])} tensors loaded, "
                    f"{len(report['new'])} new, {len(report['dropped'])} dropped, {len(report['mismatched'])} resized"
                )
        hyperparameters = {
            k: str(v) if isinstance(v, (list, dict)) else v for k, v in flatten(to_dict(self.config)).items()
        }
        self.accelerator.init_trackers("logs", config=hyperparameters)
        return step

    def _config_changes(self) -> list[str] | None:
        """How this config differs from the run's config.yaml (None when there is none to read)."""
        try:
            saved = yaml.safe_load((self.output_dir / "config.yaml").read_text())
        except (OSError, ValueError, yaml.YAMLError):
            return None
        if not isinstance(saved, dict):
            return None
        return config_changes(saved, yaml.safe_load(yaml.safe_dump(to_dict(self.config))))

    def _batches(self, micro_step: int) -> Iterator[dict[str, Any]]:
        """Micro-batches forever, starting at micro-batch `micro_step` of the run."""
        epoch, batch = divmod(micro_step, self.sampler.batches_per_epoch)
        while True:
            self.sampler.set_position(epoch, batch)
            for item in self.loader:
                yield to_device(item, self.accelerator.device)
            epoch, batch = epoch + 1, 0

    def _step(self, micro_batches: list[dict], step: int) -> StepFigures:
        """One optimiser step over one or more micro-batches, without waiting for the device: its
        loss parts, gradient norm and non-finite flag are returned there (see _settle)."""
        cfg = self.config.train
        count = len(micro_batches)
        names: list[str] = []
        divisors: list[int] = []
        values: list[torch.Tensor] = []
        losses: list[torch.Tensor] = []
        for i, batch in enumerate(micro_batches):
            last = i == count - 1
            # Gradients are all-reduced only on the last micro-batch of an optimiser step.
            with contextlib.ExitStack() as stack:
                if not last:
                    for module in (self.model, self.losses):
                        stack.enter_context(self.accelerator.no_sync(module))
                out = self._loss(batch, step)
                # A non-finite loss goes backward too: the whole step is skipped below.
                self.accelerator.backward(out["loss"] / count)
            names += list(out)
            divisors += [count] * len(out)
            values += [v.detach().float() for v in out.values()]
            losses.append(out["loss"].detach())
        nonfinite = ~torch.isfinite(torch.stack(losses)).all()
        if cfg.max_grad_norm > 0:
            weights = [*self.model.parameters(), *self.losses.parameters()]
            norm = self.accelerator.clip_grad_norm_(weights, cfg.max_grad_norm)
            names.append("grad_norm")
            divisors.append(1)
            values.append(norm.detach().float())
            # Under fp16 an overflow is routine: the grad scaler skips that step by itself.
            if self.accelerator.mixed_precision != "fp16":
                nonfinite = nonfinite | ~torch.isfinite(norm)
        skipped = any_process(self.accelerator, nonfinite)
        self._update(skipped)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepFigures(step, names, divisors, torch.stack([*values, skipped.float()]))

    def _update(self, skipped: torch.Tensor) -> None:
        """The optimiser's step and the EMA's, unless `skipped` (a bool tensor on the device)."""
        if self._skip_on_device:
            with skipped_on_device(self.optimizer.optimizer, skipped):  # the torch optimiser Accelerate wraps
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.unwrapped, skipped)
        # Waits for the device: under fp16 the grad scaler reads its overflow flag on the host
        # anyway; an optimiser without the fused kernel cannot skip on the device.
        elif not bool(skipped):
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.unwrapped)

    def _settle(self, pending: list[StepFigures], sums: dict[str, float]) -> None:
        """Read the figures of the `pending` steps (one transfer from the device), add them to
        `sums` and empty `pending`; a step skipped as non-finite is reported, or stops the run."""
        for step, figures, skipped in read_figures(pending):
            for key, value in figures.items():
                sums[key] += value
            if skipped:
                self._nonfinite(step, figures)
        pending.clear()

    def _train_mode(self) -> None:
        """Training mode, but frozen modules keep eval behaviour (batch-norm statistics, no dropout)."""
        self.model.train()
        for name in self.frozen:
            self.unwrapped.get_submodule(name).eval()

    def _loss(self, batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """The model's loss parts, plus the training losses' terms on its reconstructions."""
        targets = self.unwrapped_losses.targets
        out = self.model(batch, step=step, reconstructions=targets)
        if targets:
            reconstructions = {n: out.pop(f"reconstruction_{n}") for n in targets}
            with self.accelerator.autocast():
                terms = self.losses(batch, reconstructions, step)
            out["loss"] = out["loss"] + terms.pop("loss")
            out.update(terms)
        return out

    def _nonfinite(self, step: int, figures: dict[str, float]) -> None:
        detail = ", ".join(f"{k}={v:.4g}" for k, v in figures.items())
        checkpoints = list_checkpoints(self.output_dir)
        last = checkpoints[-1] if checkpoints else "none yet"
        message = f"step {step + 1}: non-finite loss or gradient ({detail}); last good checkpoint: {last}"
        if self.config.train.on_nonfinite == "stop":
            raise NonFiniteLossError(message + ". Lower train.lr, or set train.on_nonfinite: skip")
        self.accelerator.print(f"skipping {message}")

    # -- logging, evaluation, export --------------------------------------------------------------

    def _log(self, split: str, step: int, metrics: dict[str, float]) -> None:
        self.accelerator.log({f"{split}/{k}": v for k, v in metrics.items()}, step=step)
        if self.accelerator.is_main_process:
            with open(self.output_dir / "log.jsonl", "a") as log:
                log.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")

    def _evaluate(self, step: int) -> None:
        """Validation loss on the first batches of the evaluation split, and a sample grid.
        Runs on the main process with its own random stream, so it never changes training."""
        if self.accelerator.is_main_process:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(self.config.train.seed)
                model = self.unwrapped.eval()
                loader = DataLoader(self.eval_set, batch_size=self.config.train.batch_size)
                sums: dict[str, float] = defaultdict(float)
                batches = [
                    to_device(batch, self.accelerator.device)
                    for batch, _ in zip(loader, range(self.config.train.eval_batches))
                ]
                for batch in batches:
                    for key, value in model(batch).items():
                        sums[key] += value.item()
                # Active units and I(x; z) on the same batches; posterior collapse is flagged.
                latent, warning = training_diagnostics(model, batches)
                self._log("val", step, {**{k: v / len(batches) for k, v in sums.items()}, **latent})
                if warning:
                    self.accelerator.print(f"warning: step {step}: {warning}")
                    self._log("warning", step, {"message": warning})
                self._write_samples(model, self.output_dir / "samples" / f"step_{step:08d}.png")
                self._train_mode()
        self.accelerator.wait_for_everyone()

    def _write_samples(self, model: ConditionalVAE, path: Path) -> None:
        save_sample_grid(model, self.config.eval, self.eval_set, path)

    def _export(self, step: int | None = None) -> Path:
        """save_pretrained into output_dir/model (EMA weights if enabled, LoRA adapters merged)
        with the run config; `step` when the run stopped before its end."""
        model_dir = self.output_dir / "model"
        if self.accelerator.is_main_process:
            model = self.unwrapped
            if self.ema is not None or self.adapted:
                model = copy.deepcopy(model)
            if self.ema is not None:
                self.ema.copy_to(model)
            if self.adapted and not self.config.train.lora.merge:
                save_adapter(model, model_dir, self.config, self.init_report)
            else:
                if self.adapted:
                    merge_lora(model)
                save_pretrained(model, model_dir, self.config, step)
        self.accelerator.wait_for_everyone()
        return model_dir
