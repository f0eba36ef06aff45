"""``bru bench`` of the code's speed and accuracy: activation kernels, training epochs,
the input pipeline, packed seeds, models, and MLflow's logging overhead."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from bru_core.errors import ConfigError

from ._common import DataDirOpt, DatasetOpt, DeviceOpt, EpochsOpt, JsonOpt, ModelOpt, comma_list, out, print_json

RoundsOpt = Annotated[int, typer.Option(min=1, help="Interleaved rounds; the median is reported.")]


def bench_table(rows: list[dict[str, Any]], title: str, json_output: bool) -> None:
    """The rows as one JSON list, or as a table followed by the machine they were measured on."""
    if json_output:
        print_json(rows)
        return
    from bru_core.bench import machine

    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column, justify="left" if isinstance(rows[0][column], str) else "right")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    out.print(table)
    out.print(f"machine: {machine()}")


def _radix_activation(spec: str, option: str) -> str:
    from bru_core.activations import canonical_activation, parse_activation

    try:
        canonical = canonical_activation(spec)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None
    if not parse_activation(canonical).is_radix_family:
        raise ConfigError(f"{option}: {spec!r} is not an ERU/ORU (eru:R or oru:R); ELU and ReLU are always timed")
    return canonical


def activations(
    n: Annotated[int, typer.Option(min=1, help="Number of values.")] = 4_000_000,
    rounds: RoundsOpt = 15,
    device: DeviceOpt = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16; a comma list times each.")] = "float32",
    activations: Annotated[str, typer.Option("--activations", "-a", help="Comma list.")] = "eru:2,eru:3,oru:2,oru:3",
    paths: Annotated[
        str, typer.Option(help="Comma list of eager, compiled, inplace, fused, native.")
    ] = "eager,compiled,inplace,fused,native",
    json_output: JsonOpt = False,
) -> None:
    """Forward + backward of ERU/ORU on each path against ELU and a plain copy."""
    import torch

    from bru_core.bench import ACTIVATION_PATHS, as_dicts, bench_activations

    dtypes = []
    for name in comma_list(dtype):
        if name not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"--dtype: {name!r} is not one of float32, bfloat16, float16")
        dtypes.append(getattr(torch, name))
    chosen_paths = comma_list(paths)
    for path in chosen_paths:
        if path not in ACTIVATION_PATHS:
            raise ConfigError(f"--paths: {path!r} is not one of {', '.join(ACTIVATION_PATHS)}")
    specs = [_radix_activation(spec, "--activations") for spec in comma_list(activations)]
    rows = []
    for chosen in dtypes:
        rows += as_dicts(bench_activations(specs, n=n, rounds=rounds, device=device, dtype=chosen, paths=chosen_paths))
    bench_table(rows, f"activation forward + backward, {n:,} values", json_output)


def accuracy(json_output: JsonOpt = False) -> None:
    """Float32 ERU/ORU (fast path) against the float64 formula, in float32 epsilons."""
    from bru_core.bench import as_dicts, bench_accuracy

    bench_table(as_dicts(bench_accuracy()), "fast path accuracy (max error, float32 eps)", json_output)


def tracking(
    server: Annotated[
        bool, typer.Option(help="Log to a local mlflow server (started for the run) instead of SQLite.")
    ] = False,
    rounds: RoundsOpt = 7,
    epochs: EpochsOpt = 10,
    json_output: JsonOpt = False,
) -> None:
    """MLflow logging overhead on digits/mlp4 runs: wall time with over without."""
    from bru_core.bench import as_dicts, bench_tracking

    rows = as_dicts(bench_tracking(epochs=epochs, rounds=rounds, server=server))
    bench_table(rows, f"tracking overhead (digits/mlp4, {epochs} epochs)", json_output)


def epochs(
    model: ModelOpt = "mlp8",
    dataset: DatasetOpt = "digits",
    rounds: RoundsOpt = 15,
    device: DeviceOpt = "cpu",
    json_output: JsonOpt = False,
) -> None:
    """Training-epoch time per activation, interleaved, as ratios to ELU and ReLU."""
    from bru_core.bench import as_dicts, bench_epochs

    rows = as_dicts(bench_epochs(model=model, dataset=dataset, rounds=rounds, device=device))
    bench_table(rows, f"{dataset}/{model} training epoch", json_output)


def train(
    model: ModelOpt = "mlp8",
    n_train: Annotated[
        int, typer.Option(min=1, help="MNIST-shaped training images for the input-pipeline epoch.")
    ] = 12_800,
    rounds: RoundsOpt = 5,
    device: DeviceOpt = "cpu",
    workers: Annotated[int, typer.Option(min=0, help="DataLoader workers for the tutorial pipeline.")] = 0,
    epochs_rounds: Annotated[int, typer.Option(min=0, help="Rounds of the activation-epoch table (0 skips it).")] = 15,
    json_output: JsonOpt = False,
) -> None:
    """Training throughput: bru's device-resident epoch against a torchvision DataLoader
    with ToTensor, then an mlp8 digits epoch per activation and path against ELU."""
    from bru_core.bench import as_dicts, bench_epochs, bench_input_pipeline

    pipeline = as_dicts(
        bench_input_pipeline(model=model, n_train=n_train, rounds=rounds, device=device, num_workers=workers)
    )
    epoch_rows = as_dicts(bench_epochs(rounds=epochs_rounds, device=device)) if epochs_rounds else []
    if json_output:
        print_json(
            [{"benchmark": "input pipeline", **r} for r in pipeline] + [{"benchmark": "epoch", **r} for r in epoch_rows]
        )
        return
    bench_table(pipeline, f"input pipeline: MNIST-shaped {model} epoch, {n_train:,} images", False)
    if epoch_rows:
        bench_table(epoch_rows, "digits/mlp8 training epoch per activation", False)


def models(
    batches: Annotated[int, typer.Option(min=1, help="Batches of 128 timed per model.")] = 8,
    device: DeviceOpt = "cpu",
    json_output: JsonOpt = False,
) -> None:
    """Seconds per training epoch of each model on MNIST- and CIFAR-shaped data."""
    from bru_core.bench import as_dicts, bench_models

    rows = as_dicts(bench_models(batches=batches, device=device))
    bench_table(rows, "training throughput per model (relu, batch 128)", json_output)


def packed(
    models: Annotated[str, typer.Option(help="Comma list of models.")] = "mlp4,lenet5,sae",
    dataset: DatasetOpt = "mnist",
    activation: Annotated[str, typer.Option("--activation", "-a", help="The activation every run uses.")] = "eru:2",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds K: K runs one after another against one pack of K.")] = 8,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of every run.")] = 1,
    n_train: Annotated[
        int | None, typer.Option(min=1, help="Train on the first N training images (default: all).")
    ] = None,
    pack: Annotated[int | None, typer.Option(min=1, help="Members per pack (default: as many as fit).")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds; the medians are reported.")] = 3,
    synthetic: Annotated[
        bool, typer.Option(help="Random images of the data set's shape and size (no data needed; times only).")
    ] = False,
    conv: Annotated[
        bool, typer.Option(help="Also time grouped convolutions against torch.func's vmap (lenet5, one step).")
    ] = True,
    device: DeviceOpt = "cpu",
    data_dir: DataDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Seeds packed into one batched model against the same seeds one after another."""
    from bru_core.bench import as_dicts, bench_conv_packing, bench_packed

    chosen = comma_list(models)
    rows = as_dicts(
        bench_packed(chosen, dataset, activation, seeds, epochs, device, data_dir, n_train, pack, rounds, synthetic)
    )
    conv_rows = as_dicts(bench_conv_packing(seeds=seeds, device=device)) if conv else []
    if json_output:
        print_json({"packed": rows, "conv_packing": conv_rows})
        return
    bench_table(rows, f"{seeds} seeds of one configuration: one after another vs packed", False)
    if conv_rows:
        bench_table(conv_rows, "packing convolutions: one training step of K lenet5 members (elu)", False)
