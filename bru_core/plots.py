"""Pictures of activation functions and their derivatives."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from bru_core.activations import get_activation, parse_activation
from bru_core.errors import ConfigError

PLOT_FORMATS = (".png", ".pdf", ".svg")


def _curves(spec: str, z: torch.Tensor) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(label, f(z), f'(z)) per curve; a radix schedule gives its first and last layer."""
    parsed = parse_activation(spec)
    if parsed.is_schedule:
        family = parsed.name
        variants = [
            (f"{spec} (first layer, r={parsed.radix_first:g})", f"{family}:{parsed.radix_first:g}"),
            (f"{spec} (last layer, r={parsed.radix_last:g})", f"{family}:{parsed.radix_last:g}"),
        ]
    else:
        variants = [(str(parsed), spec)]
    curves = []
    for label, single in variants:
        module = get_activation(single)
        x = z.clone().requires_grad_(True)
        y = module(x)
        (slope,) = torch.autograd.grad(y.sum(), x)
        curves.append((label, y.detach(), slope))
    return curves


def plot_activations(specs: list[str], out: Path, z_min: float = -3.0, z_max: float = 3.0) -> Path:
    """Draw f(z) and f'(z) for each spec side by side; write atomically to ``out``."""
    if not specs:
        raise ConfigError("activations: give at least one activation to plot, e.g. oru:3 eru:2 relu")
    if out.suffix.lower() not in PLOT_FORMATS:
        raise ConfigError(f"--out: {out} must end in one of {', '.join(PLOT_FORMATS)}")
    if not out.parent.exists():
        raise ConfigError(f"--out: folder {out.parent} does not exist")
    if not z_min < z_max:
        raise ConfigError(f"range: z_min ({z_min}) must be below z_max ({z_max})")
    z = torch.linspace(z_min, z_max, 1201)
    curves = [curve for spec in specs for curve in _curves(spec, z)]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_f, ax_d) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for label, value, slope in curves:
        ax_f.plot(z, value, label=label, linewidth=1.6)
        ax_d.plot(z, slope, label=label, linewidth=1.6)
    for ax, title in ((ax_f, "f(z)"), (ax_d, "f'(z)")):
        ax.axhline(0, color="0.6", linewidth=0.8)
        ax.axvline(0, color="0.6", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("z")
        ax.grid(alpha=0.3)
    ax_f.legend(fontsize=8)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=out.suffix, delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        fig.savefig(tmp_path, dpi=120)
        os.replace(tmp_path, out)
    finally:
        plt.close(fig)
        tmp_path.unlink(missing_ok=True)
    return out
