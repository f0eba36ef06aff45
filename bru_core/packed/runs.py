"""Whole runs: one configuration on several seeds, in one pack (``train_packed``) or in
packs one after another, split where a pack runs out of memory (``train_in_packs``), with
each member's outcome (a PackedRun)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from bru_core.config import TrainConfig
from bru_core.data import Data
from bru_core.errors import ConfigError, NonFiniteLossError
from bru_core.models import build_model, model_kind
from bru_core.packed.layers import packable
from bru_core.packed.memory import out_of_memory, pack_limit, release_cached_memory
from bru_core.packed.trainer import PackedTrainer, check_pack
from bru_core.training import EpochRecord, History, prepare_data, resolve_device


@dataclass
class PackedRun:
    """One member's outcome: its history (up to the divergence, if it diverged)."""

    seed: int
    history: History
    diverged: NonFiniteLossError | None = None

    @property
    def finished(self) -> bool:
        return self.diverged is None


MemberEpochCallback = Callable[[int, EpochRecord], None]  # (seed, record)
DivergedCallback = Callable[[int, NonFiniteLossError], None]  # (seed, error)
BatchCallback = Callable[[int, int], None]  # (batches done, batches per epoch)


@dataclass(frozen=True)
class PackOptions:
    """What train_packed and train_in_packs take by name after the configurations (and
    the pack size), kept together as one value to hand on."""

    on_epoch: MemberEpochCallback | None = None  # each member's epoch as it ends
    on_batch: BatchCallback | None = None  # the pack's progress through an epoch
    data: Data | None = None  # the data set, loaded once for every pack (None: as the config says)
    evaluate_test: bool = True  # False for search trials: no test number exists for them
    on_diverged: DivergedCallback | None = None  # a member that left the pack, as it happens

    def as_kwargs(self) -> dict[str, Any]:
        """The fields by name, to hand on as train_packed's arguments (not
        dataclasses.asdict, which would copy the data set)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def train_packed(
    configs: Sequence[TrainConfig | dict[str, Any]],
    *,
    on_epoch: MemberEpochCallback | None = None,
    on_batch: BatchCallback | None = None,
    data: Data | None = None,
    evaluate_test: bool = True,
    on_diverged: DivergedCallback | None = None,
) -> list[PackedRun]:
    """Train one configuration on several seeds as one pack; one PackedRun per config, in
    order (the options: PackOptions). A member that diverges is reported (``on_diverged``
    as it happens) and the others go on; each finished member's history has its final
    metrics and its own model."""
    options = PackOptions(on_epoch, on_batch, data, evaluate_test, on_diverged)
    configs = [TrainConfig.parse(c) for c in configs]
    check_pack(configs)
    if not activation_packable(configs[0]):
        return [_train_alone(c, options) for c in configs]
    started = time.perf_counter()
    trainer = PackedTrainer(configs, options.data)
    if trainer.config.test_every_epoch and not options.evaluate_test:
        raise ConfigError("test_every_epoch: cannot be combined with evaluate_test=False")
    for epoch in range(1, trainer.config.epochs + 1):
        if not trainer.active:
            break
        records = trainer.epoch(epoch, options.on_batch)
        for m in trainer.diverged_now:
            member = trainer.members[m]
            if options.on_diverged is not None and member.diverged is not None:
                options.on_diverged(member.seed, member.diverged)
        if options.on_epoch is not None:
            for m, record in records.items():
                options.on_epoch(trainer.members[m].seed, record)
    finals = trainer.final_metrics(include_test=options.evaluate_test) if trainer.active else {}
    wall = time.perf_counter() - started
    runs = []
    for m, member in enumerate(trainer.members):
        history = member.history
        history.seconds = wall / len(trainer.members)  # each member's share of the pack's time
        history.pack_size = len(trainer.members)
        if m in finals:
            history.final = finals[m]
            history.model = trainer.member_model(m)
        runs.append(PackedRun(member.seed, history, member.diverged))
    return runs


def train_in_packs(
    configs: Sequence[TrainConfig | dict[str, Any]],
    pack: int | None = None,
    *,
    on_epoch: MemberEpochCallback | None = None,
    on_batch: BatchCallback | None = None,
    data: Data | None = None,
    evaluate_test: bool = True,
    on_diverged: DivergedCallback | None = None,
) -> list[PackedRun]:
    """Train one configuration on several seeds in packs of at most ``pack`` members
    (None: as many as fit, ``pack_limit``), one pack after another; one PackedRun per
    config, in order. The options are train_packed's.

    A pack that runs out of memory before it has reported anything (the first epoch: the
    peak is reached in its first batches and first evaluation) is split in two and each
    half trained in turn, down to packs of one, which is an unpacked run's own memory; an
    out-of-memory error after a member's epoch was reported is raised, as it would be
    unpacked, rather than report those epochs twice."""
    options = PackOptions(on_epoch, on_batch, data, evaluate_test, on_diverged)
    configs = [TrainConfig.parse(c) for c in configs]
    check_pack(configs)
    data = options.data if options.data is not None else prepare_data(configs[0], resolve_device(configs[0].device))
    size = pack if pack is not None else pack_limit(configs[0], data, len(configs))
    if size < 1:
        raise ConfigError(f"pack: {size} members; a pack holds at least one")
    reported: set[int] = set()

    def note_epoch(seed: int, record: EpochRecord) -> None:
        reported.add(seed)
        if options.on_epoch is not None:
            options.on_epoch(seed, record)

    def note_diverged(seed: int, exc: NonFiniteLossError) -> None:
        reported.add(seed)
        if options.on_diverged is not None:
            options.on_diverged(seed, exc)

    noted = PackOptions(note_epoch, options.on_batch, data, options.evaluate_test, note_diverged)

    def train_group(group: list[TrainConfig]) -> list[PackedRun]:
        try:
            return train_packed(group, **noted.as_kwargs())
        except BaseException as exc:
            if len(group) == 1 or not out_of_memory(exc) or reported & {c.seed for c in group}:
                raise
        release_cached_memory(data.device)
        half = (len(group) + 1) // 2
        return train_group(group[:half]) + train_group(group[half:])

    runs: list[PackedRun] = []
    for start in range(0, len(configs), size):
        runs += train_group(configs[start : start + size])
    return runs


def activation_packable(config: TrainConfig) -> bool:
    """Whether this configuration's model can be packed (its activations have no parameters)."""
    from bru_core.data import DataInfo, dataset_shape

    shape, n_classes = dataset_shape(config.dataset)
    info = DataInfo(config.dataset, shape, n_classes, 1, 1, 1)
    return packable(build_model(config.model, info, config.activation, torch.Generator().manual_seed(0)))


def _train_alone(config: TrainConfig, options: PackOptions) -> PackedRun:
    """A pack of one the plain way (an activation that cannot be packed)."""
    from bru_core.training import train

    records: list[EpochRecord] = []

    def log(record: EpochRecord) -> None:
        records.append(record)
        if options.on_epoch is not None:
            options.on_epoch(config.seed, record)

    try:
        history = train(
            config, on_epoch=log, on_batch=options.on_batch, data=options.data, evaluate_test=options.evaluate_test
        )
        return PackedRun(config.seed, history)
    except NonFiniteLossError as exc:
        if options.on_diverged is not None:
            options.on_diverged(config.seed, exc)
        history = History(config.model_dump(mode="json"), model_kind(config.model).objective, config.device, 0, records)
        return PackedRun(config.seed, history, exc)


def parse_seeds(text: str) -> list[int]:
    """``0-7``, ``1,3,5`` or ``0-3,8``: distinct seeds >= 0, in the order written."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        try:
            values = list(range(int(low), int(high) + 1)) if dash else [int(part)]
        except ValueError:
            raise ConfigError(f"--seeds: {text!r} is not a list of seeds; write e.g. 0-7 or 1,3,5") from None
        if dash and int(high) < int(low):
            raise ConfigError(f"--seeds: {part!r} runs backwards; write e.g. 0-7")
        seeds += values
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"--seeds: {text!r} must name distinct seeds >= 0")
    return seeds
