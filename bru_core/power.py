"""Power, before and after compute: what a campaign's design can show.

* ``check_design(spec)``: the confirmatory family, the smallest adjusted p its seeds can
  reach, and the power of the family for a stated effect (``bru check``).
* ``pilot(spec, campaign, effect)``: how many seeds detect a difference of ``effect`` with
  80% power, from the paired differences an earlier campaign measured (``bru check
  --pilot``).
* ``simulate(spec, ...)``: the design checked by simulation through the aggregation's own
  code (``bru_core.aggregate.compute``): the family-wise false-positive rate with no
  effect and the power with one (``bru bench stats``).

Effects are in units of the sd of the paired differences (Cohen's d_z) unless said.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from bru_core import stats
from bru_core.aggregate import CONFIRMATORY, compute
from bru_core.errors import BruError
from bru_core.results import Evaluation, ResultsStore
from bru_core.settings import Settings, get_settings
from bru_core.spec import CampaignSpec

# --------------------------------------------------------------------------- before compute


def seeds_for_family_power(
    spec: CampaignSpec, effect_dz: float = 1.0, power: float = stats.POWER, limit: int = 200
) -> int | None:
    """The fewest seeds with which the spec's confirmatory family detects, on average, a
    share ``power`` of its comparisons when each has a true effect of ``effect_dz``."""
    d = spec.design
    if d.family_size == 0:
        return None

    def average(n: int) -> float:
        return stats.family_power(d.test, n, d.tasks, d.candidates, d.references, effect_dz, d.alpha).average

    n = max(2, d.fewest_seeds)
    while average(n) < power:
        n += 1
        if n > limit:
            return None
    return n


def check_design(spec: CampaignSpec, effect_dz: float = 1.0) -> dict[str, Any]:
    """What ``bru check`` reports about the design (``--json`` prints it as it is)."""
    d = spec.design
    report: dict[str, Any] = {
        "campaign": spec.name,
        "family_size": d.family_size,
        "tasks": d.tasks,
        "candidates": spec.candidates,
        "references": spec.references,
        "metrics": {t.name: spec.primary_metric(t.name) for t in spec.tasks},
        "test": d.test,
        "seeds": d.seeds,
        "alpha": d.alpha,
        "min_adjusted_p": d.min_adjusted_p,
        "reaches_alpha": d.reaches_alpha,
        "fewest_seeds": d.fewest_seeds,
        "exploratory": d.exploratory,
        "effect_dz": effect_dz,
    }
    if d.family_size and not d.exploratory:  # an exploratory campaign promises no power
        power = stats.family_power(d.test, d.seeds, d.tasks, d.candidates, d.references, effect_dz, d.alpha)
        report.update(
            power=power.average,
            power_any=power.any,
            power_all=power.all,
            seeds_for_power=seeds_for_family_power(spec, effect_dz),
        )
    return report


# --------------------------------------------------------------------------- from a pilot


@dataclass
class PilotRow:
    task: str
    a: str
    b: str
    metric: str
    pilot_seeds: int  # complete pairs in the pilot campaign
    sd: float | None  # sd of the paired differences there
    seeds: int | None  # seeds that detect the effect with 80% power at alpha / family size
    seeds_cautious: int | None  # the same with the sd's one-sided 80% upper confidence bound
    note: str = ""


def _sd_upper(sd: float, n: int, level: float = 0.8) -> float:
    """One-sided upper confidence bound of a normal sd from n values (chi-square)."""
    return sd * math.sqrt((n - 1) / sps.chi2.ppf(1 - level, n - 1))


def pilot(
    spec: CampaignSpec, campaign: str, effect: float, settings: Settings | None = None
) -> tuple[list[PilotRow], float]:
    """For each confirmatory comparison of ``spec`` that the aggregated ``campaign`` also
    has: the seeds that detect a true difference of ``effect`` (in the metric's units:
    a fraction for errors) with 80% power at Holm's first step, alpha / family size,
    assuming normal paired differences with the sd the pilot measured. Returns the rows
    and that per-comparison alpha."""
    if effect <= 0:
        raise BruError(f"--effect: must be > 0, got {effect:g}")
    design = spec.design
    if design.family_size == 0:
        raise BruError(f"{spec.name}: no confirmatory family (compare.exploratory, or no candidate) to plan for")
    alpha = design.alpha / design.family_size
    settings = settings or get_settings()
    with ResultsStore(settings.results) as store:
        store.campaign(campaign)  # one clear line if it was never aggregated
        evaluations = store.records("evaluations", campaign)
    by: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for e in evaluations:
        by.setdefault((e["task"], e["activation"]), {})[e["seed"]] = e
    rows = []
    for task, a, b in spec.confirmatory_pairs():
        metric = spec.primary_metric(task)
        xa, xb = by.get((task, a)), by.get((task, b))
        if not xa or not xb:
            continue
        diffs = [
            xa[s][metric] - xb[s][metric]
            for s in sorted(set(xa) & set(xb))
            if xa[s].get(metric) is not None and xb[s].get(metric) is not None
        ]
        n0 = len(diffs)
        sd = float(np.std(diffs, ddof=1)) if n0 > 1 else None
        if sd is None or sd == 0:
            rows.append(PilotRow(task, a, b, metric, n0, sd, None, None, "too few pairs or no spread to plan from"))
            continue
        rows.append(
            PilotRow(
                task, a, b, metric, n0, sd,
                stats.seeds_for(design.test, effect / sd, alpha),
                stats.seeds_for(design.test, effect / _sd_upper(sd, n0), alpha),
            )
        )  # fmt: skip
    if not rows:
        raise BruError(
            f"campaign {campaign!r} has none of the confirmatory comparisons of {spec.name} "
            f"({', '.join(f'{t} {a} vs {b}' for t, a, b in spec.confirmatory_pairs()[:3])}, ...); "
            "a pilot must share tasks and activations with the spec"
        )
    return rows, alpha


# --------------------------------------------------------------------------- by simulation


DISTRIBUTIONS = ("normal", "heavy")


def _noise(rng: np.random.Generator, distribution: str, shape: tuple[int, ...]) -> np.ndarray:
    """Per-run noise of variance 1/2, so that a paired difference has variance 1: normal, or
    heavy-tailed (Student's t with 3 degrees of freedom, scaled: kurtosis infinite)."""
    if distribution == "normal":
        return rng.standard_normal(shape) * math.sqrt(0.5)
    return rng.standard_t(3, shape) / math.sqrt(3) * math.sqrt(0.5)


def _campaign(
    spec: CampaignSpec, rng: np.random.Generator, effect_dz: float, distribution: str, failure_rate: float
) -> list[Evaluation]:
    """One simulated campaign: the primary metric of every task x activation x seed. A
    seed-level term shared by every activation (the data order, the initialisation) cancels
    in the paired differences; candidates are better (lower) by effect_dz."""
    seeds = spec.repeats.seeds
    candidates = set(spec.candidates)
    evaluations = []
    for task in spec.tasks:
        metric = spec.primary_metric(task.name)
        shared = rng.standard_normal(len(seeds))
        noise = _noise(rng, distribution, (len(spec.labels), len(seeds)))
        failed = rng.random((len(spec.labels), len(seeds))) < failure_rate
        for i, activation in enumerate(spec.labels):
            shift = -effect_dz if activation in candidates else 0.0
            for j, seed in enumerate(seeds):
                e = Evaluation(task=task.name, activation=activation, seed=seed, mlflow_run_id="simulated",
                               epochs=task.epochs, status="diverged" if failed[i, j] else "finished")  # fmt: skip
                if not failed[i, j]:
                    setattr(e, metric, 10.0 + shared[j] + shift + noise[i, j])
                evaluations.append(e)
    return evaluations


@dataclass
class SimulationResult:
    scenario: str  # null | effect
    distribution: str
    effect_dz: float
    failure_rate: float
    simulations: int
    family_size: int
    fwer: float | None  # null: share of campaigns with any confirmatory verdict
    power: float | None  # effect: expected share of confirmatory comparisons found better
    power_any: float | None
    power_all: float | None
    wrong_direction: float | None  # effect: share of confirmatory comparisons found worse
    monte_carlo_se: float  # of the headline figure

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


def simulate(
    spec: CampaignSpec,
    *,
    effect_dz: float,
    distribution: str = "normal",
    failure_rate: float = 0.0,
    simulations: int = 1000,
    seed: int = stats.POWER_SEED,
    on_step: Callable[[int, int], None] | None = None,
) -> SimulationResult:
    """Run ``compute`` (the aggregation's statistics) on simulated campaigns of the spec's
    shape and seeds; effect_dz 0 measures the family-wise error rate, else the power."""
    if distribution not in DISTRIBUTIONS:
        raise BruError(f"--distribution: must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
    family = len(spec.confirmatory_pairs())
    if family == 0:
        raise BruError(f"{spec.name}: no confirmatory family to simulate (compare.exploratory, or no candidate)")
    rng = np.random.default_rng(seed)
    any_verdict = found = found_any = found_all = wrong = 0
    for i in range(simulations):
        _, comparisons, _ = compute(spec, _campaign(spec, rng, effect_dz, distribution, failure_rate))
        verdicts = [r.better for r in comparisons if r.family == CONFIRMATORY]
        better = sum(v == "better" for v in verdicts)
        any_verdict += any(v in ("better", "worse") for v in verdicts)
        found += better
        found_any += better > 0
        found_all += better == family
        wrong += sum(v == "worse" for v in verdicts)
        if on_step is not None:
            on_step(i + 1, simulations)
    if effect_dz == 0:
        fwer = any_verdict / simulations
        return SimulationResult("null", distribution, 0.0, failure_rate, simulations, family, fwer, None, None, None,
                                None, math.sqrt(fwer * (1 - fwer) / simulations))  # fmt: skip
    power = found / (simulations * family)
    return SimulationResult(
        "effect", distribution, effect_dz, failure_rate, simulations, family, None, power,
        found_any / simulations, found_all / simulations, wrong / (simulations * family),
        math.sqrt(power * (1 - power) / simulations),  # per-campaign shares: a conservative error
    )  # fmt: skip


def with_seeds(spec: CampaignSpec, seeds: int) -> CampaignSpec:
    """The spec with ``seeds`` repeat seeds (1..seeds, the search seed kept out)."""
    chosen = [s for s in range(1, seeds + 2) if s != spec.search.seed][:seeds]
    return spec.model_copy(update={"repeats": spec.repeats.model_copy(update={"seeds": chosen})})


def quick_shape(seeds: int = 12) -> CampaignSpec:
    """The family shape of configs/quick.yaml (2 tasks x 2 candidates x 2 references), with
    ``seeds`` seeds: what ``bru bench stats`` simulates when given no spec."""
    from bru_core.spec import parse_spec

    return parse_spec(
        {
            "name": "stats-simulation",
            "tasks": [{"dataset": "digits", "model": "mlp4", "epochs": 20}, {"dataset": "digits", "model": "lenet5", "epochs": 10}],
            "activations": ["relu", "elu", "eru:2", "oru:3"],
            "search": {"trials": 1, "seed": 0},
            "repeats": {"seeds": list(range(1, seeds + 1))},
            "compare": {"reference": ["relu", "elu"]},
        }
    )  # fmt: skip


def bench_stats(
    spec: CampaignSpec,
    *,
    effect_dz: float = 1.0,
    simulations: int = 1000,
    failure_rate: float = 0.1,
    on_step: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """The design checked by simulation: no effect (normal, heavy-tailed, and normal with
    ``failure_rate`` of the runs diverging, the same rate for every activation) for the
    family-wise error rate, and ``effect_dz`` (normal, heavy-tailed) for the power.
    Headline figures are the worst cases: ``fwer`` the largest, ``power`` the smallest."""
    scenarios = [
        ("null normal", 0.0, "normal", 0.0),
        ("null heavy-tailed", 0.0, "heavy", 0.0),
        (f"null normal, {failure_rate:.0%} diverged", 0.0, "normal", failure_rate),
        ("effect normal", effect_dz, "normal", 0.0),
        ("effect heavy-tailed", effect_dz, "heavy", 0.0),
    ]
    results = []
    for i, (label, effect, distribution, failures) in enumerate(scenarios):
        result = simulate(
            spec, effect_dz=effect, distribution=distribution, failure_rate=failures, simulations=simulations,
            seed=stats.POWER_SEED + i,
            on_step=(lambda done, total, label=label: on_step(label, done, total)) if on_step else None,
        )  # fmt: skip
        results.append({**result.asdict(), "scenario": label})
    nulls = [r["fwer"] for r in results if r["fwer"] is not None]
    powers = [r["power"] for r in results if r["power"] is not None]
    d = spec.design
    return {
        "campaign": spec.name,
        "family_size": d.family_size,
        "test": d.test,
        "alpha": d.alpha,
        "seeds": d.seeds,
        "effect_dz": effect_dz,
        "simulations": simulations,
        "fwer": max(nulls),
        "power": min(powers),
        "scenarios": results,
    }
