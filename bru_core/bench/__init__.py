"""Benchmarks whose output goes into docs/benchmarks.md (never timed assertions in tests).

Every comparison is interleaved: each round times every contender once, in turn, and the
figure reported is the median over rounds, so a slow spell of the machine hits all alike
(timing.py). One module per thing measured: activations (speed, accuracy), epochs (per
activation, input pipeline, model), packing (packed seeds), cost (a campaign's estimate),
orchestration (pipeline overhead, scale-out), tracking (MLflow); machine describes the
computer the figures came from.
"""

from bru_core.bench.activations import (
    ACTIVATION_PATHS,
    AccuracyRow,
    ActivationTiming,
    bench_accuracy,
    bench_activations,
)
from bru_core.bench.cost import STANDARD_SIZES, CostEstimate, estimate_campaign
from bru_core.bench.epochs import (
    FULL_TRAIN,
    EpochTiming,
    ModelTiming,
    PipelineTiming,
    bench_epochs,
    bench_input_pipeline,
    bench_models,
)
from bru_core.bench.machine import cpu_name, machine
from bru_core.bench.orchestration import SCALE_SPEC, PipelineOverhead, ScaleRow, bench_scale, pipeline_overhead
from bru_core.bench.packing import ConvPackingTiming, PackTiming, bench_conv_packing, bench_packed
from bru_core.bench.timing import as_dicts, warm_cpu_kernels
from bru_core.bench.tracking import TrackingTiming, bench_tracking

__all__ = [
    "ACTIVATION_PATHS",
    "FULL_TRAIN",
    "SCALE_SPEC",
    "STANDARD_SIZES",
    "AccuracyRow",
    "ActivationTiming",
    "ConvPackingTiming",
    "CostEstimate",
    "EpochTiming",
    "ModelTiming",
    "PackTiming",
    "PipelineOverhead",
    "PipelineTiming",
    "ScaleRow",
    "TrackingTiming",
    "as_dicts",
    "bench_accuracy",
    "bench_activations",
    "bench_conv_packing",
    "bench_epochs",
    "bench_input_pipeline",
    "bench_models",
    "bench_packed",
    "bench_scale",
    "bench_tracking",
    "cpu_name",
    "estimate_campaign",
    "machine",
    "pipeline_overhead",
    "warm_cpu_kernels",
]
