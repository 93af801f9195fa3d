"""The trainer: `train(config, report)` runs standalone and, unchanged, as a Ray Tune trial.

It imports neither Ray nor MLflow: after every epoch it calls `report(metrics, epoch, checkpoint_dir)`, and the
caller decides where that goes. Two phases: the text encoder is frozen for `frozen_text_epochs`, then fine-tuned;
the image encoder stays frozen unless the config says otherwise. Frozen encoders run without autograd, in eval
mode (in train mode, as the original code, with `frozen_encoder_mode=train`). The epoch is selected on dev; test
is evaluated only at epochs that become the selected one, so the test numbers reported are those of the selected
epoch and test never chooses anything.

Command line: python -m clmlf.train --dataset demo --preset demo --output runs/demo
Resolved config and its differences from the paper preset: python -m clmlf.train --preset original --dataset hfm
--print-config
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from clmlf.augment import augmentation_transform, evaluation_transform
from clmlf.config import ConfigError, TrainConfig, build_config, differences, load_config_file, parse_overrides
from clmlf.data import DataError, LoadedDataset, load_dataset
from clmlf.device import peak_memory_mb, pins_memory, resolve_device
from clmlf.encoders import EncoderUnavailable, load_tokenizer
from clmlf.features import dataset_digest, default_cache_root, image_features, state_digest, text_states
from clmlf.loading import (
    Batch,
    CachedInputs,
    EncodedTexts,
    Phase,
    PostDataset,
    SplitInputs,
    encode_texts,
    make_collate,
    make_loader,
)
from clmlf.losses import (
    classification_loss,
    data_based_contrastive_loss,
    label_based_contrastive_loss,
    total_loss,
)
from clmlf.memory import release_memory
from clmlf.metrics import classification_metrics, confusion_matrix, with_prefix
from clmlf.model import CLMLF, ModelInputs
from clmlf.precision import resolve_precision
from clmlf.safe_files import UnreadableFile, load_tensors, save_tensors, write_text_atomically
from clmlf.train_command import parse_arguments

Report = Callable[[dict[str, Any], int, Path | None], None]
CHECKPOINT_FILE = "state.pt"


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the run that resumes from it; the message names the file."""


@dataclass
class TrainResult:
    config: dict[str, Any]
    selection_metric: str
    selected_epoch: int
    dev: dict[str, float]
    test: dict[str, float]
    confusion_matrices: dict[str, list[list[int]]]
    label_names: list[str]
    data: dict[str, int]
    history: list[dict[str, Any]] = field(default_factory=list)
    runtime_seconds: float = 0.0
    # The precision the run trained in and why (`clmlf.precision.resolve_precision`).
    precision: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def selection_metric(config: TrainConfig, dataset: LoadedDataset) -> str:
    """The dev metric that selects the epoch and ranks trials, e.g. `f1_weighted`."""
    if config.selection_metric == "dataset-default":
        return dataset.spec.selection_metric
    return config.selection_metric


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def learning_rate_factor(total_steps: int, warmup_ratio: float, schedule: str) -> Callable[[int], float]:
    """The factor on each group's learning rate at a step: linear warmup, then constant or linear decay to 0."""
    total = max(1, total_steps)
    warmup = int(warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "linear":
            return max(0.0, (total - step) / max(1, total - warmup))
        return 1.0

    return factor


class Run:
    """Everything one training run holds: data, loaders, model, optimiser, and how a batch becomes losses."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None], device: torch.device | None = None):
        self.config = config
        self.log = log
        self.device = device if device is not None else resolve_device(config.device)
        self.dataset = load_dataset(
            config.dataset,
            config.data_root,
            need_images=config.model.uses_images,
            need_translations=config.uses_dbcl,
            image_policy=config.image_policy,
            augmented_text=config.augmented_text,
            image_folder=config.image_folder,
            seed=config.seed,
        )
        log(self.dataset.summary())
        self.metric = selection_metric(config, self.dataset)
        seed_everything(config.seed)
        self.model = CLMLF(config.model, self.dataset.spec.num_classes).to(self.device)
        self.precision = resolve_precision(config.mixed_precision, self.device)
        log(f"precision: {self.precision.name} ({self.precision.reason})")
        self.autocast = self.precision.autocast()
        # fp16 only: scales the loss so that small gradients survive fp16's range; a pass-through otherwise.
        self.scaler = self.precision.grad_scaler()
        self.overflows = 0
        self.encoder_digests: dict[str, str] = {}
        self.splits = self._split_inputs()
        # fused: one kernel for all parameters instead of a loop over them; on CPU, AdamW over a fine-tuned text
        # encoder's parameters is a visible part of each step.
        self.optimizer = torch.optim.AdamW(self._parameter_groups(), weight_decay=config.weight_decay, fused=True)
        self.steps_per_epoch = len(self.loader("train", 0))
        if config.max_train_batches:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_train_batches)
        # A closure over numbers, not a bound method: the scheduler must not refer back to the run, or the whole run
        # (model, optimiser state, data) becomes a reference cycle that only a full garbage collection frees.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            learning_rate_factor(self.steps_per_epoch * config.epochs, config.warmup_ratio, config.lr_schedule),
        )

    def _split_inputs(self) -> dict[str, SplitInputs]:
        config, model_config = self.config, self.config.model
        texts = {}
        if model_config.uses_text:
            tokenizer = load_tokenizer(model_config.text_encoder)
            for split, posts in self.dataset.splits.items():
                texts[split] = encode_texts(
                    tokenizer,
                    posts,
                    config.max_text_length,
                    with_translations=split == "train" and config.uses_dbcl,
                )
        evaluation = evaluation_transform(model_config.image_size) if model_config.uses_images else None
        augmentation = (
            augmentation_transform(
                model_config.image_size,
                config.randaugment_ops,
                config.randaugment_magnitude,
                config.randaugment_implementation,
            )
            if model_config.uses_images
            else None
        )
        cached = self._cached_inputs(texts, evaluation, augmentation) if config.feature_cache else {}
        splits = {}
        for split, posts in self.dataset.splits.items():
            training = split == "train"
            splits[split] = SplitInputs(
                posts,
                texts.get(split),
                image_transform=augmentation if training and config.augment_original_images else evaluation,
                augmented_image_transform=augmentation,
                cached=cached.get(split, CachedInputs()),
                augmented=training and config.uses_dbcl,
            )
        return splits

    def epoch_seed(self, epoch: int) -> int:
        # Each epoch's randomness (order, augmentation, dropout) depends on (seed, epoch) alone, so a resumed run
        # draws the same numbers as an uninterrupted one.
        return self.config.seed * 100_003 + epoch

    def loader(self, split: str, epoch: int) -> torch.utils.data.DataLoader:
        """The split's batches in `epoch`'s phase: training batches shuffled by a generator seeded from (seed,
        epoch), evaluation batches in a fixed order."""
        training = split == "train"
        inputs = self.splits[split]
        return make_loader(
            PostDataset(inputs, Phase(epoch=epoch, text_frozen=self.text_frozen(epoch))),
            make_collate(inputs.texts.pad_token_id if inputs.texts is not None else 0),
            batch_size=self.config.batch_size if training else self.config.eval_batch_size,
            shuffle_generator=torch.Generator().manual_seed(self.epoch_seed(epoch)) if training else None,
            group_by_length=self.config.train_batch_sampling == "length-grouped",
            num_workers=self.config.num_workers,
            pin_memory=pins_memory(self.device),
        )

    def _cached_inputs(self, texts: dict[str, EncodedTexts], evaluation, augmentation) -> dict[str, CachedInputs]:
        """Frozen encoders' outputs from the study's feature cache, for the parts the cache applies to.

        Images: when the image encoder stays frozen. Text: for the text-frozen phase only; fine-tuning takes the
        full path.
        """
        config, model = self.config, self.model
        root = Path(config.feature_cache_dir) if config.feature_cache_dir else default_cache_root()
        common = {"device": self.device, "precision": self.precision, "cache_root": root, "log": self.log}
        splits = self.dataset.splits
        cached = {
            split: CachedInputs(augment_original_images=config.augment_original_images, seed=config.seed)
            for split in splits
        }
        if model.image_backbone is not None and config.model.freeze_image_encoder:
            files = [self.dataset.directory / name for name in self.dataset.spec.split_files.values()]
            bank = image_features(
                model.image_backbone,
                splits,
                encoder_key=self.encoder_digest("image_backbone", model.image_backbone),
                dataset_key=dataset_digest(files, splits),
                image_size=config.model.image_size,
                evaluation=evaluation,
                augmentation=augmentation,
                augmentation_settings={
                    "randaugment_ops": config.randaugment_ops,
                    "randaugment_magnitude": config.randaugment_magnitude,
                    "randaugment_implementation": config.randaugment_implementation,
                },
                augmented_views=config.augmented_views,
                seed=config.seed,
                **common,
            )
            for split in splits:
                cached[split].image_features = bank.splits[split]
                cached[split].image_rows = bank.rows[split]
        if model.text_encoder is not None and config.frozen_text_epochs > 0:
            states = text_states(
                model.text_encoder,
                model.encode_text,
                texts,
                encoder_key=self.encoder_digest("text_encoder", model.text_encoder),
                width=model.text_width,
                **common,
            )
            for split in splits:
                cached[split].text_states = states.texts[split]
            cached["train"].translation_states = states.translations
        return cached

    def _parameter_groups(self) -> list[dict]:
        model, config = self.model, self.config
        text = list(model.text_encoder.parameters()) if model.text_encoder is not None else []
        image = list(model.image_backbone.parameters()) if model.image_backbone is not None else []
        encoder_ids = {id(parameter) for parameter in text + image}
        rest = [parameter for parameter in model.parameters() if id(parameter) not in encoder_ids]
        groups = [{"name": "fusion", "params": rest, "lr": config.learning_rate}]
        if text:
            groups.append({"name": "text_encoder", "params": text, "lr": config.text_learning_rate})
        if image and not config.model.freeze_image_encoder:
            groups.append({"name": "image_encoder", "params": image, "lr": config.image_learning_rate})
        return groups

    def text_frozen(self, epoch: int) -> bool:
        return epoch < self.config.frozen_text_epochs

    def set_phase(self, epoch: int, training: bool) -> None:
        """Train mode for what learns; frozen encoders get no gradients and, unless frozen_encoder_mode=train, stay
        in eval mode."""
        self.model.train(training)
        frozen_in_eval = self.config.frozen_encoder_mode == "eval"
        encoders = (
            (self.model.text_encoder, self.text_frozen(epoch)),
            (self.model.image_backbone, self.config.model.freeze_image_encoder),
        )
        for encoder, frozen in encoders:
            if encoder is None:
                continue
            encoder.requires_grad_(not frozen)
            if frozen and frozen_in_eval:
                encoder.eval()

    def encoded(self, inputs: ModelInputs, epoch: int) -> ModelInputs:
        """The view with frozen encoders' outputs: cached ones when the batch has them, else computed here without
        autograd."""
        if inputs.text_states is None and inputs.input_ids is not None and self.text_frozen(epoch):
            with torch.no_grad():
                text_states = self.model.encode_text(inputs.input_ids, inputs.attention_mask, inputs.token_type_ids)
            inputs = dataclasses.replace(inputs, text_states=text_states)
        if inputs.image_features is None and inputs.images is not None and self.config.model.freeze_image_encoder:
            with torch.no_grad():
                image_features = self.model.image_backbone(inputs.images)
            inputs = dataclasses.replace(inputs, image_features=image_features)
        return inputs

    def losses(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        config = self.config
        labels = batch.labels
        outputs = self.model(self.encoded(batch.original, epoch))
        terms = {"classification": classification_loss(outputs.logits, labels)}
        if config.uses_lbcl:
            terms["lbcl"] = label_based_contrastive_loss(
                outputs.lbcl_projection, labels, config.temperature, config.lbcl_variant
            )
        if config.uses_dbcl:
            augmented = self.model(self.encoded(batch.augmented, epoch))
            terms["dbcl"] = data_based_contrastive_loss(
                outputs.lbcl_projection, augmented.dbcl_projection, config.temperature
            )
        terms["total"] = total_loss(
            terms["classification"],
            terms.get("lbcl"),
            terms.get("dbcl"),
            config.lbcl_weight,
            config.dbcl_weight,
        )
        return terms

    def train_epoch(self, epoch: int, progress: bool) -> dict[str, float]:
        self.set_phase(epoch, training=True)
        torch.manual_seed(self.epoch_seed(epoch))
        sums: dict[str, float] = {}
        samples = 0
        started = time.perf_counter()
        phase = "text-frozen" if self.text_frozen(epoch) else "fine-tune"
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{self.config.epochs} ({phase})",
            disable=not progress,
            leave=False,
            file=sys.stdout,
        )
        # Time spent waiting for the loader (decoding, augmentation, collation; the host-side view on a GPU):
        # what a starved accelerator or a cache that skips image loading shows up in.
        data_wait = 0.0
        skipped = 0
        waiting = time.perf_counter()
        for step, batch in enumerate(self.loader("train", epoch)):
            if step >= self.steps_per_epoch:
                break
            data_wait += time.perf_counter() - waiting
            batch = batch.to(self.device)
            with self.autocast:
                terms = self.losses(batch, epoch)
            if self.optimizer_step(terms["total"]):
                self.scheduler.step()
            else:
                skipped += 1
            size = len(batch)
            samples += size
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.item() * size
            bar.set_postfix(loss=f"{terms['total'].item():.3f}")
            bar.update()
            waiting = time.perf_counter()
        bar.close()
        seconds = time.perf_counter() - started
        metrics = {
            f"train/loss_{name}" if name != "total" else "train/loss": total / samples for name, total in sums.items()
        }
        metrics["train/samples_per_second"] = samples / seconds
        metrics["train/epoch_seconds"] = seconds
        metrics["train/data_wait_seconds"] = data_wait
        metrics["train/peak_memory_mb"] = peak_memory_mb(self.device)
        metrics["train/text_encoder_frozen"] = float(self.text_frozen(epoch))
        metrics["train/precision"] = self.precision.name
        metrics["train/precision_reason"] = self.precision.reason
        if self.scaler.is_enabled():
            metrics["train/loss_scale"] = self.scaler.get_scale()
            metrics["train/skipped_steps"] = skipped
            metrics["train/overflows"] = self.overflows
        for group in self.optimizer.param_groups:
            metrics[f"lr/{group['name']}"] = group["lr"]
        return metrics

    def optimizer_step(self, loss: torch.Tensor) -> bool:
        """Backward and one optimiser step; under fp16 the loss is scaled first. Returns False when the step was
        skipped because the scaled gradients overflowed (the scaler then lowers its scale)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if not self.scaler.is_enabled():
            self.optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scaler.get_scale() < scale:
            self.overflows += 1
            return False
        return True

    @torch.no_grad()
    def evaluate(self, split: str, epoch: int) -> tuple[dict[str, float], list[list[int]]]:
        self.set_phase(epoch, training=False)
        predictions: list[int] = []
        labels: list[int] = []
        for batch in self.loader(split, epoch):
            batch = batch.to(self.device)
            with self.autocast:
                outputs = self.model(self.encoded(batch.original, epoch))
            predictions.extend(self.model.predictions(outputs.logits).tolist())
            labels.extend(batch.labels.tolist())
        metrics = with_prefix(split, classification_metrics(labels, predictions, self.dataset.spec.label_names))
        # The selection metric under a name that does not depend on the data set, for schedulers and ranking.
        metrics[f"{split}/score"] = metrics[f"{split}/{self.metric}"]
        confusion = confusion_matrix(labels, predictions, self.dataset.spec.num_classes).tolist()
        return metrics, confusion

    def untrained_encoders(self, epoch: int) -> dict[str, torch.nn.Module]:
        """The encoders that no epoch up to `epoch` has trained: their weights are still the ones the config
        built (pretrained, a weights file, or a seeded random initialisation). A frozen ResNet in train mode has
        updated its BatchNorm statistics, so it is not among them."""
        modules = {}
        if self.model.text_encoder is not None and self.text_frozen(epoch):
            modules["text_encoder"] = self.model.text_encoder
        frozen_in_eval = self.config.frozen_encoder_mode == "eval"
        if self.model.image_backbone is not None and self.config.model.freeze_image_encoder and frozen_in_eval:
            modules["image_backbone"] = self.model.image_backbone
        return modules

    def encoder_digest(self, name: str, module: torch.nn.Module) -> str:
        # Hashed once per run (feature-cache keys, checkpoints, resume): only asked of encoders not yet trained,
        # whose weights do not change.
        if name not in self.encoder_digests:
            self.encoder_digests[name] = state_digest(module)
        return self.encoder_digests[name]

    def state(self, epoch: int, best: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
        """The checkpoint after `epoch`. Untrained encoders are left out, with a digest of their weights: the
        config rebuilds them on resume. That keeps BERT-base and ResNet-50 (about 530 MB) out of every text-frozen
        epoch's checkpoint, which a study on a cluster uploads to its storage."""
        untrained = self.untrained_encoders(epoch)
        prefixes = tuple(f"{name}." for name in untrained)
        return {
            "epoch": epoch,
            "model": {key: value for key, value in self.model.state_dict().items() if not key.startswith(prefixes)},
            "untrained_encoders": {name: self.encoder_digest(name, module) for name, module in untrained.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "grad_scaler": {**self.scaler.state_dict(), "overflows": self.overflows},
            "best": best,
            "history": history,
            "config": self.config.to_flat_dict(),
        }

    def load_state(self, state: dict[str, Any], path: Path) -> None:
        """Restores a checkpoint written by `state` to continue training."""
        self.load_model_state(state, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        scaler = dict(state.get("grad_scaler") or {})
        self.overflows = scaler.pop("overflows", 0)
        if self.scaler.is_enabled() and scaler:
            self.scaler.load_state_dict(scaler)

    def load_model_state(self, state: dict[str, Any], path: Path) -> None:
        """The model's weights from a checkpoint; the encoders it left out must rebuild to the same weights."""
        untrained = state.get("untrained_encoders", {})
        sources = {
            "text_encoder": f"text encoder {self.config.model.text_encoder!r}",
            "image_backbone": f"image encoder {self.config.model.image_encoder!r} with weights "
            f"{self.config.model.image_weights!r}",
        }
        for name, digest in untrained.items():
            if self.encoder_digest(name, getattr(self.model, name)) != digest:
                raise CheckpointMismatch(
                    f"{path}: the checkpoint left out the untrained {name}, and the config's {sources[name]} "
                    f"(seed {self.config.seed}) now builds other weights; resume with the encoder it was trained with"
                )
        missing, unexpected = self.model.load_state_dict(state["model"], strict=False)
        missing = [key for key in missing if not key.startswith(tuple(f"{name}." for name in untrained))]
        if missing or unexpected:
            raise CheckpointMismatch(
                f"{path}: the checkpoint does not fit the config's model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )


def train(
    config: TrainConfig,
    report: Report | None = None,
    *,
    output_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
    device: torch.device | None = None,
) -> TrainResult:
    """Train, select the epoch on dev, and return the selected epoch's dev and test metrics.

    output_dir: where the checkpoint of the last epoch (`checkpoint/`) and `result.json` go; none are written
    without it. resume_from: a checkpoint folder written by an earlier run; training continues at the next epoch.
    device: where to train, if not where the config's `device` resolves to (a scheduler's assigned GPU).
    """
    started = time.perf_counter()
    output = Path(output_dir) if output_dir is not None else None
    device = device if device is not None else resolve_device(config.device)
    # Read before anything is built: a checkpoint that is refused or cut short costs no data loading.
    resume_file = Path(resume_from) / CHECKPOINT_FILE if resume_from is not None else None
    state = load_tensors(resume_file, map_location=device) if resume_file is not None else None
    run = Run(config, log, device)
    best: dict[str, Any] = {"epoch": -1, "dev": {}, "test": {}}
    history: list[dict[str, Any]] = []
    first_epoch = 0
    if resume_file is not None and state is not None:
        run.load_state(state, resume_file)
        best, history, first_epoch = state["best"], state["history"], state["epoch"] + 1
        log(f"resumed from {resume_from} after epoch {state['epoch'] + 1}")

    for epoch in range(first_epoch, config.epochs):
        metrics: dict[str, Any] = run.train_epoch(epoch, progress)
        dev_metrics, dev_confusion = run.evaluate("dev", epoch)
        metrics.update(dev_metrics)
        metrics["dev/confusion_matrix"] = dev_confusion
        if dev_metrics["dev/score"] > best["dev"].get("dev/score", -math.inf):
            test_metrics, test_confusion = run.evaluate("test", epoch)
            metrics.update(test_metrics)
            metrics["test/confusion_matrix"] = test_confusion
            best = {
                "epoch": epoch,
                "dev": dev_metrics,
                "test": test_metrics,
                "dev_confusion_matrix": dev_confusion,
                "test_confusion_matrix": test_confusion,
            }
        metrics["selected/epoch"] = best["epoch"]
        metrics["selected/dev/score"] = best["dev"]["dev/score"]
        for key in ("acc", "f1_weighted", "f1_macro"):
            metrics[f"selected/dev/{key}"] = best["dev"][f"dev/{key}"]
            metrics[f"selected/test/{key}"] = best["test"][f"test/{key}"]
        history.append({"epoch": epoch, **metrics})
        checkpoint_dir = None
        if output is not None:
            checkpoint_dir = output / "checkpoint"
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            save_tensors(run.state(epoch, best, history), checkpoint_dir / CHECKPOINT_FILE)
        if report is not None:
            report(metrics, epoch, checkpoint_dir)
        log(
            f"epoch {epoch + 1}/{config.epochs}: loss {metrics['train/loss']:.4f}, dev/{run.metric} "
            f"{dev_metrics['dev/score']:.4f}, dev/acc {dev_metrics['dev/acc']:.4f} "
            f"({metrics['train/samples_per_second']:.1f} samples/s)"
        )

    result = TrainResult(
        config=config.to_flat_dict(),
        selection_metric=run.metric,
        selected_epoch=best["epoch"],
        dev=best["dev"],
        test=best["test"],
        confusion_matrices={"dev": best["dev_confusion_matrix"], "test": best["test_confusion_matrix"]},
        label_names=list(run.dataset.spec.label_names),
        data=dict(run.dataset.affected),
        history=history,
        runtime_seconds=time.perf_counter() - started,
        precision={"name": run.precision.name, "reason": run.precision.reason},
    )
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        write_text_atomically(output / "result.json", json.dumps(result.to_json(), indent=2))
    # A worker process runs many trials in turn: what this run allocated goes back before the next one starts.
    device = run.device
    del run
    release_memory(device)
    return result


def describe_config(config: TrainConfig) -> str:
    """Every flat key with its value, then the keys whose value differs from the paper preset's on the same
    data set."""
    flat = config.to_flat_dict()
    width = max(map(len, flat))
    lines = [f"{key:<{width}}  {json.dumps(value)}" for key, value in flat.items()]
    changed = differences(config, build_config(config.dataset, "paper"))
    lines.append("")
    lines.append(f"differences from the paper preset on {config.dataset} ({len(changed)}):")
    lines.extend(
        f"{key:<{width}}  {json.dumps(paper)} -> {json.dumps(value)}" for key, (paper, value) in changed.items()
    )
    return "\n".join(lines)


def config_from_arguments(arguments: argparse.Namespace) -> TrainConfig:
    overrides: dict[str, Any] = {}
    if arguments.dataset:
        overrides["dataset"] = arguments.dataset
    if arguments.data_root:
        overrides["data_root"] = arguments.data_root
    if arguments.image_folder:
        overrides["image_folder"] = arguments.image_folder
    if arguments.variant:
        overrides["model.variant"] = arguments.variant
    overrides.update(parse_overrides(arguments.set))
    if arguments.config:
        if arguments.preset:
            raise ConfigError("--preset: give either --config or --preset, not both")
        flat = load_config_file(arguments.config).to_flat_dict()
        flat.update(overrides)
        return TrainConfig.from_flat_dict(flat)
    dataset = overrides.pop("dataset", "demo")
    return build_config(dataset, arguments.preset or "demo", overrides)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        config = config_from_arguments(arguments)
        if arguments.print_config:
            print(describe_config(config))
            return 0
        output = Path(arguments.output)
        checkpoint = output / "checkpoint"
        resume_from = checkpoint if arguments.resume and (checkpoint / CHECKPOINT_FILE).is_file() else None
        result = train(config, output_dir=output, resume_from=resume_from, progress=True)
    except (ConfigError, DataError, EncoderUnavailable, CheckpointMismatch, UnreadableFile) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"selected epoch {result.selected_epoch + 1}: dev {json.dumps(headline(result.dev))}, "
        f"test {json.dumps(headline(result.test))}"
    )
    print(f"result: {output / 'result.json'}")
    return 0


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The split's summary numbers (`dev/acc`, ...), rounded for printing."""
    return {key: round(value, 4) for key, value in metrics.items() if key.count("/") == 1 and isinstance(value, float)}


if __name__ == "__main__":
    sys.exit(main())
