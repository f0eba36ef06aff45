"""What there is to choose from: ``bru activations`` (the registry, and ``plot``) and
``bru models`` (the networks and their sizes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bru_core.errors import ConfigError

from ._common import DatasetOpt, out


def activations(ctx: typer.Context) -> None:
    """List every activation name with the initialisation used for the layer before it."""
    if ctx.invoked_subcommand is not None:
        return
    from bru_core.activations import RADIX_FAMILIES, get_activation, known_activations
    from bru_core.initialisation import describe_rule

    table = Table(title="activations (spec strings for --activation)")
    table.add_column("spec")
    table.add_column("module")
    table.add_column("weights of the layer before it")
    for name in known_activations():
        family = name.split(":")[0]
        module = RADIX_FAMILIES[family](2.0) if family in RADIX_FAMILIES else get_activation(name)
        table.add_row(name, type(module).__name__, describe_rule(module))
    out.print(table)
    out.print(
        "eru and oru alone mean radix 2; eru:R1>R2 spreads the radix linearly from the first hidden layer to the last."
    )


def activations_plot(
    specs: Annotated[list[str], typer.Argument(help="Activations to draw, e.g. oru:3 eru:2 relu.")],
    out_path: Annotated[Path, typer.Option("--out", help="Image file (.png, .pdf or .svg).")] = Path("activations.png"),
    z_min: Annotated[float, typer.Option(help="Left end of z.")] = -3.0,
    z_max: Annotated[float, typer.Option(help="Right end of z.")] = 3.0,
) -> None:
    """Draw activations and their derivatives."""
    from bru_core.activations import parse_activation
    from bru_core.plots import plot_activations

    for spec in specs:
        try:
            parse_activation(spec)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    path = plot_activations(specs, out_path, z_min, z_max)
    out.print(f"wrote {path}")


def models(dataset: DatasetOpt = "mnist") -> None:
    """List the models with their parameter counts for a data set's shape."""
    from bru_core.data import DataInfo, dataset_shape
    from bru_core.models import MODELS, build_model, model_kind, parameter_count

    shape, n_classes = dataset_shape(dataset)
    info = DataInfo(dataset, shape, n_classes, 0, 0, 0)
    table = Table(title=f"models for {dataset} ({'x'.join(map(str, shape))}, {n_classes} classes)")
    for column in ("model", "objective", "parameters"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for name in MODELS:
        table.add_row(name, model_kind(name).objective, f"{parameter_count(build_model(name, info, 'relu')):,}")
    out.print(table)
