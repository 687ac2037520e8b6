"""The GPU check of issue 9 (docs/kernels.md, "GPU check"), one module per job.

Run it through ``bash benchmarks/gpu_check.sh OUT_DIR [--dry-run]`` or ``python
benchmarks/gpu_check.py``; cli.py holds the command line and the overview of the steps.

    cli.py              the command line: options, step selection, limits
    runner.py           each step in its own subprocess: time limits, the budget, exit status
    report.py           gpu_check.json / gpu_check.md, rewritten atomically; the printed summary
    common.py           paths, shapes, the atomic write, the step context
    devices.py          bandwidth and peak FLOP/s by device name (an assumption)
    env.py              step env: the machine and the versions
    aot_capture.py      the kernel launches the dispatcher makes, recorded on meta tensors and
                        specialised as Triton's JIT would
    aot_compile.py      step aot (and --aot-json): each variant compiled for sm_80 / 90 / 100
    checks.py           tolerances, error measures and the table of the correctness step
    correctness.py      step correctness: triton and chunked against torch
    kernel_bench.py     step kernel_bench: benchmarks/kernels.py's measurements
    training.py         steps train and train_compile: bf16 training of the small DiT
    deepspeed_zero2.py  step deepspeed: ZeRO-2 for a few steps

No module imports torch or triton at import time: the driver stays light, and ``--aot-json``
must import triton only after dropping TRITON_INTERPRET.
"""
