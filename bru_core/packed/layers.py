"""Packed layers: K Linear or Conv2d layers of one architecture as one batched layer, and
K flat nn.Sequential models as one PackedSequential, whose members can be dropped (a
diverged member leaves the pack) or unpacked into the plain model an unpacked run returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _take_members(t: Tensor, members: int, keep: Sequence[int]) -> Tensor:
    """The rows of the kept members of a packed tensor whose first dimension holds the
    members one after another (K, or K x out for a grouped convolution)."""
    per_member = t.shape[0] // members
    index = torch.as_tensor(list(keep), device=t.device)
    return t.reshape(members, -1).index_select(0, index).reshape(len(keep) * per_member, *t.shape[1:])


class PackedLinear(nn.Module):
    """K Linear layers as one batched product: (K, B, in) -> (K, B, out).

    The weights are kept as (K, in, out), the transpose of nn.Linear's, so the forward and
    the weight's gradient (x^T g) are plain batched products of contiguous operands: with
    (K, out, in) the backward wrote its gradient through a transpose, one more copy of
    every weight per step (measured: 10% of a packed mlp4 step on the CPU)."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach().t() for layer in layers]).contiguous())
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))  # K, out

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)

    def member(self, k: int) -> dict[str, Tensor]:
        return {"weight": self.weight[k].t(), "bias": self.bias[k]}


ConvStrategy = Literal["grouped", "loop"]


class PackedConv2d(nn.Module):
    """K Conv2d layers: one grouped convolution on (B, K x C, H, W) (``grouped``, one
    launch: CUDA), or K convolutions on the members' contiguous slices of (K x B, C, H, W)
    (``loop``: the CPU, where oneDNN's grouped convolution ran at half the speed of K
    separate ones, as did torch.func's vmap, which lowers to the same grouped call)."""

    def __init__(self, layers: Sequence[nn.Conv2d]) -> None:
        super().__init__()
        first = layers[0]
        if first.padding_mode != "zeros":
            raise TypeError(f"packed convolutions support zero padding only, not {first.padding_mode}")
        self.members = len(layers)
        self.out_channels = first.out_channels
        self.stride, self.padding, self.dilation, self.groups = (
            first.stride,
            first.padding,
            first.dilation,
            first.groups,
        )
        self.weight = nn.Parameter(torch.cat([layer.weight.detach() for layer in layers]))  # K x out, in, kh, kw
        self.bias = nn.Parameter(torch.cat([layer.bias.detach() for layer in layers]))  # K x out

    strategy: ConvStrategy = "grouped"

    def forward(self, x: Tensor) -> Tensor:
        if self.strategy == "grouped":
            return F.conv2d(
                x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups * self.members
            )
        parts = zip(x.chunk(self.members), self.weight.chunk(self.members), self.bias.chunk(self.members), strict=True)
        return torch.cat(
            [F.conv2d(xk, w, b, self.stride, self.padding, self.dilation, self.groups) for xk, w, b in parts]
        )

    def member(self, k: int) -> dict[str, Tensor]:
        rows = slice(k * self.out_channels, (k + 1) * self.out_channels)
        return {"weight": self.weight[rows], "bias": self.bias[rows]}


class _Unflatten(nn.Module):
    """Where a model flattens: from the convolutions' (B, K x C, H, W), or from the input's
    (K, B, C, H, W), to the linear layers' (K, B, C x H x W)."""

    def __init__(self) -> None:
        super().__init__()
        self.members = 1
        self.strategy: ConvStrategy = "grouped"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:  # (K, B, C, H, W): a model that starts by flattening
            return x.flatten(2)
        if self.strategy == "loop":  # (K x B, C, H, W)
            return x.reshape(self.members, x.shape[0] // self.members, -1)
        return x.reshape(x.shape[0], self.members, -1).transpose(0, 1)


_PACKED = {nn.Linear: PackedLinear, nn.Conv2d: PackedConv2d}


def packable(model: nn.Module) -> bool:
    """Whether a model's layers can be packed: Linear and Conv2d layers, Flatten, and
    modules without parameters (activations, pooling)."""
    for layer in model.children():
        if type(layer) in _PACKED or isinstance(layer, nn.Flatten):
            continue
        if any(True for _ in layer.parameters()) or list(layer.children()):
            return False
    return True


class PackedSequential(nn.Module):
    """K models of one architecture (nn.Sequential, flat) as one: member inputs stacked
    (K, B, C, H, W) in, member outputs (K, B, out) out."""

    def __init__(self, models: Sequence[nn.Sequential]) -> None:
        super().__init__()
        self.members = len(models)
        layers: list[nn.Module] = []
        for parts in zip(*(list(m.children()) for m in models), strict=True):
            kind = type(parts[0])
            if kind in _PACKED:
                layers.append(_PACKED[kind](parts))
            elif isinstance(parts[0], nn.Flatten):
                layers.append(_Unflatten())
            else:  # parameter-free (checked by packable): one module serves every member
                layers.append(parts[0])
        self.layers = nn.ModuleList(layers)
        first = next(layer for layer in self.layers if isinstance(layer, (PackedLinear, PackedConv2d, _Unflatten)))
        self.convolutional_input = isinstance(first, PackedConv2d)
        self.channels_last = False
        self.conv_strategy: ConvStrategy = "grouped"
        self._set_members(self.members)

    def use_conv_strategy(self, strategy: ConvStrategy) -> None:
        """grouped (one grouped convolution per layer) or loop (one per member): see PackedConv2d."""
        self.conv_strategy = strategy
        for layer in self.layers:
            if isinstance(layer, (PackedConv2d, _Unflatten)):
                layer.strategy = strategy

    def _set_members(self, members: int) -> None:
        self.members = members
        for layer in self.layers:
            if isinstance(layer, (PackedConv2d, _Unflatten)):
                layer.members = members

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[1]
        if self.convolutional_input and self.conv_strategy == "loop":  # (K, B, C, H, W) -> (K x B, C, H, W)
            x = x.reshape(-1, *x.shape[2:])
        elif self.convolutional_input:  # (K, B, C, H, W) -> (B, K x C, H, W): members' channels side by side
            x = x.transpose(0, 1).reshape(batch, -1, *x.shape[3:])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        for layer in self.layers:
            x = layer(x)
        return x

    def keep(self, keep: Sequence[int]) -> None:
        """Keep only these members (positions in the pack), in place: the parameters are
        re-pointed at the kept rows, so an optimizer holding them goes on (its state must
        be sliced the same way: ``slice_optimizer_state``)."""
        for parameter in self.parameters():
            parameter.data = _take_members(parameter.data, self.members, keep)
            parameter.grad = None
        self._set_members(len(keep))

    def unpack(self, k: int, template: nn.Sequential) -> nn.Sequential:
        """Member k as the plain nn.Sequential an unpacked run trains (``template`` has
        the architecture; its weights are replaced)."""
        weighted = [layer for layer in self.layers if isinstance(layer, (PackedLinear, PackedConv2d))]
        targets = [layer for layer in template.children() if type(layer) in _PACKED]
        with torch.no_grad():
            for packed, target in zip(weighted, targets, strict=True):
                for name, value in packed.member(k).items():
                    getattr(target, name).copy_(value)
        return template


def slice_optimizer_state(
    optimizer: torch.optim.Optimizer, shapes: dict[int, torch.Size], members: int, keep: Sequence[int]
) -> None:
    """Keep the kept members' rows of every per-parameter state tensor (momentum, Adam's
    moments); ``shapes``: each parameter's shape before slicing, by id."""
    for parameter, state in optimizer.state.items():
        old = shapes.get(id(parameter))
        for key, value in list(state.items()):
            if torch.is_tensor(value) and old is not None and value.shape == old:
                state[key] = _take_members(value, members, keep)
