"""ERU/ORU against ELU as a user runs them: whole ``bru train`` processes, interleaved.

    .venv/bin/python bench/real_run.py [--rounds 7] [--model mlp8] [--epochs 8] [--seeds 0-7] [-a elu,eru:2,...]

Each round runs ``bru train --dataset D --model M --epochs E --json -a ACT`` once per
activation, each in its own process, and reads the ``seconds`` field of its JSON (the whole
``bru_core.training.train`` call: building the model and any kernels, every epoch, the
evaluations, not the interpreter start). The order of the activations rotates from round to
round, so no activation always follows the same one; a slow spell of this shared machine
then touches every activation alike. ``--warmup`` rounds run first and are not counted (they
fill the data and kernel caches, as any earlier run on the machine would have).

Prints a table (median seconds, the spread over rounds, the ratio of medians to ELU's and
the median and range of the per-round ratios) and, on its last line, one JSON object with
the same figures, the command and the machine. The environment passes through, so
``BRU_KERNELS=eager .venv/bin/python bench/real_run.py`` measures that path. ``--seeds 0-7``
trains each activation's 8 seeds as one pack (``bru train --seeds``), its ``seconds`` the
pack's.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_ACTIVATIONS = ("elu", "eru:2", "eru:3", "oru:2", "oru:3")
BASELINE = "elu"


def machine() -> dict[str, object]:
    # Imported here, after the rounds: bru_core.bench loads torch, which the measuring
    # process does not otherwise need (each run is its own bru process).
    from bru_core.bench import cpu_name

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": importlib.metadata.version("torch"),
    }


def _default_bru() -> str:
    beside = Path(sys.executable).parent / "bru"
    return str(beside) if beside.exists() else "bru"


def run_once(bru: str, activation: str, args: argparse.Namespace) -> float:
    command = [bru, "train", "--dataset", args.dataset, "--model", args.model]
    command += ["--epochs", str(args.epochs), "--json", "-a", activation]
    if args.seeds:
        command += ["--seeds", args.seeds]  # one pack; its JSON's seconds is the pack's wall time
    if args.lr is not None:
        command += ["--lr", str(args.lr)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    lines = [line for line in done.stdout.splitlines() if line.strip().startswith("{")]
    if not lines:
        raise SystemExit(f"{' '.join(command)}: no JSON in its output:\n{done.stdout[-2000:]}")
    return float(json.loads(lines[-1])["seconds"])


def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    activations: list[str] = args.activations
    times: dict[str, list[float]] = {a: [] for a in activations}
    total = args.warmup + args.rounds
    for round_index in range(total):
        shift = round_index % len(activations)
        order = activations[shift:] + activations[:shift]
        counted = round_index >= args.warmup
        started = time.perf_counter()
        line = []
        for activation in order:
            seconds = run_once(args.bru, activation, args)
            if counted:
                times[activation].append(seconds)
            line.append(f"{activation} {seconds:.3f}")
        label = f"round {round_index - args.warmup + 1}/{args.rounds}" if counted else f"warm-up {round_index + 1}"
        print(f"{label} ({time.perf_counter() - started:.0f} s): {', '.join(line)}", file=sys.stderr, flush=True)
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, dict[str, float | list[float]]]:
    base = times.get(BASELINE)
    base_median = statistics.median(base) if base else float("nan")
    summary: dict[str, dict[str, float | list[float]]] = {}
    for activation, values in times.items():
        median = statistics.median(values)
        row: dict[str, float | list[float]] = {
            "median_s": round(median, 4),
            "min_s": round(min(values), 4),
            "max_s": round(max(values), 4),
            "ratio_to_elu": round(median / base_median, 3),
            "seconds": [round(v, 4) for v in values],
        }
        if base:
            per_round = [v / b for v, b in zip(values, base, strict=True)]
            row["round_ratio_median"] = round(statistics.median(per_round), 3)
            row["round_ratio_min"] = round(min(per_round), 3)
            row["round_ratio_max"] = round(max(per_round), 3)
        summary[activation] = row
    return summary


def table(summary: dict[str, dict[str, float | list[float]]]) -> str:
    lines = [
        "| activation | median s | min-max s | ratio to ELU | per-round ratio, median (range) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for activation, row in summary.items():
        per_round = (
            f"{row['round_ratio_median']:.2f} ({row['round_ratio_min']:.2f}-{row['round_ratio_max']:.2f})"
            if "round_ratio_median" in row
            else "-"
        )
        lines.append(
            f"| {activation} | {row['median_s']:.3f} | {row['min_s']:.3f}-{row['max_s']:.3f} "
            f"| {row['ratio_to_elu']:.2f} | {per_round} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="counted rounds (default 7)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds first (default 1)")
    parser.add_argument("--model", default="mlp8")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: bru train's)")
    parser.add_argument(
        "--seeds", default=None, help="train these seeds as one pack, e.g. 0-7 (default: one run, seed 0)"
    )
    parser.add_argument(
        "-a",
        "--activations",
        action="append",
        help=f"activation specs, comma-separated or repeated (default {','.join(DEFAULT_ACTIVATIONS)}; "
        "elu is added if missing: it is the baseline)",
    )
    parser.add_argument("--bru", default=_default_bru(), help="the bru command (default: the one beside this Python)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")
    given = [a.strip() for group in (args.activations or [",".join(DEFAULT_ACTIVATIONS)]) for a in group.split(",")]
    activations = [BASELINE] + [a for a in dict.fromkeys(given) if a and a != BASELINE]
    args.activations = activations
    started = datetime.datetime.now(datetime.UTC)
    times = measure(args)
    summary = summarise(times)
    extra = (f" --seeds {args.seeds}" if args.seeds else "") + (f" --lr {args.lr:g}" if args.lr is not None else "")
    command = f"bru train --dataset {args.dataset} --model {args.model} --epochs {args.epochs}{extra} --json -a ACT"
    print(f"{command}: median of {args.rounds} interleaved rounds ({args.warmup} warm-up round(s) not counted)")
    if os.environ.get("BRU_KERNELS"):
        print(f"BRU_KERNELS={os.environ['BRU_KERNELS']}")
    print(table(summary))
    result = {
        "command": command,
        "rounds": args.rounds,
        "warmup_rounds": args.warmup,
        "bru_kernels": os.environ.get("BRU_KERNELS", "auto"),
        "date": started.strftime("%Y-%m-%d"),
        "machine": machine(),
        "activations": summary,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
