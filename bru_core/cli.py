"""The ``bru`` command line: a thin layer over bru_core.

Bad input of any kind ends with one line on stderr, ``error: ...``, and exit code 2;
training that diverges ends with one line and exit code 1.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bru_core.errors import BruError, ConfigError, NonFiniteLossError, StoreFailedError
from flows.service import CRASH_AFTER_SECONDS, HEARTBEAT_SECONDS  # constants only: no Prefect import

app = typer.Typer(
    help="bru-lab: does one activation function really beat another? Train, compare, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
activations_app = typer.Typer(help="List the activation registry, or plot activations.", invoke_without_command=True)
bench_app = typer.Typer(help="Benchmarks recorded in docs/benchmarks.md.", no_args_is_help=True)
campaign_app = typer.Typer(help="Run a whole campaign: in this process, or on a work pool.", no_args_is_help=True)
app.add_typer(activations_app, name="activations")
app.add_typer(bench_app, name="bench")
app.add_typer(campaign_app, name="campaign")

# Wide tables when the output goes to a file or a pipe (rich would wrap them at 80).
out = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=True)
err = Console(stderr=True)

# --------------------------------------------------------------------------- helpers


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


def _check_writable(path: Path | None, option: str) -> None:
    """Fail before any work if an output file could not be written."""
    if path is not None and not path.parent.is_dir():
        raise ConfigError(f"{option}: folder {path.parent} does not exist")


def _write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _finite_json(value: Any) -> Any:
    """JSON has no infinities: a non-finite float (e.g. an estimate decided by diverged
    seeds) is written as the string "inf", "-inf" or "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def _print_json(payload: object) -> None:
    sys.stdout.write(json.dumps(_finite_json(payload), allow_nan=False) + "\n")


# --------------------------------------------------------------------------- train

DatasetOpt = Annotated[str, typer.Option(help="digits (offline), mnist, cifar10, cifar100.")]
ModelOpt = Annotated[str, typer.Option(help="mlp4 ... mlp8 (any mlpN), sae, lenet5, convpool.")]
EpochsOpt = Annotated[int, typer.Option(help="Training epochs.")]
LrOpt = Annotated[float, typer.Option(help="Learning rate.")]
OptimizerOpt = Annotated[str, typer.Option(help="sgd, adam or adamw.")]
BatchOpt = Annotated[int, typer.Option(help="Batch size.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Data folder (default: BRU_DATA_DIR or <BRU_HOME>/data).")]
DownloadOpt = Annotated[bool, typer.Option(help="Fetch MNIST/CIFAR into the data folder if missing (needs a network).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (or list) instead of tables.")]


@app.command()
def train(
    dataset: DatasetOpt = "digits",
    model: ModelOpt = "mlp4",
    activation: Annotated[
        str, typer.Option("--activation", "-a", help="relu, elu, eru:2, oru:3>2, ... (bru activations).")
    ] = "relu",
    epochs: EpochsOpt = 10,
    lr: LrOpt = 0.03,
    optimizer: OptimizerOpt = "sgd",
    momentum: Annotated[float, typer.Option(help="SGD momentum.")] = 0.9,
    nesterov: Annotated[
        bool | None, typer.Option("--nesterov/--no-nesterov", help="Nesterov momentum (default: on for sgd).")
    ] = None,
    weight_decay: Annotated[float, typer.Option(help="Weight decay (the paper uses none).")] = 0.0,
    batch_size: BatchOpt = 128,
    schedule: Annotated[str, typer.Option(help="Learning-rate schedule: none, cosine or step.")] = "cosine",
    seed: Annotated[
        int | None, typer.Option(help="Seed of initialisation, batch order and augmentation (default 0).")
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Train several seeds as one batched model (a pack), e.g. 0-7 or 1,3,5; mean ± sd and each seed."
        ),
    ] = None,
    device: DeviceOpt = "auto",
    precision: Annotated[str, typer.Option(help="fp32, or bf16 autocast on CUDA.")] = "fp32",
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model (long runs on a GPU).")
    ] = False,
    val_fraction: Annotated[float, typer.Option(help="Share of the training set held out for validation.")] = 0.1,
    augment: Annotated[
        bool | None, typer.Option("--augment/--no-augment", help="Random crop + flip (default: on for CIFAR).")
    ] = None,
    test_every_epoch: Annotated[bool, typer.Option(help="Measure the test set every epoch (learning curves).")] = False,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    json_output: JsonOpt = False,
    history: Annotated[
        Path | None, typer.Option(help="Also write the full history (every epoch) to this JSON file.")
    ] = None,
) -> None:
    """Train one model (or, with --seeds, one pack of seeds) and report train, validation
    and test metrics.

    The defaults (SGD with Nesterov momentum 0.9, lr 0.03 annealed by a cosine, batch 128)
    are a recipe for a quick standalone run: mlp4 with ORU r = 3 reaches 2.3-2.6% test error
    on real MNIST in 5 epochs (seeds 0-3). A campaign's training values come from its spec."""
    from bru_core.training import train as run_training

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
    _check_writable(history, "--history")
    if seeds is not None:
        from bru_core.packed import parse_seeds

        return _train_pack([config.model_copy(update={"seed": s}) for s in parse_seeds(seeds)], json_output, history)
    with _progress() as progress:
        task = progress.add_task(f"epoch 1/{config.epochs}", total=None, status="")

        def on_batch(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_epoch(record) -> None:
            status = f"val loss {record.val_loss:.4f}" + (
                f", val error {_pct(record.val_error)}" if record.val_error is not None else ""
            )
            nxt = min(record.epoch + 1, config.epochs)
            progress.update(task, description=f"epoch {nxt}/{config.epochs}", completed=0, status=status)

        result = run_training(config, on_epoch=on_epoch, on_batch=on_batch)
    if history is not None:
        _write_atomically(history, json.dumps(result.to_dict(), indent=1))
    if json_output:
        _print_json(
            {**result.summary(), "activation": config.activation, "model": config.model, "dataset": config.dataset}
        )
        return
    table = Table(title=f"{config.dataset}/{config.model} {config.activation} (seed {config.seed}, {result.device})")
    for column in ("epoch", "train loss", "train error", "val loss", "val error", "lr", "seconds"):
        table.add_column(column, justify="right")
    for r in result.epochs:
        table.add_row(
            str(r.epoch),
            _num(r.train_loss),
            _pct(r.train_error),
            _num(r.val_loss),
            _pct(r.val_error),
            f"{r.lr:.3g}",
            f"{r.seconds:.2f}",
        )
    out.print(table)
    f = result.final
    out.print(
        f"final: train loss {_num(f['train_loss'])}, val loss {_num(f['val_loss'])} (error {_pct(f['val_error'])}), "
        f"test loss {_num(f['test_loss'])} (error {_pct(f['test_error'])}), error quotient {_num(f['error_quotient'], 2)}; "
        f"{len(result.epochs)} epochs in {result.seconds:.1f} s"
    )


FINAL_KEYS = ("train_loss", "val_loss", "val_error", "test_loss", "test_error", "error_quotient")


def _train_pack(configs: list, json_output: bool, history: Path | None) -> int:
    """bru train --seeds: one pack, then each member's final metrics and their mean ± sd.
    Exit code 1 if a member diverged (the others are reported all the same)."""
    from bru_core.packed import train_in_packs

    config = configs[0]
    with _progress() as progress:
        task = progress.add_task(f"{len(configs)} seeds, epoch 1/{config.epochs}", total=None, status="")

        def on_batch(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_epoch(seed: int, record) -> None:  # called once per member: the same epoch
            nxt = min(record.epoch + 1, config.epochs)
            progress.update(task, description=f"{len(configs)} seeds, epoch {nxt}/{config.epochs}", completed=0)

        members = train_in_packs(configs, on_epoch=on_epoch, on_batch=on_batch)
    if history is not None:
        payload = {
            "members": [{**m.history.to_dict(), "diverged": str(m.diverged) if m.diverged else None} for m in members]
        }
        _write_atomically(history, json.dumps(payload, indent=1))
    finished = [m for m in members if m.finished]
    rows = [
        {"seed": m.seed, "status": "finished" if m.finished else "diverged", **(m.history.summary() if m.finished else {}),
         "failure": None if m.finished else str(m.diverged)}
        for m in members
    ]  # fmt: skip
    values = {
        key: [m.history.final[key] for m in finished if m.history.final.get(key) is not None] for key in FINAL_KEYS
    }
    mean = {k: statistics.mean(v) if v else None for k, v in values.items()}
    sd = {k: statistics.stdev(v) if len(v) > 1 else None for k, v in values.items()}
    seconds = sum(m.history.seconds for m in members)
    pack_sizes = sorted({m.history.pack_size for m in members})
    if json_output:
        _print_json(
            {"activation": config.activation, "model": config.model, "dataset": config.dataset,
             "seeds": [c.seed for c in configs], "finished": len(finished), "mean": mean, "sd": sd,
             "members": rows, "seconds": seconds, "pack_sizes": pack_sizes}
        )  # fmt: skip
    else:
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
            table.add_row(str(m.seed), _num(f["train_loss"]), _pct(f["val_error"]), _num(f["test_loss"]),
                          _pct(f["test_error"]), _num(f["error_quotient"], 2))  # fmt: skip
        table.add_row(
            "mean ± sd", _mean_sd(values["train_loss"], _num), _mean_sd(values["val_error"], _pct),
            _mean_sd(values["test_loss"], _num), _mean_sd(values["test_error"], _pct),
            _mean_sd(values["error_quotient"], lambda v: f"{v:.2f}"),
        )  # fmt: skip
        table.rows[-2].end_section = True  # a rule between the seeds and their mean
        out.print(table)
        out.print(
            f"{len(finished)} of {len(configs)} seeds finished; {config.epochs} epochs in {seconds:.1f} s "
            f"(packs of {', '.join(map(str, pack_sizes))})"
        )
    diverged = [m for m in members if not m.finished]
    if diverged:
        err.print(
            f"error: training diverged for seed(s) {', '.join(str(m.seed) for m in diverged)} "
            f"({diverged[0].diverged}); try a lower --lr",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
        return 1
    return 0


# --------------------------------------------------------------------------- compare


def _mean_sd(values: Sequence[float | None], fmt) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    if len(present) == 1:
        return fmt(present[0])
    return f"{fmt(statistics.mean(present))} ± {fmt(statistics.stdev(present))}"


@app.command()
def compare(
    activation: Annotated[
        list[str] | None, typer.Option("--activation", "-a", help="Repeat for each activation.")
    ] = None,
    dataset: DatasetOpt = "digits",
    model: ModelOpt = "mlp4",
    epochs: EpochsOpt = 20,
    lr: LrOpt = 0.02,
    optimizer: OptimizerOpt = "sgd",
    batch_size: BatchOpt = 128,
    seeds: Annotated[int, typer.Option(help="Seeds per activation (0 .. N-1), the same for every activation.")] = 1,
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
    from bru_core.packed import train_in_packs

    specs = activation or ["relu", "elu", "eru:2", "oru:3"]
    if seeds < 1:
        raise ConfigError(f"--seeds: must be at least 1, got {seeds}")
    configs = [
        _config(dict(dataset=dataset, model=model, activation=spec, epochs=epochs, lr=lr, optimizer=optimizer,
                     batch_size=batch_size, seed=seed, device=device, data_dir=data_dir, download=download))
        for spec in specs for seed in range(seeds)
    ]  # fmt: skip
    names = [c.activation for c in configs[::seeds]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"--activation: {', '.join(duplicates)} given more than once")
    from bru_core.training import prepare_data, resolve_device

    data = prepare_data(configs[0], resolve_device(configs[0].device))
    results: dict[str, list] = {name: [] for name in names}
    with _progress() as progress:
        task = progress.add_task("training", total=len(configs) * epochs, status="")
        for name, start in zip(names, range(0, len(configs), seeds), strict=True):
            # an activation's seeds as one pack (bru_core.packed): the same runs, batched
            progress.update(task, status=f"{name}, {seeds} seed(s)")
            pack = train_in_packs(configs[start : start + seeds], on_epoch=lambda *_: progress.advance(task), data=data)
            for member in pack:
                if not member.finished:
                    raise member.diverged  # type: ignore[misc]
                results[name].append(member.history)
    rows = []
    for name, histories in results.items():
        finals = [h.final for h in histories]
        rows.append(
            {
                "activation": name,
                "seeds": len(histories),
                **{
                    key: [f[key] for f in finals]
                    for key in ("val_error", "val_loss", "test_error", "test_loss", "train_loss", "error_quotient")
                },
                "seconds_per_epoch": [statistics.mean(e.seconds for e in h.epochs) for h in histories],
            }
        )
    if json_output:
        _print_json(rows)
        return
    info = data.info
    title = f"{dataset}/{model}, {epochs} epochs, {optimizer} lr {lr:g}, batch {batch_size}, {seeds} seed(s), same hyperparameters for all"
    table = Table(title=title)
    for column in ("activation", "val error", "test error", "test loss", "train loss", "error quotient", "s/epoch"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["activation"],
            _mean_sd(row["val_error"], _pct),
            _mean_sd(row["test_error"], _pct),
            _mean_sd(row["test_loss"], _num),
            _mean_sd(row["train_loss"], _num),
            _mean_sd(row["error_quotient"], lambda v: f"{v:.1f}"),
            _mean_sd(row["seconds_per_epoch"], lambda v: f"{v:.3f}"),
        )
    out.print(table)
    out.print(
        f"{info.name}: {info.n_train} train / {info.n_val} validation / {info.n_test} test examples. "
        "Errors are final; the error quotient is test loss / train loss (over-fitting). "
        "Untuned: one learning rate for every activation. s/epoch: each seed's share of its pack's time."
    )


# --------------------------------------------------------------------------- campaigns

SpecArg = Annotated[Path, typer.Argument(help="Campaign spec (YAML), e.g. configs/quick.yaml.")]
HomeOpt = Annotated[Path | None, typer.Option(help="bru home folder (default: BRU_HOME or ./.bru).")]
TrackingOpt = Annotated[
    str | None, typer.Option(help="MLflow tracking URI (default: BRU_TRACKING_URI or sqlite under home).")
]
StorageOpt = Annotated[
    str | None, typer.Option(help="Optuna storage URL (default: BRU_OPTUNA_STORAGE or sqlite under home).")
]


ResultsOpt = Annotated[
    str | None, typer.Option(help="Results database URL (default: BRU_RESULTS_URL or sqlite under home).")
]


def _settings(
    home: Path | None = None,
    tracking_uri: str | None = None,
    optuna_storage: str | None = None,
    data_dir: Path | None = None,
):
    from bru_core.settings import get_settings

    return get_settings(home=home, tracking_uri=tracking_uri, optuna_storage=optuna_storage, data_dir=data_dir)


@app.command()
def check(
    spec: SpecArg,
    json_output: JsonOpt = False,
    pilot: Annotated[
        str | None, typer.Option(help="An aggregated campaign whose paired differences plan the seeds (with --effect).")
    ] = None,
    effect: Annotated[
        float | None,
        typer.Option(
            help="With --pilot: the difference to detect, in the metric's units (0.001 = 0.1 points of error)."
        ),
    ] = None,
    effect_dz: Annotated[
        float, typer.Option("--effect-dz", min=0.01, help="The standardised effect the power figure is for.")
    ] = 1.0,
    home: HomeOpt = None,
    results_url: ResultsOpt = None,
) -> None:
    """Check a campaign spec and print its protocol and what its design can show (power),
    without running or writing anything."""
    from bru_core.power import check_design
    from bru_core.spec import load_spec
    from bru_core.stats import POWER

    if (pilot is None) != (effect is None):
        raise ConfigError("--pilot and --effect go together: the campaign to plan from and the difference to detect")
    campaign = load_spec(spec)
    report = check_design(campaign, effect_dz)
    if pilot is not None and effect is not None:
        report["pilot"] = _pilot(campaign, pilot, effect, home, results_url)
    if json_output:
        _print_json(report)
        return
    for line in campaign.protocol():
        out.print(line, highlight=False)
    n = len(campaign.tasks) * len(campaign.activations)
    out.print(
        f"{n} studies, {n * campaign.search.trials} trials, {n * len(campaign.repeats.seeds)} repeat runs.",
        highlight=False,
    )
    if "power" in report:
        wanted = report["seeds_for_power"]
        out.print(
            f"Power: if every confirmatory comparison had a true difference of d_z = {effect_dz:g} (the mean paired "
            f"difference over its sd), {report['seeds']} seeds would detect {report['power']:.0%} of them on average "
            f"(at least one {report['power_any']:.0%} of the time; simulated, normal differences); "
            + (
                f"{wanted} seeds reach {POWER:.0%}." if wanted else f"no number of seeds up to 200 reaches {POWER:.0%}."
            ),
            highlight=False,
        )
    if "pilot" in report:
        _print_pilot(report["pilot"])


def _pilot(campaign, pilot: str, effect: float, home: Path | None, results_url: str | None) -> dict[str, Any]:
    from dataclasses import asdict

    from bru_core.power import pilot as plan
    from bru_core.settings import get_settings
    from bru_core.stats import POWER

    rows, alpha = plan(campaign, pilot, effect, get_settings(home=home, results_url=results_url))
    needed = [r.seeds for r in rows if r.seeds is not None]
    cautious = [r.seeds_cautious for r in rows if r.seeds_cautious is not None]
    return {
        "campaign": pilot, "effect": effect, "alpha_per_comparison": alpha, "power": POWER,
        "seeds": max(needed) if needed else None, "seeds_cautious": max(cautious) if cautious else None,
        "comparisons": [asdict(r) for r in rows],
    }  # fmt: skip


def _print_pilot(plan: dict[str, Any]) -> None:
    from bru_core.report import fmt_diff, metric_info

    table = Table(title=f"seeds to detect {plan['effect']:g} with 80% power at alpha {plan['alpha_per_comparison']:.3g} "
                        f"(from campaign {plan['campaign']})")  # fmt: skip
    for column in ("task", "a", "b", "metric", "pilot pairs", "sd of differences", "seeds", "seeds (sd 80% upper)"):
        table.add_column(column, justify="left" if column in ("task", "a", "b", "metric") else "right")
    for r in plan["comparisons"]:
        sd = fmt_diff(r["metric"], r["sd"]).lstrip("+") + (" pts" if metric_info(r["metric"]).percent else "")
        table.add_row(r["task"], r["a"], r["b"], r["metric"], str(r["pilot_seeds"]), sd,
                      str(r["seeds"] or ">10000"), str(r["seeds_cautious"] or ">10000"))  # fmt: skip
    out.print(table)
    out.print(
        f"Every comparison reaches 80% power with {plan['seeds']} seeds ({plan['seeds_cautious']} if the sd is as "
        "large as its 80% upper confidence bound); assumes normal paired differences with the pilot's sd, tested at "
        "Holm's first step (alpha / family size).",
        highlight=False,
    )


@app.command()
def search(
    spec: SpecArg,
    task: Annotated[str, typer.Option(help="Task as dataset/model, e.g. digits/mlp4.")],
    activation: Annotated[str, typer.Option("--activation", "-a", help="One of the spec's activations.")],
    repeats: Annotated[
        bool, typer.Option("--repeats/--no-repeats", help="Train the best config on every repeat seed.")
    ] = True,
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
    optuna_storage: StorageOpt = None,
    data_dir: DataDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Run one study (resuming it if it exists) and its repeats, without Prefect."""
    import optuna

    from bru_core.search import run_repeats, run_study
    from bru_core.settings import shown_url
    from bru_core.spec import load_spec
    from bru_core.tracking import Tracker

    campaign = load_spec(spec)
    task_name = campaign.task(task).name
    label = campaign.activation(activation)
    settings = _settings(home, tracking_uri, optuna_storage, data_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = campaign.search.trials
    with Tracker(settings) as tracker, _progress() as progress:
        tracker.check()
        tracker.record_campaign(campaign.name, campaign.model_dump(mode="json"), campaign.protocol())
        # One hold over the study and its repeats: the campaign's run stays RUNNING between them.
        with tracker.working_on(campaign.name):
            bar = progress.add_task(f"{task_name} {label}: trials", total=budget, status="")

            def on_trial(outcome, state, best) -> None:
                best_text = f"best {best:.4g}" if best is not None else "no complete trial yet"
                progress.update(
                    bar, completed=state.done, status=f"trial {outcome.number} {outcome.state}; {best_text}"
                )

            def on_wait(state) -> None:
                progress.update(bar, completed=state.done, status=f"waiting for {state.active} running trial(s)")

            result = run_study(
                campaign, task_name, label, settings=settings, tracker=tracker, on_trial=on_trial, on_wait=on_wait
            )
            progress.update(bar, completed=result.done)
            repeat_rows = []
            if repeats:
                seeds = progress.add_task(f"{task_name} {label}: seeds", total=len(campaign.repeats.seeds), status="")
                repeat_rows = run_repeats(
                    campaign, task_name, label, settings=settings, tracker=tracker,
                    on_seed=lambda r: progress.update(seeds, advance=1, status=f"seed {r.seed} {'kept' if r.reused else 'done'}"),
                )  # fmt: skip
    if json_output:
        from dataclasses import asdict

        _print_json(
            {
                "study": {k: v for k, v in asdict(result).items() if k != "trials"},
                "repeats": [asdict(r) for r in repeat_rows],
            }
        )
        return
    out.print(
        f"study {result.study_name}: {result.done}/{result.budget} trials with an outcome "
        f"({result.complete} complete, {result.pruned} pruned, {result.failed} failed; {result.lost} lost and retried); "
        f"best {result.best_value} (trial {result.best_trial}) with {result.best_params}",
        highlight=False,
    )
    if repeat_rows:
        table = Table(title=f"repeats of the best configuration: {task_name} {label}")
        for column in ("seed", "val error", "test error", "test loss", "train loss", "error quotient", ""):
            table.add_column(column, justify="right")
        for r in repeat_rows:
            f = r.final
            state = ("kept" if r.reused else "new") + ("; diverged" if r.status != "finished" else "")
            table.add_row(
                str(r.seed), _pct(f.get("val_error")), _pct(f.get("test_error")), _num(f.get("test_loss")),
                _num(f.get("train_loss")), _num(f.get("error_quotient"), 2), state,
            )  # fmt: skip
        out.print(table)
    out.print(
        f"MLflow: {shown_url(settings.tracking)} (bru ui to browse); Optuna: {shown_url(settings.optuna)}",
        highlight=False,
    )


@app.command()
def aggregate(
    campaign: Annotated[str, typer.Option(help="Campaign name (the MLflow experiment).")],
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
    results_url: ResultsOpt = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write the report and log it to MLflow.")] = True,
) -> None:
    """Read a campaign's repeat runs from MLflow, compute the statistics, write the results database."""
    from bru_core.aggregate import aggregate as run_aggregate
    from bru_core.settings import get_settings, shown_url

    settings = get_settings(home=home, tracking_uri=tracking_uri, results_url=results_url)
    with _progress() as progress:
        task = progress.add_task("reading repeat runs", total=None, status="")
        result = run_aggregate(
            campaign,
            settings,
            report=report,
            on_run=lambda done, total: progress.update(task, completed=done, total=total),
        )
    out.print(
        f"campaign {campaign}: {result.evaluations} evaluations, {result.comparisons} comparisons "
        f"({result.tests} tests) written to {shown_url(settings.results)}",
        highlight=False,
    )
    if result.failed:
        out.print(f"{result.failed} repeat run(s) diverged: counted as failures (the worst outcome)", highlight=False)
    if result.missing:
        out.print(f"no repeat runs yet for: {', '.join(result.missing)}", highlight=False)
    if result.report_dir:
        out.print(
            f"report: {Path(result.report_dir) / 'report.html'} (also in MLflow, campaign run, report/)",
            highlight=False,
        )
    out.print(f"see: bru results --campaign {campaign} --what comparisons", highlight=False)


@app.command()
def results(
    campaign: Annotated[str | None, typer.Option(help="Only this campaign.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task (dataset/model).")] = None,
    metric: Annotated[str | None, typer.Option(help="Only this metric (test_error, test_loss, ...).")] = None,
    what: Annotated[
        str, typer.Option(help="summary, evaluations, comparisons, rankings, studies, curves, tasks or campaigns.")
    ] = "summary",
    output_format: Annotated[
        str,
        typer.Option("--format", help="table, json (one list on the last line), csv, or markdown (for docs)."),
    ] = "table",
    home: HomeOpt = None,
    results_url: ResultsOpt = None,
) -> None:
    """Query the results database."""
    from bru_core.results import BRIEF, WHAT, ResultsStore
    from bru_core.settings import get_settings, shown_url

    if what not in WHAT:
        raise ConfigError(f"--what: {what!r} is not one of {', '.join(WHAT)}")
    if output_format not in ("table", "json", "csv", "markdown"):
        raise ConfigError(f"--format: {output_format!r} is not one of table, json, csv, markdown")
    settings = get_settings(home=home, results_url=results_url)
    if settings.results.startswith("sqlite:///") and not Path(settings.results.removeprefix("sqlite:///")).exists():
        raise ConfigError(
            f"--results-url: no results database at {shown_url(settings.results)} yet; run bru aggregate first"
        )
    with ResultsStore(settings.results) as store:
        rows = store.records(what, campaign, task, metric)
    if output_format == "json":
        _print_json(rows)
        return
    if output_format == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()})
        return
    if not rows:
        out.print("no rows", highlight=False)
        return
    columns = (["campaign"] if campaign is None and what != "campaigns" else []) + list(BRIEF[what])
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
    if output_format == "markdown":  # a GitHub table of the same columns, to paste into docs
        print("| " + " | ".join(columns) + " |")
        print("|" + "|".join(" ---: " if isinstance(rows[0][c], (int, float)) else " --- " for c in columns) + "|")
        for row in rows:
            print("| " + " | ".join(cell(row[c]).replace("|", "\\|") for c in columns) + " |")
        return
    table = Table(title=f"{what}" + (f" of {campaign}" if campaign else ""))
    for column in columns:
        table.add_column(column, justify="right" if isinstance(rows[0][column], (int, float)) else "left")
    for row in rows:
        table.add_row(*(cell(row[c]) for c in columns))
    out.print(table)


@app.command()
def report(
    campaign: Annotated[str, typer.Option(help="An aggregated campaign.")],
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for report.html and the PNGs (default <home>/reports/<campaign>)."),
    ] = None,
    home: HomeOpt = None,
    results_url: ResultsOpt = None,
) -> None:
    """Write the campaign report (self-contained HTML plus PNGs) from the results database."""
    from bru_core.report import report_path_error, write_report
    from bru_core.settings import get_settings, shown_url

    settings = get_settings(home=home, results_url=results_url)
    folder = out_dir or settings.home_path / "reports" / campaign
    report_path_error(folder)
    if not folder.parent.exists():
        raise ConfigError(f"--out: folder {folder.parent} does not exist")
    if settings.results.startswith("sqlite:///") and not Path(settings.results.removeprefix("sqlite:///")).exists():
        raise ConfigError(
            f"--results-url: no results database at {shown_url(settings.results)} yet; run bru aggregate first"
        )
    path = write_report(campaign, folder, settings)
    out.print(f"wrote {path}", highlight=False)


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Open the MLflow UI on the embedded tracking store (Ctrl-C stops it)."""
    settings = _settings(home, tracking_uri)
    if settings.artifact_location is None:
        raise ConfigError(f"--tracking-uri: {settings.tracking} is a tracking server already; open it in a browser")
    database = Path(settings.tracking.removeprefix("sqlite:///"))
    if settings.tracking.startswith("sqlite:///") and not database.exists():
        raise ConfigError(f"--home: no MLflow store at {database} yet; run bru search (or bru campaign) first")
    from bru_core.tracking import start_server, stop_server

    err.print(f"MLflow UI on http://{host}:{port} (store {settings.tracking}); Ctrl-C stops it", highlight=False)
    process = start_server(settings.tracking, settings.artifact_location, host, port)
    try:
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(process)


# --------------------------------------------------------------------------- orchestration (Prefect)


def _export_settings(settings) -> None:
    """Flows and workers read BRU_* from the environment: make overrides visible to them."""
    os.environ["BRU_HOME"] = str(settings.home_path)
    for key, value in (("BRU_TRACKING_URI", settings.tracking_uri), ("BRU_OPTUNA_STORAGE", settings.optuna_storage),
                       ("BRU_RESULTS_URL", settings.results_url), ("BRU_DATA_DIR", settings.data_dir)):  # fmt: skip
        if value is not None:
            os.environ[key] = str(value)


def _prepare_prefect(settings) -> None:
    """Before prefect is imported: quiet console logs, no analytics, and an embedded
    server's state under the bru home folder (unless the user set these)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_HOME", str(settings.home_path / "prefect"))
    # bru's flow runs beat often: a server's crash automation (bru deploy) expects it
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_SECONDS))
    if not os.environ.get("PREFECT_API_URL"):  # an embedded server keeps its database there
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def _preflight(campaign, settings) -> None:
    """Everything a campaign needs that can be checked before anything runs."""
    from bru_core.data import check_available
    from bru_core.locks import check_free
    from bru_core.search import check_stores

    for t in campaign.tasks:
        config = campaign.train_config(t.name, campaign.labels[0], {}, seed=0)
        check_available(t.dataset, config.data_dir or settings.data_path, config.download)
    check_stores(settings)  # a store that is down: one line now, not a traceback after Prefect starts
    check_free(settings.optuna, campaign.name, settings.campaign_lease_seconds)  # not running elsewhere


def _comparison_lines(campaign_name: str, settings) -> list[str]:
    from bru_core.report import family_size, headline_rows, sentence
    from bru_core.results import ResultsStore

    with ResultsStore(settings.results) as store:
        tasks = {t["task"]: t["primary_metric"] for t in store.records("tasks", campaign_name)}
        rows = store.records("comparisons", campaign_name)
    return [sentence(r, family_size(rows, r)) for r in headline_rows(rows, tasks)]


def _print_outcome(campaign_name: str, settings) -> None:
    out.print(f"\ncomparisons ({campaign_name}):", highlight=False)
    for line in _comparison_lines(campaign_name, settings):
        out.print(f"  {line}", highlight=False)
    report_path = settings.home_path / "reports" / campaign_name / "report.html"
    if report_path.exists():
        out.print(f"report: {report_path}", highlight=False)
    out.print(f"results: bru results --campaign {campaign_name} --what comparisons", highlight=False)
    ui_hint = "bru ui (then http://127.0.0.1:5000)" if settings.artifact_location else settings.tracking
    out.print(f"MLflow: {ui_hint}", highlight=False)


def _watch(campaign, settings, stop):
    """A thread that shows each study's trials and seeds as the stores fill up."""
    import threading

    from bru_core.search import campaign_status

    def loop(progress) -> None:
        bars = {}
        while not stop.is_set():
            try:
                for s in campaign_status(campaign, settings):
                    key = (s.task, s.activation)
                    total = s.budget + s.seeds
                    if key not in bars:
                        bars[key] = progress.add_task(f"{s.task} {s.activation}", total=total, status="")
                    best = f"best {s.best_value:.4g}" if s.best_value is not None else "no result yet"
                    progress.update(
                        bars[key],
                        completed=s.done + s.seeds_done,
                        status=f"trials {s.done}/{s.budget}, {best}; seeds {s.seeds_done}/{s.seeds}",
                    )
            except Exception:  # the stores may not exist yet, or be busy: try again
                pass
            stop.wait(2.0)

    progress = _progress()
    thread = threading.Thread(target=lambda: loop(progress), daemon=True)
    return progress, thread


@campaign_app.command("run")
def campaign_run(
    spec: SpecArg,
    home: HomeOpt = None,
    tracking_uri: TrackingOpt = None,
    optuna_storage: StorageOpt = None,
    results_url: ResultsOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Run a whole campaign in this process (Prefect starts a temporary server for it)."""
    import threading
    import time

    from bru_core.settings import get_settings
    from bru_core.spec import load_spec

    campaign = load_spec(spec)
    settings = get_settings(
        home=home, tracking_uri=tracking_uri, optuna_storage=optuna_storage, results_url=results_url, data_dir=data_dir
    )
    _preflight(campaign, settings)
    _export_settings(settings)
    _prepare_prefect(settings)
    started = time.monotonic()
    err.print(f"campaign {campaign.name}: {len(campaign.tasks) * len(campaign.labels)} studies of {campaign.search.trials} trials, "
              f"{len(campaign.repeats.seeds)} seeds each; starting Prefect (a temporary local server takes 10-20 s)", highlight=False)  # fmt: skip
    import optuna

    from flows.campaign import campaign as campaign_flow
    from flows.console import run_records_to_file

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_log = settings.home_path / "logs" / f"campaign-{campaign.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    run_records_to_file(run_log)  # tracebacks there; here, bru's progress and one error line

    stop = threading.Event()
    progress, watcher = _watch(campaign, settings, stop)
    with progress:
        watcher.start()
        try:
            campaign_flow(campaign.model_dump(mode="json"))
        except Exception as exc:
            if run_log.exists():
                exc.add_note(f"Prefect's log of the run: {run_log}")
            raise
        finally:
            stop.set()
            watcher.join(timeout=5)
    out.print(f"campaign {campaign.name} done in {time.monotonic() - started:.0f} s", highlight=False)
    _print_outcome(campaign.name, settings)


@campaign_app.command("submit")
def campaign_submit(
    spec: SpecArg,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the flow run and print the results summary.")
    ] = False,
    pool: Annotated[str, typer.Option(help="The work pool the deployment uses (for the waiting message).")] = "bru-gpu",
    patience: Annotated[
        float, typer.Option(help="Seconds in Scheduled/Pending before saying that no worker has it.")
    ] = 30.0,
) -> None:
    """Start the campaign on the bru-campaign deployment (PREFECT_API_URL); workers run it."""
    from bru_core.settings import get_settings
    from bru_core.spec import load_spec

    campaign = load_spec(spec)
    settings = get_settings()
    if not os.environ.get("PREFECT_API_URL"):  # before anything is set up or written
        raise ConfigError(
            "PREFECT_API_URL: not set; point it at the Prefect server (e.g. http://127.0.0.1:4200/api), "
            "or run the campaign here with bru campaign run"
        )
    _prepare_prefect(settings)
    from flows.service import follow, submit

    flow_run_id = submit(campaign.model_dump(mode="json"))
    out.print(f"submitted campaign {campaign.name}: flow run {flow_run_id}", highlight=False)
    if not wait:
        return
    last_note = [None]

    def tick(state: str, note: str | None) -> None:
        if note and note != last_note[0]:
            err.print(note, highlight=False)
        last_note[0] = note

    final = follow(flow_run_id, pool=pool, warn_after=patience, on_tick=tick)
    if final != "Completed":
        err.print(
            f"error: flow run {flow_run_id} ended {final}; see the Prefect UI or `prefect flow-run logs {flow_run_id}`",
            highlight=False,
        )
        raise typer.Exit(1)
    out.print(f"campaign {campaign.name}: flow run {final}", highlight=False)
    _print_outcome(campaign.name, settings)


@app.command()
def deploy(
    pool: Annotated[str, typer.Option(help="Work pool name.")] = "bru-gpu",
    pool_type: Annotated[
        str, typer.Option("--type", help="process, docker or kubernetes (job templates in infra/).")
    ] = "process",
    gpus: Annotated[
        int | None,
        typer.Option(
            help="GPUs in the whole pool: the gpu concurrency limit gets this many slots x --slots-per-gpu "
            "(default: this machine's, at least 1)."
        ),
    ] = None,
    workdir: Annotated[
        str | None,
        typer.Option(help="Where workers find this code (default: this checkout; /opt/bru-lab in containers)."),
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="Worker image for docker/kubernetes pools (a job variable).")
    ] = None,
    crash_after: Annotated[
        float,
        typer.Option(
            help=f"Seconds without a heartbeat (one every {HEARTBEAT_SECONDS} s) before a flow run is marked Crashed."
        ),
    ] = CRASH_AFTER_SECONDS,
    slots_per_gpu: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Trials that may share one GPU (small networks): the gpu limit gets GPUs x this many slots, and every "
            "flow run gets it as BRU_POOL_SLOTS_PER_GPU (default 1; docs/orchestration.md).",
        ),
    ] = None,
) -> None:
    """Create the work pool, the gpu concurrency limit, the crash automation and the deployments (PREFECT_API_URL)."""
    from bru_core.settings import get_settings

    _prepare_prefect(get_settings())
    from flows.service import deploy as run_deploy

    result = run_deploy(
        pool, pool_type, gpus, workdir=workdir, image=image, crash_after=crash_after, slots_per_gpu=slots_per_gpu
    )
    per_gpu = f" ({result['slots_per_gpu']} per GPU)" if result["slots_per_gpu"] else ""
    out.print(f"Prefect API {result['api']}: work pool {result['pool']} ({result['type']}), gpu limit {result['gpu_slots']} slot(s){per_gpu}, "
              f"deployments bru-campaign and bru-aggregate (code at {result['workdir']} on the workers); "
              f"a flow run without a heartbeat for {result['crash_after']:g} s is marked Crashed", highlight=False)  # fmt: skip
    out.print(f"next: bru worker --pool {result['pool']}   then: bru campaign submit SPEC --wait", highlight=False)


@app.command()
def worker(
    pool: Annotated[str, typer.Option(help="Work pool to poll.")] = "bru-gpu",
    slots_per_gpu: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Trials of one flow run that may share one of this machine's GPUs (exported as BRU_SLOTS_PER_GPU; "
            "default: BRU_SLOTS_PER_GPU, else bru deploy's --slots-per-gpu, else 1).",
        ),
    ] = None,
) -> None:
    """Start a Prefect worker on the pool, with this environment's BRU_* settings (Ctrl-C twice stops it)."""
    from bru_core.settings import get_settings
    from flows.gpu import SLOTS_PER_GPU_ENV, check_slots_per_gpu

    if slots_per_gpu is not None:  # the flow runs this worker starts inherit its environment
        os.environ[SLOTS_PER_GPU_ENV] = str(slots_per_gpu)
    elif os.environ.get(SLOTS_PER_GPU_ENV, "").strip():
        check_slots_per_gpu(os.environ[SLOTS_PER_GPU_ENV])  # a bad value: one line now, not in every flow run
    settings = get_settings()
    _prepare_prefect(settings)
    _export_settings(settings)
    from flows.service import check_api

    check_api()
    prefect = Path(sys.executable).parent / "prefect"
    command = [str(prefect), "worker", "start", "--pool", pool]
    shared = os.environ.get(SLOTS_PER_GPU_ENV, "").strip()
    per_gpu = f" ({shared} trial(s) per GPU)" if shared else ""
    err.print(f"worker on pool {pool}{per_gpu}: {' '.join(command)}", highlight=False)
    os.execve(str(prefect), command, dict(os.environ))


# --------------------------------------------------------------------------- activations


@activations_app.callback()
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


@activations_app.command("plot")
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


# --------------------------------------------------------------------------- models


@app.command()
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


# --------------------------------------------------------------------------- bench


def _bench_table(rows: list[dict[str, Any]], title: str, json_output: bool) -> None:
    if json_output:
        _print_json(rows)
        return
    from bru_core.bench import machine

    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column, justify="left" if isinstance(rows[0][column], str) else "right")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    out.print(table)
    out.print(f"machine: {machine()}")


@bench_app.command("activations")
def bench_activations_cmd(
    n: Annotated[int, typer.Option(help="Number of values.")] = 4_000_000,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds; the median is reported.")] = 15,
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

    if n < 1 or rounds < 1:
        raise ConfigError("--n and --rounds: must be at least 1")
    dtypes = []
    for name in _comma_list(dtype):
        if name not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"--dtype: {name!r} is not one of float32, bfloat16, float16")
        dtypes.append(getattr(torch, name))
    chosen_paths = _comma_list(paths)
    for path in chosen_paths:
        if path not in ACTIVATION_PATHS:
            raise ConfigError(f"--paths: {path!r} is not one of {', '.join(ACTIVATION_PATHS)}")
    specs = [_radix_activation(spec, "--activations") for spec in _comma_list(activations)]
    rows = []
    for chosen in dtypes:
        rows += as_dicts(bench_activations(specs, n=n, rounds=rounds, device=device, dtype=chosen, paths=chosen_paths))
    _bench_table(rows, f"activation forward + backward, {n:,} values", json_output)


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _radix_activation(spec: str, option: str) -> str:
    from bru_core.activations import canonical_activation, parse_activation

    try:
        canonical = canonical_activation(spec)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None
    if not parse_activation(canonical).is_radix_family:
        raise ConfigError(f"{option}: {spec!r} is not an ERU/ORU (eru:R or oru:R); ELU and ReLU are always timed")
    return canonical


@bench_app.command("stats")
def bench_stats_cmd(
    spec: Annotated[
        Path | None,
        typer.Argument(
            help="Campaign spec whose family shape and seeds to simulate (default: quick.yaml's shape, 12 seeds)."
        ),
    ] = None,
    seeds: Annotated[int | None, typer.Option(min=2, help="Seeds per activation (default: the spec's, or 12).")] = None,
    effect_dz: Annotated[
        float, typer.Option("--effect-dz", min=0.01, help="The true effect, in sds of the paired differences.")
    ] = 1.0,
    simulations: Annotated[int, typer.Option(min=100, help="Simulated campaigns per scenario.")] = 1000,
    failure_rate: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of runs diverging in the failure scenario.")
    ] = 0.1,
    json_output: JsonOpt = False,
) -> None:
    """The statistics of bru aggregate on simulated campaigns: family-wise false positives with no effect, power with one."""
    from bru_core.power import bench_stats, quick_shape, with_seeds
    from bru_core.spec import load_spec

    campaign = quick_shape(seeds or 12) if spec is None else load_spec(spec)
    if spec is not None and seeds is not None:
        campaign = with_seeds(campaign, seeds)
    with _progress() as progress:
        bars: dict[str, Any] = {}

        def on_step(label: str, done: int, total: int) -> None:
            if label not in bars:
                bars[label] = progress.add_task(label, total=total, status="")
            progress.update(bars[label], completed=done)

        result = bench_stats(
            campaign, effect_dz=effect_dz, simulations=simulations, failure_rate=failure_rate, on_step=on_step
        )
    if json_output:
        _print_json(result)
        return
    table = Table(title=f"{result['campaign']}: {result['family_size']} confirmatory comparisons, {result['seeds']} seeds, "
                        f"{result['test']}, Holm at alpha {result['alpha']:g}; {simulations} simulated campaigns each")  # fmt: skip
    for column in (
        "scenario",
        "effect d_z",
        "family-wise error",
        "power (average)",
        "any",
        "all",
        "wrong direction",
        "+- (MC)",
    ):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for r in result["scenarios"]:
        cells = [r["fwer"], r["power"], r["power_any"], r["power_all"], r["wrong_direction"]]
        table.add_row(r["scenario"], f"{r['effect_dz']:g}", *("-" if v is None else f"{v:.3f}" for v in cells),
                      f"{r['monte_carlo_se']:.3f}")  # fmt: skip
    out.print(table)
    out.print(f"fwer (worst case) {result['fwer']:.3f}; power (worst case) {result['power']:.3f} for d_z = {effect_dz:g}",
              highlight=False)  # fmt: skip


@bench_app.command("accuracy")
def bench_accuracy_cmd(json_output: JsonOpt = False) -> None:
    """Float32 ERU/ORU (fast path) against the float64 formula, in float32 epsilons."""
    from bru_core.bench import as_dicts, bench_accuracy

    _bench_table(as_dicts(bench_accuracy()), "fast path accuracy (max error, float32 eps)", json_output)


@bench_app.command("tracking")
def bench_tracking_cmd(
    server: Annotated[
        bool, typer.Option(help="Log to a local mlflow server (started for the run) instead of SQLite.")
    ] = False,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds; the median is reported.")] = 7,
    epochs: EpochsOpt = 10,
    json_output: JsonOpt = False,
) -> None:
    """MLflow logging overhead on digits/mlp4 runs: wall time with over without."""
    from bru_core.bench import as_dicts, bench_tracking

    if rounds < 1 or epochs < 1:
        raise ConfigError("--rounds and --epochs: must be at least 1")
    rows = as_dicts(bench_tracking(epochs=epochs, rounds=rounds, server=server))
    _bench_table(rows, f"tracking overhead (digits/mlp4, {epochs} epochs)", json_output)


@bench_app.command("epochs")
def bench_epochs_cmd(
    model: ModelOpt = "mlp8",
    dataset: DatasetOpt = "digits",
    rounds: Annotated[int, typer.Option(help="Interleaved rounds; the median is reported.")] = 15,
    device: DeviceOpt = "cpu",
    json_output: JsonOpt = False,
) -> None:
    """Training-epoch time per activation, interleaved, as ratios to ELU and ReLU."""
    from bru_core.bench import as_dicts, bench_epochs

    if rounds < 1:
        raise ConfigError("--rounds: must be at least 1")
    rows = as_dicts(bench_epochs(model=model, dataset=dataset, rounds=rounds, device=device))
    _bench_table(rows, f"{dataset}/{model} training epoch", json_output)


@bench_app.command("train")
def bench_train_cmd(
    model: ModelOpt = "mlp8",
    n_train: Annotated[int, typer.Option(help="MNIST-shaped training images for the input-pipeline epoch.")] = 12_800,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds; the median is reported.")] = 5,
    device: DeviceOpt = "cpu",
    workers: Annotated[int, typer.Option(help="DataLoader workers for the tutorial pipeline.")] = 0,
    epochs_rounds: Annotated[int, typer.Option(help="Rounds of the activation-epoch table (0 skips it).")] = 15,
    json_output: JsonOpt = False,
) -> None:
    """Training throughput: bru's device-resident epoch against a torchvision DataLoader
    with ToTensor, then an mlp8 digits epoch per activation and path against ELU."""
    from bru_core.bench import as_dicts, bench_epochs, bench_input_pipeline

    if n_train < 1 or rounds < 1 or epochs_rounds < 0 or workers < 0:
        raise ConfigError("--n-train, --rounds: must be at least 1; --epochs-rounds, --workers: at least 0")
    pipeline = as_dicts(
        bench_input_pipeline(model=model, n_train=n_train, rounds=rounds, device=device, num_workers=workers)
    )
    epochs = as_dicts(bench_epochs(rounds=epochs_rounds, device=device)) if epochs_rounds else []
    if json_output:
        _print_json(
            [{"benchmark": "input pipeline", **r} for r in pipeline] + [{"benchmark": "epoch", **r} for r in epochs]
        )
        return
    _bench_table(pipeline, f"input pipeline: MNIST-shaped {model} epoch, {n_train:,} images", False)
    if epochs:
        _bench_table(epochs, "digits/mlp8 training epoch per activation", False)


@bench_app.command("estimate")
def bench_estimate_cmd(
    spec: SpecArg,
    device: DeviceOpt = "cpu",
    batches: Annotated[int, typer.Option(help="Batches timed per task and activation.")] = 8,
    precision: Annotated[str | None, typer.Option(help="fp32 or bf16 (default: the spec's).")] = None,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile each model.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Device-hours of a campaign, from step times measured here (no data needed)."""
    from bru_core.bench import as_dicts, estimate_campaign
    from bru_core.spec import load_spec

    if batches < 1:
        raise ConfigError("--batches: must be at least 1")
    if precision not in (None, "fp32", "bf16"):
        raise ConfigError(f"--precision: must be fp32 or bf16, got {precision!r}")
    campaign = load_spec(spec)
    rows = as_dicts(
        estimate_campaign(campaign, device=device, batches=batches, precision=precision, compile=compile_model)
    )
    grid = sum(r["grid_hours"] for r in rows)
    total = sum(r["campaign_hours"] for r in rows)
    if json_output:
        _print_json([*rows, {"task": "total", "grid_hours": grid, "campaign_hours": total}])
        return
    _bench_table(rows, f"estimated cost of {campaign.name} on {rows[0]['device']}", False)
    out.print(
        f"total: {grid:.2f} device-hours for the grid (every task x activation once, {campaign.tasks[0].epochs} epochs"
        f" for the first task), {total:.1f} for the campaign as written"
        f" ({campaign.search.trials} trials + {len(campaign.repeats.seeds)} seeds per study, before pruning)"
    )


@bench_app.command("pipeline")
def bench_pipeline_cmd(
    spec: Annotated[Path, typer.Argument(help="Campaign spec to run embedded.")] = Path("configs/smoke.yaml"),
    json_output: JsonOpt = False,
) -> None:
    """Orchestration overhead of an embedded campaign: its wall time against the time its
    trials and repeats spent training, with Prefect's one-off start timed apart. Runs in
    a fresh temporary bru home, so nothing is reused."""
    import tempfile
    import time

    from bru_core.bench import as_dicts, pipeline_overhead
    from bru_core.settings import get_settings
    from bru_core.spec import load_spec
    from bru_core.tracking import Tracker

    campaign = load_spec(spec)
    with tempfile.TemporaryDirectory(prefix="bru-bench-pipeline-") as home:
        settings = get_settings(home=Path(home))
        _preflight(campaign, settings)
        _export_settings(settings)
        _prepare_prefect(settings)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        started = time.perf_counter()
        from flows.campaign import campaign as campaign_flow
        from flows.service import ping

        ping()  # the temporary Prefect server starts here, once per process
        prefect_start = time.perf_counter() - started
        started = time.perf_counter()
        campaign_flow(campaign.model_dump(mode="json"))
        wall = time.perf_counter() - started
        with Tracker(settings) as tracker:
            timings = tracker.run_timings(campaign.name)
    row = pipeline_overhead(campaign.name, prefect_start, wall, timings)
    _bench_table(as_dicts([row]), f"pipeline overhead, embedded campaign {campaign.name}", json_output)


@bench_app.command("scale")
def bench_scale_cmd(
    workers: Annotated[str, typer.Option(help="Comma list of worker counts.")] = "1,2,4",
    trials: Annotated[int, typer.Option(help="Trials per study (the budget).")] = 40,
    threads: Annotated[int, typer.Option(help="torch threads per worker (OMP_NUM_THREADS).")] = 1,
    tracking_uri: TrackingOpt = None,
    optuna_storage: StorageOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Trial throughput of 1, 2 and 4 worker processes on one PostgreSQL-backed study of
    short trials (coordination cost, not compute). Needs the stack's PostgreSQL and
    MLflow server: `eval "$(bash infra/local/stack.sh env)"` first."""
    import tempfile

    from bru_core.bench import as_dicts, bench_scale
    from bru_core.settings import get_settings, shown_url

    counts = []
    for part in _comma_list(workers):
        if not part.isdigit() or int(part) < 1:
            raise ConfigError(f"--workers: {part!r} is not a worker count (a whole number >= 1)")
        counts.append(int(part))
    if trials < 1 or threads < 1:
        raise ConfigError("--trials and --threads: must be at least 1")
    settings = get_settings(tracking_uri=tracking_uri, optuna_storage=optuna_storage)
    if not settings.optuna.startswith("postgresql"):
        raise ConfigError(
            f"BRU_OPTUNA_STORAGE: bru bench scale needs a PostgreSQL storage, not {shown_url(settings.optuna)}; "
            'start the stack and run eval "$(bash infra/local/stack.sh env)"'
        )
    if not str(settings.tracking_uri or "").startswith(("http://", "https://", "postgresql")):
        raise ConfigError(
            "BRU_TRACKING_URI: bru bench scale needs an MLflow server or a PostgreSQL store shared by the workers; "
            'run eval "$(bash infra/local/stack.sh env)"'
        )
    # One thread per worker: the figure is about coordination, and on a small machine
    # several 2-thread workers would measure CPU oversubscription instead.
    env = dict(
        os.environ,
        BRU_OPTUNA_STORAGE=settings.optuna,
        BRU_TRACKING_URI=str(settings.tracking_uri),
        OMP_NUM_THREADS=str(threads),
    )
    with tempfile.TemporaryDirectory(prefix="bru-bench-scale-") as folder:
        rows = as_dicts(bench_scale(counts, trials, env, settings.optuna, Path(folder)))
    _bench_table(rows, f"scale-out: one study of {trials} one-epoch trials", json_output)


@bench_app.command("models")
def bench_models_cmd(
    batches: Annotated[int, typer.Option(help="Batches of 128 timed per model.")] = 8,
    device: DeviceOpt = "cpu",
    json_output: JsonOpt = False,
) -> None:
    """Seconds per training epoch of each model on MNIST- and CIFAR-shaped data."""
    from bru_core.bench import as_dicts, bench_models

    if batches < 1:
        raise ConfigError("--batches: must be at least 1")
    rows = as_dicts(bench_models(batches=batches, device=device))
    _bench_table(rows, "training throughput per model (relu, batch 128)", json_output)


@bench_app.command("packed")
def bench_packed_cmd(
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

    chosen = _comma_list(models)
    rows = as_dicts(
        bench_packed(chosen, dataset, activation, seeds, epochs, device, data_dir, n_train, pack, rounds, synthetic)
    )
    conv_rows = as_dicts(bench_conv_packing(seeds=seeds, device=device)) if conv else []
    if json_output:
        _print_json({"packed": rows, "conv_packing": conv_rows})
        return
    _bench_table(rows, f"{seeds} seeds of one configuration: one after another vs packed", False)
    if conv_rows:
        _bench_table(conv_rows, "packing convolutions: one training step of K lenet5 members (elu)", False)


# --------------------------------------------------------------------------- entry point


def _fail(message: str, code: int, exc: BaseException | None = None) -> int:
    notes = getattr(exc, "__notes__", [])  # e.g. where the details are
    err.print(f"error: {'; '.join([message, *notes])}", markup=False, highlight=False, soft_wrap=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; every expected failure becomes one line on stderr and an exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=list(argv) if argv is not None else None, prog_name="bru", standalone_mode=False)
    except StoreFailedError as exc:  # not bad input: the command can simply be run again
        return _fail(str(exc), 1, exc)
    except BruError as exc:
        return _fail(str(exc), 2, exc)
    except NonFiniteLossError as exc:
        return _fail(f"training diverged: {exc}; try a lower --lr", 1, exc)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:
        # click's usage errors (bad option, bad value, missing argument), without
        # depending on click's private module path inside typer
        if type(exc).__name__ == "NoArgsIsHelpError":
            out.print(exc.format_message(), markup=False, highlight=False)  # type: ignore[attr-defined]
            return 0
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            ctx = getattr(exc, "ctx", None)
            where = f"{ctx.command_path}: " if ctx is not None else ""
            message = " ".join(exc.format_message().split())
            return _fail(f"{where}{message}", int(exc.exit_code))
        if type(exc).__name__ == "Abort":
            return _fail("aborted", 1)
        raise
    return int(result) if isinstance(result, int) else 0


def run() -> None:  # console script
    sys.exit(main())
