"""What a campaign will cost, measured before it runs (bru bench estimate)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bru_core.activations import parse_activation
from bru_core.bench.timing import sync, warm_cpu_kernels
from bru_core.data import synthetic_data
from bru_core.spec import CampaignSpec
from bru_core.training import EVAL_BATCH_SIZE, Trainer, resolve_device

# Standard training and test set sizes (digits: scikit-learn's 1,797 images, 20% test).
STANDARD_SIZES = {
    "mnist": (60_000, 10_000),
    "cifar10": (50_000, 10_000),
    "cifar100": (50_000, 10_000),
    "digits": (1_438, 359),
}


@dataclass
class CostEstimate:
    task: str
    activation: str
    device: str
    seconds_per_epoch: float  # training split + one validation pass, full data set size
    pack: int  # repeat seeds per pack, as repeats.pack gives them on this device
    repeat_seconds_per_epoch: float  # the same per seed, trained in packs of ``pack``
    grid_hours: float  # the task's epochs once (one seed, no search)
    campaign_hours: float  # trials unpacked + seeds in packs, x epochs: the spec as written, before pruning


def estimate_campaign(
    spec: CampaignSpec, device: str = "cpu", batches: int = 8, precision: str | None = None, compile: bool = False
) -> list[CostEstimate]:
    """Device-hours of a campaign from measured step times: each task x activation trains
    ``batches`` batches of random images of the data set's shape (after warm-up batches),
    times one validation pass, and extrapolates to the full data set and the spec's
    epochs; its repeat seeds are timed the same way as one pack (``repeats.pack``, on a
    GPU as many as fit). Pruning makes a real search cheaper; data loading and tracking
    are not counted."""
    from bru_core.packed import PackedTrainer, pack_limit

    warm_cpu_kernels()
    dev = resolve_device(device)
    seeds = len(spec.repeats.seeds)
    rows = []
    for task in spec.tasks:
        n_train_full, _ = STANDARD_SIZES[task.dataset]
        for activation in spec.activations:
            params = {"radix": 2.0} if parse_activation(activation).is_radix_family and ":" not in activation else {}
            config = spec.train_config(task.name, activation, params, seed=0)
            overrides = {"device": device, "compile": compile, "augment": False}
            if precision is not None:
                overrides["precision"] = precision
            config = config.model_copy(update=overrides)
            batch = config.batch_size
            data = synthetic_data(task.dataset, n_train=batch * batches, n_val=EVAL_BATCH_SIZE, device=dev)
            trainer = Trainer(config, data)
            trainer.train_epoch(1)  # warm-up: kernels, allocator, compilation
            seconds_train = trainer.train_epoch(2)[2]
            sync(dev)
            started = time.perf_counter()
            trainer.evaluate(data.val)
            sync(dev)
            seconds_eval = time.perf_counter() - started
            n_train = round(n_train_full * (1 - config.val_fraction))
            n_val = n_train_full - n_train
            per_epoch = seconds_train / (batch * batches) * n_train + seconds_eval / len(data.val) * n_val
            wanted = seeds if spec.repeats.pack == "auto" else min(seeds, spec.repeats.pack)
            pack = pack_limit(config, data, wanted)
            packed = PackedTrainer([config.model_copy(update={"seed": s}) for s in range(pack)], data)
            packed.train_epoch(1)
            packed_train = packed.train_epoch(2)[2]
            sync(dev)
            started = time.perf_counter()
            packed.evaluate(data.val)
            sync(dev)
            packed_eval = time.perf_counter() - started
            del packed
            per_seed = (packed_train / (batch * batches) * n_train + packed_eval / len(data.val) * n_val) / pack
            grid = per_epoch * config.epochs / 3600
            campaign = (spec.search.trials * per_epoch + seeds * per_seed) * config.epochs / 3600
            rows.append(CostEstimate(task.name, activation, str(dev), per_epoch, pack, per_seed, grid, campaign))
    return rows
