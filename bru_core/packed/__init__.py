"""Packed training: the K repeat seeds of one configuration as one batched model.

The paper's networks are small: an mlp4 step on MNIST is a few 128-wide matrix products,
so one run leaves most of a CPU, and nearly all of a GPU, idle. Here K runs that differ
only in their seed train as one model on one device:

* **The same runs.** Member k is built exactly as the unpacked run with its seed builds
  its model (``build_model`` with that seed's initialisation stream) and draws that seed's
  batch order and augmentation, so it follows the unpacked run's trajectory up to
  floating-point summation order (tests/test_packed.py: metrics after a few epochs agree
  to 1e-4 relative for every model).
* **Batched layers.** A Linear layer becomes one batched matrix product over a leading
  member dimension (``baddbmm``); a Conv2d one grouped convolution with the members'
  channels side by side (groups = K); pooling works per channel as it is; the activation is
  applied once to the packed tensor, so ERU/ORU's fused kernels see K times larger tensors.
* **Independent members.** The loss is the sum of the members' own mean losses, so each
  member's gradient is its own; SGD, momentum, Adam and AdamW are elementwise, so one
  optimizer over the packed parameters is K independent optimizers (tested against K
  separate ones).
* **Divergence stops one member.** A member whose loss stops being finite is taken out of
  the pack at the end of that epoch (its parameters and optimizer state sliced away) and
  reported with the epoch and batch, as ``NonFiniteLossError`` reports them unpacked; the
  others go on.
* **Memory.** The members share one copy of the data; training activations are K runs'
  worth; evaluation passes take batches of EVAL_BATCH_SIZE / K examples, so an evaluation
  holds what one unpacked run's does. ``pack_limit`` sizes packs to a GPU's free memory
  from a one-member probe, and ``train_in_packs`` splits a pack that still runs out of
  memory rather than crash.

Activations with parameters of their own (PReLU) are not packed: each seed of such a
configuration is its own pack of one (``packable``).

The package: ``layers`` (the packed layers and model), ``trainer`` (the packed trainer, an
epoch at a time), ``runs`` (whole runs, in one pack or several) and ``memory`` (packs and
device memory).
"""

from bru_core.packed.layers import (
    ConvStrategy,
    PackedConv2d,
    PackedLinear,
    PackedSequential,
    packable,
    slice_optimizer_state,
)
from bru_core.packed.memory import member_bytes, pack_limit
from bru_core.packed.runs import (
    BatchCallback,
    DivergedCallback,
    MemberEpochCallback,
    PackedRun,
    PackOptions,
    activation_packable,
    parse_seeds,
    train_in_packs,
    train_packed,
)
from bru_core.packed.trainer import Member, PackedTrainer, check_pack

__all__ = [
    "BatchCallback",
    "ConvStrategy",
    "DivergedCallback",
    "Member",
    "MemberEpochCallback",
    "PackOptions",
    "PackedConv2d",
    "PackedLinear",
    "PackedRun",
    "PackedSequential",
    "PackedTrainer",
    "activation_packable",
    "check_pack",
    "member_bytes",
    "pack_limit",
    "packable",
    "parse_seeds",
    "slice_optimizer_state",
    "train_in_packs",
    "train_packed",
]
