"""``bru train`` and ``bru compare``: training runs outside any campaign, for a quick look."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bru_core.errors import ConfigError

from ._common import (
    BatchOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    DownloadOpt,
    EpochsOpt,
    JsonOpt,
    LrOpt,
    ModelOpt,
    OptimizerOpt,
    check_writable,
    err,
    mean_sd,
    num,
    out,
    pct,
    print_json,
    progress_bar,
    write_atomically,
)

# The options only bru train takes
ActivationOpt = Annotated[
    str, typer.Option("--activation", "-a", help="relu, elu, eru:2, oru:3>2, ... (bru activations).")
]
MomentumOpt = Annotated[float, typer.Option(help="SGD momentum.")]
NesterovOpt = Annotated[
    bool | None, typer.Option("--nesterov/--no-nesterov", help="Nesterov momentum (default: on for sgd).")
]
WeightDecayOpt = Annotated[float, typer.Option(help="Weight decay (the paper uses none).")]
ScheduleOpt = Annotated[str, typer.Option(help="Learning-rate schedule: none, cosine or step.")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed of initialisation, batch order and augmentation (default 0).")]
SeedsOpt = Annotated[
    str | None,
    typer.Option(help="Train several seeds as one batched model (a pack), e.g. 0-7 or 1,3,5; mean ± sd and each seed."),
]
PrecisionOpt = Annotated[str, typer.Option(help="fp32, or bf16 autocast on CUDA.")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model (long runs on a GPU).")]
ValFractionOpt = Annotated[float, typer.Option(help="Share of the training set held out for validation.")]
AugmentOpt = Annotated[
    bool | None, typer.Option("--augment/--no-augment", help="Random crop + flip (default: on for CIFAR).")
]
TestEveryEpochOpt = Annotated[bool, typer.Option(help="Measure the test set every epoch (learning curves).")]
HistoryOpt = Annotated[Path | None, typer.Option(help="Also write the full history (every epoch) to this JSON file.")]

FINAL_KEYS = ("train_loss", "val_loss", "val_error", "test_loss", "test_error", "error_quotient")


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _config(values: dict[str, Any]):
    """TrainConfig from CLI values; an error names the option the user typed."""
    from bru_core.config import TrainConfig

    try:
        return TrainConfig.parse(values)
    except ConfigError as exc:
        field, sep, message = str(exc).partition(": ")
        if sep and field in TrainConfig.model_fields:
            raise ConfigError(f"{_option_name(field)}: {message}") from None
        raise


# --------------------------------------------------------------------------- train


def train(
    dataset: DatasetOpt = "digits",
    model: ModelOpt = "mlp4",
    activation: ActivationOpt = "relu",
    epochs: EpochsOpt = 10,
    lr: LrOpt = 0.03,
    optimizer: OptimizerOpt = "sgd",
    momentum: MomentumOpt = 0.9,
    nesterov: NesterovOpt = None,
    weight_decay: WeightDecayOpt = 0.0,
    batch_size: BatchOpt = 128,
    schedule: ScheduleOpt = "cosine",
    seed: SeedOpt = None,
    seeds: SeedsOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    compile_model: CompileOpt = False,
    val_fraction: ValFractionOpt = 0.1,
    augment: AugmentOpt = None,
    test_every_epoch: TestEveryEpochOpt = False,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    json_output: JsonOpt = False,
    history: HistoryOpt = None,
) -> int | None:
    """Train one model (or, with --seeds, one pack of seeds) and report train, validation
    and test metrics.

    The defaults (SGD with Nesterov momentum 0.9, lr 0.03 annealed by a cosine, batch 128)
    are a recipe for a quick standalone run: mlp4 with ORU r = 3 reaches 2.3-2.6% test error
    on real MNIST in 5 epochs (seeds 0-3). A campaign's training values come from its spec."""
    if seed is not None and seeds is not None:
        raise ConfigError("--seed and --seeds: give one (--seeds trains several seeds as one pack)")
    config = _config(
        dict(
            dataset=dataset, model=model, activation=activation, epochs=epochs, lr=lr, optimizer=optimizer,
            momentum=momentum,
            nesterov=optimizer == "sgd" and momentum > 0 if nesterov is None else nesterov,
            weight_decay=weight_decay, batch_size=batch_size,
            schedule=schedule, seed=seed or 0, device=device, precision=precision, val_fraction=val_fraction,
            augment=augment, test_every_epoch=test_every_epoch, data_dir=data_dir, download=download,
            compile=compile_model,
        )
    )  # fmt: skip
    check_writable(history, "--history")
    if seeds is not None:
        from bru_core.packed import parse_seeds

        return _train_pack([config.model_copy(update={"seed": s}) for s in parse_seeds(seeds)], json_output, history)
    _train_one(config, json_output, history)
    return None


def _train_one(config, json_output: bool, history: Path | None) -> None:
    from bru_core.training import train as run_training

    with progress_bar() as progress:
        task = progress.add_task(f"epoch 1/{config.epochs}", total=None, status="")

        def on_batch(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_epoch(record) -> None:
            status = f"val loss {record.val_loss:.4f}" + (
                f", val error {pct(record.val_error)}" if record.val_error is not None else ""
            )
            nxt = min(record.epoch + 1, config.epochs)
            progress.update(task, description=f"epoch {nxt}/{config.epochs}", completed=0, status=status)

        result = run_training(config, on_epoch=on_epoch, on_batch=on_batch)
    if history is not None:
        write_atomically(history, json.dumps(result.to_dict(), indent=1))
    if json_output:
        print_json(
            {**result.summary(), "activation": config.activation, "model": config.model, "dataset": config.dataset}
        )
        return
    _print_epochs(config, result)


def _print_epochs(config, result) -> None:
    table = Table(title=f"{config.dataset}/{config.model} {config.activation} (seed {config.seed}, {result.device})")
    for column in ("epoch", "train loss", "train error", "val loss", "val error", "lr", "seconds"):
        table.add_column(column, justify="right")
    for r in result.epochs:
        table.add_row(
            str(r.epoch),
            num(r.train_loss),
            pct(r.train_error),
            num(r.val_loss),
            pct(r.val_error),
            f"{r.lr:.3g}",
            f"{r.seconds:.2f}",
        )
    out.print(table)
    f = result.final
    out.print(
        f"final: train loss {num(f['train_loss'])}, val loss {num(f['val_loss'])} (error {pct(f['val_error'])}), "
        f"test loss {num(f['test_loss'])} (error {pct(f['test_error'])}), error quotient {num(f['error_quotient'], 2)}; "
        f"{len(result.epochs)} epochs in {result.seconds:.1f} s"
    )


# --------------------------------------------------------------------------- train --seeds


def _train_pack(configs: list, json_output: bool, history: Path | None) -> int:
    """bru train --seeds: one pack, then each member's final metrics and their mean ± sd.
    Exit code 1 if a member diverged (the others are reported all the same)."""
    members = _run_pack(configs)
    if history is not None:
        payload = {
            "members": [{**m.history.to_dict(), "diverged": str(m.diverged) if m.diverged else None} for m in members]
        }
        write_atomically(history, json.dumps(payload, indent=1))
    finished = [m for m in members if m.finished]
    values = {
        key: [m.history.final[key] for m in finished if m.history.final.get(key) is not None] for key in FINAL_KEYS
    }
    if json_output:
        print_json(_pack_summary(configs, members, values))
    else:
        _print_pack(configs, members, values)
    diverged = [m for m in members if not m.finished]
    if diverged:
        err.print(
            f"error: training diverged for seed(s) {', '.join(str(m.seed) for m in diverged)} "
            f"({diverged[0].diverged}); try a lower --lr",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
        return 1
    return 0


def _run_pack(configs: list) -> list:
    from bru_core.packed import train_in_packs

    config = configs[0]
    with progress_bar() as progress:
        task = progress.add_task(f"{len(configs)} seeds, epoch 1/{config.epochs}", total=None, status="")

        def on_batch(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_epoch(seed: int, record) -> None:  # called once per member: the same epoch
            nxt = min(record.epoch + 1, config.epochs)
            progress.update(task, description=f"{len(configs)} seeds, epoch {nxt}/{config.epochs}", completed=0)

        return train_in_packs(configs, on_epoch=on_epoch, on_batch=on_batch)


def _pack_summary(configs: list, members: list, values: dict[str, list[float]]) -> dict[str, Any]:
    config = configs[0]
    rows = [
        {"seed": m.seed, "status": "finished" if m.finished else "diverged", **(m.history.summary() if m.finished else {}),
         "failure": None if m.finished else str(m.diverged)}
        for m in members
    ]  # fmt: skip
    return {
        "activation": config.activation, "model": config.model, "dataset": config.dataset,
        "seeds": [c.seed for c in configs], "finished": sum(m.finished for m in members),
        "mean": {k: statistics.mean(v) if v else None for k, v in values.items()},
        "sd": {k: statistics.stdev(v) if len(v) > 1 else None for k, v in values.items()},
        "members": rows, "seconds": sum(m.history.seconds for m in members),
        "pack_sizes": sorted({m.history.pack_size for m in members}),
    }  # fmt: skip


def _print_pack(configs: list, members: list, values: dict[str, list[float]]) -> None:
    config = configs[0]
    device = members[0].history.device
    table = Table(
        title=f"{config.dataset}/{config.model} {config.activation}: {len(configs)} seeds as one pack ({device})"
    )
    for column in ("seed", "train loss", "val error", "test loss", "test error", "error quotient"):
        table.add_column(column, justify="right")
    for m in members:
        if not m.finished:
            table.add_row(str(m.seed), f"diverged: {m.diverged}", "", "", "", "")
            continue
        f = m.history.final
        table.add_row(str(m.seed), num(f["train_loss"]), pct(f["val_error"]), num(f["test_loss"]),
                      pct(f["test_error"]), num(f["error_quotient"], 2))  # fmt: skip
    table.add_row(
        "mean ± sd", mean_sd(values["train_loss"], num), mean_sd(values["val_error"], pct),
        mean_sd(values["test_loss"], num), mean_sd(values["test_error"], pct),
        mean_sd(values["error_quotient"], lambda v: f"{v:.2f}"),
    )  # fmt: skip
    table.rows[-2].end_section = True  # a rule between the seeds and their mean
    out.print(table)
    seconds = sum(m.history.seconds for m in members)
    pack_sizes = sorted({m.history.pack_size for m in members})
    out.print(
        f"{sum(m.finished for m in members)} of {len(configs)} seeds finished; {config.epochs} epochs in "
        f"{seconds:.1f} s (packs of {', '.join(map(str, pack_sizes))})"
    )


# --------------------------------------------------------------------------- compare

CompareActivationOpt = Annotated[
    list[str] | None, typer.Option("--activation", "-a", help="Repeat for each activation.")
]
CompareSeedsOpt = Annotated[
    int, typer.Option(min=1, help="Seeds per activation (0 .. N-1), the same for every activation.")
]
COMPARED = ("val_error", "val_loss", "test_error", "test_loss", "train_loss", "error_quotient")


def compare(
    activation: CompareActivationOpt = None,
    dataset: DatasetOpt = "digits",
    model: ModelOpt = "mlp4",
    epochs: EpochsOpt = 20,
    lr: LrOpt = 0.02,
    optimizer: OptimizerOpt = "sgd",
    batch_size: BatchOpt = 128,
    seeds: CompareSeedsOpt = 1,
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Train the same model with several activations and the same hyperparameters, side by side.

    Nothing is tuned here: every activation gets the same learning rate. The campaign
    (search per activation with an equal budget) is the fair comparison. Each
    activation's seeds train as one pack (one batched model; each seed the run it would
    be alone)."""
    specs = activation or ["relu", "elu", "eru:2", "oru:3"]
    configs = [
        _config(dict(dataset=dataset, model=model, activation=spec, epochs=epochs, lr=lr, optimizer=optimizer,
                     batch_size=batch_size, seed=seed, device=device, data_dir=data_dir, download=download))
        for spec in specs for seed in range(seeds)
    ]  # fmt: skip
    names = [c.activation for c in configs[::seeds]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"--activation: {', '.join(duplicates)} given more than once")
    info, results = _train_each(configs, names, seeds)
    rows = [
        {"activation": name, "seeds": len(histories), **{key: [h.final[key] for h in histories] for key in COMPARED},
         "seconds_per_epoch": [statistics.mean(e.seconds for e in h.epochs) for h in histories]}
        for name, histories in results.items()
    ]  # fmt: skip
    if json_output:
        print_json(rows)
        return
    title = f"{dataset}/{model}, {epochs} epochs, {optimizer} lr {lr:g}, batch {batch_size}, {seeds} seed(s), same hyperparameters for all"
    _print_comparison(rows, title, info)


def _train_each(configs: list, names: list[str], seeds: int):
    """Each activation's seeds as one pack (bru_core.packed): the same runs, batched, on
    data loaded once. The data set's info, and each activation's histories."""
    from bru_core.packed import train_in_packs
    from bru_core.training import prepare_data, resolve_device

    data = prepare_data(configs[0], resolve_device(configs[0].device))
    results: dict[str, list] = {name: [] for name in names}
    with progress_bar() as progress:
        task = progress.add_task("training", total=len(configs) * configs[0].epochs, status="")
        for name, start in zip(names, range(0, len(configs), seeds), strict=True):
            progress.update(task, status=f"{name}, {seeds} seed(s)")
            pack = train_in_packs(configs[start : start + seeds], on_epoch=lambda *_: progress.advance(task), data=data)
            for member in pack:
                if not member.finished:
                    raise member.diverged  # type: ignore[misc]
                results[name].append(member.history)
    return data.info, results


def _print_comparison(rows: list[dict[str, Any]], title: str, info) -> None:
    table = Table(title=title)
    for column in ("activation", "val error", "test error", "test loss", "train loss", "error quotient", "s/epoch"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["activation"],
            mean_sd(row["val_error"], pct),
            mean_sd(row["test_error"], pct),
            mean_sd(row["test_loss"], num),
            mean_sd(row["train_loss"], num),
            mean_sd(row["error_quotient"], lambda v: f"{v:.1f}"),
            mean_sd(row["seconds_per_epoch"], lambda v: f"{v:.3f}"),
        )
    out.print(table)
    out.print(
        f"{info.name}: {info.n_train} train / {info.n_val} validation / {info.n_test} test examples. "
        "Errors are final; the error quotient is test loss / train loss (over-fitting). "
        "Untuned: one learning rate for every activation. s/epoch: each seed's share of its pack's time."
    )
