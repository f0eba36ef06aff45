"""GPU correctness for bench/gpu.sh: the fused CUDA kernels (bru_core.kernels) against the
float64 CPU formula, and the number of device kernels per direction. Prints one JSON list
on its last line; exits 1 if a check fails."""

from __future__ import annotations

import json
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from bru_core.activations import eru, eru_reference, oru, oru_reference

FUNCTIONS = {"eru": (eru, eru_reference), "oru": (oru, oru_reference)}
TOLERANCE_EPS = {torch.float32: 8, torch.bfloat16: 4}  # values, in dtype epsilons
# Slopes, relative to the exact slope itself: fp32 as values; bf16 slopes are computed in
# float32 from the saved input and rounded once, so within half a bf16 epsilon (plus
# float32's error), never negative. A tolerance relative to max(1, |slope|) would pass the
# wrong-sign slopes of a bf16 output (ERU r = 3 at z = -3: -0.00195 for +0.00037).
SLOPE_TOLERANCE_EPS = {torch.float32: 8, torch.bfloat16: 0.51}


def kernels_launched(run, *args, **kwargs) -> int:
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run(*args, **kwargs)
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def main() -> int:
    rows, ok = [], True
    z64 = torch.cat([torch.linspace(-40, 40, 8001, dtype=torch.float64), torch.randn(100_000, dtype=torch.float64) * 3])
    for family, (fast, formula) in FUNCTIONS.items():
        for r in (0.5, 1.0, 2.0, 3.0, 7.5):
            exact_z = z64.clone().requires_grad_(True)
            exact = formula(exact_z, r)
            exact.backward(torch.ones_like(exact))
            slope = exact_z.grad
            slope[z64 == 0] = r
            for dtype, tolerance in TOLERANCE_EPS.items():
                z = z64.to("cuda", dtype).requires_grad_(True)
                value = fast(z, r)
                value.backward(torch.ones_like(value))
                eps = torch.finfo(dtype).eps
                # against the exact value of the rounded input, in the dtype's epsilons
                exact_in = z64.to(dtype).double().requires_grad_(True)
                exact_value = formula(exact_in, r)
                exact_value.backward(torch.ones_like(exact_value))
                exact_slope = exact_in.grad
                exact_slope[exact_in.detach() == 0] = r
                value_err = (
                    float(
                        (
                            (value.double().cpu() - exact_value.detach()).abs()
                            / exact_value.detach().abs().clamp(min=1)
                        ).max()
                    )
                    / eps
                )
                scale = (
                    exact_slope.abs().clamp(min=1)
                    if dtype == torch.float32
                    else exact_slope.abs().clamp(min=torch.finfo(dtype).tiny)
                )
                slope_err = float(((z.grad.double().cpu() - exact_slope).abs() / scale).max()) / eps
                negative_slopes = int((z.grad < 0).sum())
                x = torch.randn(1 << 20, device="cuda", dtype=dtype).requires_grad_(True)
                y = fast(x, r)
                grad = torch.ones_like(y)
                forward_kernels = kernels_launched(fast, x, r)
                backward_kernels = kernels_launched(torch.autograd.grad, y, x, grad, retain_graph=True)
                passed = value_err <= tolerance and slope_err <= SLOPE_TOLERANCE_EPS[dtype] and negative_slopes == 0
                ok &= passed
                rows.append(
                    {
                        "activation": f"{family}:{r:g}",
                        "dtype": str(dtype).removeprefix("torch."),
                        "value_error_eps": value_err,
                        "slope_error_eps": slope_err,
                        "negative_slopes": negative_slopes,
                        "forward_kernels": forward_kernels,
                        "backward_kernels": backward_kernels,
                        "ok": passed,
                    }
                )
                print(rows[-1], flush=True)
    print(json.dumps(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("bench/gpu_check.py: no CUDA device", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
