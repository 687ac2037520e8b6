"""Which Triton kernel variants the dispatcher can launch, found without a GPU (step ``aot``).

1. ``aot_capture`` runs the real entry points (``loss.nelbo`` with and without the in-place
   backward, ``linear.linear_nelbo`` forward and backward, ``sample.sample_step``) on meta tensors
   with the GPU launch configuration, and records each kernel launch (kernel, arguments,
   constexprs, num_warps) instead of running it.  Driving the real launch code, rather than
   listing variants by hand, keeps the list complete when the launch code changes.
2. ``aot_jobs`` specialises each recorded launch exactly as Triton's JIT would on a device of each
   target: its own binder (``create_function_from_signature``) and ``JITFunction._pack_args`` give
   the argument types, the constexprs, and which integers / pointers are divisible by 16 (or an
   integer equal to 1 turned into a constexpr); arguments declared ``do_not_specialize`` get
   neither, by the same binder.  Identical specialisations are compiled once.

aot_compile.py compiles the jobs.
"""

from __future__ import annotations

import json

from .common import GPT2_MASK, GPT2_VOCAB, K

AOT_TARGETS = (80, 90, 100)

#: Launch scenarios driven through the real entry points (on meta tensors, GPU launch config):
#: (tokens, V, mask id) -- real vocabularies (many tiles), the widest single tile (8192), a 4096
#: single tile (8 warps), and the dry run's 257 (a 512-wide single tile, 4 warps).
AOT_NELBO_SHAPES = [(8192, 50257, 50256), (2048, 126464, 126463), (8192, GPT2_VOCAB, GPT2_MASK),
                    (4096, 8192, 0), (4096, 4096, 17), (64, 257, 256)]
AOT_LINEAR_SHAPES = [(8192, 50257, 50256, 768), (2048, 126464, 126463, 768), (8192, GPT2_VOCAB, GPT2_MASK, 768),
                     (512, 257, 256, 64)]  # the last: tokens > V, the token-chunk schedule
AOT_SAMPLE_SHAPES = [(8192, 50257, 50256), (2048, 126464, 126463), (4096, 8192, 0), (64, 257, 256)]


def aot_capture() -> list[dict]:
    """Run the dispatcher's real launch code (``loss.nelbo``, ``linear.linear_nelbo`` forward and
    backward, ``sample.sample_step``) on meta tensors with the GPU launch configuration, recording
    each kernel launch (kernel, arguments, constexprs, num_warps) instead of running it.

    Needs TRITON_INTERPRET unset (the @jit objects must be JITFunctions).  Patches modules of
    this process only.
    """
    import torch

    from xdlm.diffusion.kernels import (
        dispatch,
        linear,
        loss,
        sample,
        triton_common,
        triton_nelbo,
        triton_sample,
    )

    if triton_common.INTERPRETED:
        raise RuntimeError("aot_capture needs TRITON_INTERPRET unset (run it in a fresh process)")
    records: list[dict] = []
    scenario = {"label": ""}

    class Recorder:
        """Stands in for a @triton.jit kernel: ``kernel[grid](*args)`` records the launch."""

        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                records.append({"fn": self.fn, "args": args, "kwargs": kwargs, "scenario": scenario["label"]})
            return launch

    cuda = torch.device("cuda")
    saved = []
    for module, names in ((triton_nelbo, ("_stats_fwd", "_stats_bwd")), (triton_sample, ("_nucleus", "_draw"))):
        for name in names:
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, Recorder(getattr(module, name)))
        # the tiles and warps a CUDA device would get, although the tensors live on "meta"
        saved.append((module, "launch_config", module.launch_config))
        module.launch_config = lambda T, V, device: triton_common.launch_config(T, V, cuda)
    saved.append((dispatch, "resolve", dispatch.resolve))
    dispatch.resolve = lambda backend, device, dtype: "triton"
    meta = lambda *shape, dtype=torch.float32: torch.empty(*shape, dtype=dtype, device="meta")  # noqa: E731
    try:
        for dtype in (torch.float32, torch.bfloat16):
            dname = str(dtype).removeprefix("torch.")
            for T, V, m in AOT_NELBO_SHAPES:
                for k in (K, 0.0):
                    for inplace in (False, True):
                        scenario["label"] = f"nelbo {T}x{V} {dname} k={k}" + (" inplace" if inplace else "")
                        logits = meta(T, V, dtype=dtype).requires_grad_(True)
                        ids, alpha = meta(T, dtype=torch.int64), meta(T, dtype=torch.float64)
                        out = loss.nelbo(logits, ids, ids, alpha, alpha, V, m, k, backend="triton",
                                         inplace_backward=inplace)
                        out.sum().backward()
            for T, V, m, D in AOT_LINEAR_SHAPES:
                for k in (K, 0.0):
                    scenario["label"] = f"linear {T}x{V}x{D} {dname} k={k}"
                    h = meta(T, D, dtype=dtype).requires_grad_(True)
                    w = meta(V, D, dtype=dtype).requires_grad_(True)
                    b = meta(V, dtype=dtype).requires_grad_(True)
                    ids, alpha = meta(T, dtype=torch.int64), meta(T, dtype=torch.float64)
                    linear.linear_nelbo(h, w, b, ids, ids, alpha, alpha, V, m, k, backend="triton").sum().backward()
            for T, V, m in AOT_SAMPLE_SHAPES:
                for top_p in (None, 0.9):
                    for greedy in (False, True):
                        scenario["label"] = f"sample {T}x{V} {dname} top_p={top_p} greedy={greedy}"
                        a = meta(T, dtype=torch.float64)
                        # any seed: _draw's seed is do_not_specialize, one compile whatever its value
                        sample.sample_step(meta(T, V, dtype=dtype), meta(T, dtype=torch.int64), a, a, V, m, K,
                                           top_p=top_p, greedy=greedy,
                                           generator=torch.Generator().manual_seed(0), backend="triton")
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
    return records


def _jit_kwargs(fn, kwargs: dict) -> dict:
    """The keyword arguments ``JITFunction.run`` adds before binding (triton 3.x)."""
    from triton import knobs

    kw = dict(kwargs)
    kw["debug"] = kw.get("debug", getattr(fn, "debug", None)) or knobs.runtime.debug
    if hasattr(knobs.compilation, "instrumentation_mode"):
        kw["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    if hasattr(knobs.compilation, "fpsan_homomorphic_casts"):
        kw["fpsan_homomorphic_casts"] = knobs.compilation.fpsan_homomorphic_casts
    return kw


def aot_jobs(records: list[dict], targets=AOT_TARGETS) -> list[dict]:
    """Specialise each recorded launch exactly as Triton's JIT would on a device of each target
    (its binder: argument types, divisibility-by-16 and ==1 specialisation), deduplicated."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    jobs: dict[str, dict] = {}
    for arch in targets:
        backend = make_backend(GPUTarget("cuda", arch, 32))
        binders = {}
        for rec in records:
            fn = rec["fn"]
            if fn.__name__ not in binders:
                binders[fn.__name__] = create_function_from_signature(fn.signature, fn.params, backend)
            kw = _jit_kwargs(fn, rec["kwargs"])
            bound, specialization, options = binders[fn.__name__](*rec["args"], **kw)
            options, signature, constexprs, attrs = fn._pack_args(backend, kw, bound, specialization, options)
            constexprs = {k: v for k, v in constexprs.items()}
            int_names = [n for n, t in signature.items() if t in ("i32", "i64")]
            div16 = [n for n in int_names if attrs.get((fn.arg_names.index(n),))]
            ones = [n for n, t in signature.items() if t == "constexpr" and n not in rec["kwargs"]]
            logits_ty = signature[fn.arg_names[0]].lstrip("*")
            named = {fn.arg_names[key[0]]: value for key, value in constexprs.items() if fn.arg_names[key[0]] in rec["kwargs"]}
            variant = " ".join([logits_ty] + [f"{n}={int(v) if isinstance(v, bool) else v}" for n, v in named.items()]
                               + [f"w{options.num_warps}"])
            ints = ("div16:" + ",".join(div16) if div16 else "div16:-") + (" ==1:" + ",".join(ones) if ones else "")
            # everything that makes a distinct binary: one compile per key
            key = json.dumps([fn.__name__, arch, sorted(signature.items()), sorted((list(k), repr(v)) for k, v in constexprs.items()),
                              sorted((list(k), v) for k, v in attrs.items()), sorted((k, repr(v)) for k, v in options.__dict__.items())])
            job = jobs.get(key)
            if job is None:
                jobs[key] = job = {
                    "module": fn.fn.__module__, "kernel": fn.__name__, "arch": arch, "variant": variant,
                    "ints": ints, "signature": signature,
                    "constexprs": [[list(k), v] for k, v in constexprs.items()],
                    "attrs": [[list(k), v] for k, v in attrs.items()],
                    "options": dict(options.__dict__), "scenarios": [],
                }
            if rec["scenario"] not in job["scenarios"]:
                job["scenarios"].append(rec["scenario"])
    return list(jobs.values())
