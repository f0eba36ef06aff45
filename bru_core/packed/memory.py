"""Packs and device memory: how many members fit in one pack on a GPU (a one-member probe's
peak, against the free memory), and what counts as running out."""

from __future__ import annotations

import math

import torch

from bru_core.config import TrainConfig
from bru_core.data import Data
from bru_core.packed.trainer import PackedTrainer, _member_losses
from bru_core.training import _autocast, resolve_device


def out_of_memory(exc: BaseException) -> bool:
    """A device allocation that failed: CUDA's OutOfMemoryError, or the CPU allocator's."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    )


def release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def member_bytes(config: TrainConfig, data: Data) -> int:
    """The peak device memory one member adds to a pack on CUDA, measured by training a
    pack of one for a few batches (0 on the CPU, where packs are not sized)."""
    device = resolve_device(config.device)
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    trainer = PackedTrainer([config], data)
    batches = trainer._stack(data.train)
    for _, (inputs, images, labels) in zip(range(3), batches, strict=False):
        with _autocast(device, config.precision):
            losses = _member_losses(trainer.reconstruction, trainer.forward(inputs), images, labels).mean(dim=1)
        trainer.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        trainer.optimizer.step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del trainer
    return int(peak)


def pack_limit(config: TrainConfig, data: Data, wanted: int, headroom: float = 0.8) -> int:
    """How many members fit in one pack: all of them on the CPU; on CUDA as many as fit in
    ``headroom`` of the free memory at a one-member probe's peak each."""
    device = resolve_device(config.device)
    if device.type != "cuda" or wanted <= 1:
        return max(1, wanted)
    per_member = member_bytes(config, data)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(wanted, math.floor(headroom * free / max(per_member, 1))))
