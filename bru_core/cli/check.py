"""``bru check``: what a campaign spec will do and what its design can show (power), and,
from an earlier campaign, how many seeds a given difference needs. Runs and writes nothing."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from bru_core.errors import ConfigError

from ._common import HomeOpt, JsonOpt, ResultsOpt, SpecArg, out, print_json

PilotOpt = Annotated[
    str | None, typer.Option(help="An aggregated campaign whose paired differences plan the seeds (with --effect).")
]
EffectOpt = Annotated[
    float | None,
    typer.Option(help="With --pilot: the difference to detect, in the metric's units (0.001 = 0.1 points of error)."),
]
EffectDzOpt = Annotated[
    float, typer.Option("--effect-dz", min=0.01, help="The standardised effect the power figure is for.")
]


def check(
    spec: SpecArg,
    json_output: JsonOpt = False,
    pilot: PilotOpt = None,
    effect: EffectOpt = None,
    effect_dz: EffectDzOpt = 1.0,
    home: HomeOpt = None,
    results_url: ResultsOpt = None,
) -> None:
    """Check a campaign spec and print its protocol and what its design can show (power),
    without running or writing anything."""
    from bru_core.power import check_design
    from bru_core.spec import load_spec

    if (pilot is None) != (effect is None):
        raise ConfigError("--pilot and --effect go together: the campaign to plan from and the difference to detect")
    campaign = load_spec(spec)
    report = check_design(campaign, effect_dz)
    if pilot is not None and effect is not None:
        report["pilot"] = _pilot(campaign, pilot, effect, home, results_url)
    if json_output:
        print_json(report)
        return
    _print_design(campaign, report, effect_dz)
    if "pilot" in report:
        _print_pilot(report["pilot"])


def _print_design(campaign, report: dict[str, Any], effect_dz: float) -> None:
    from bru_core.stats import POWER

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


def _pilot(campaign, pilot: str, effect: float, home, results_url: str | None) -> dict[str, Any]:
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
