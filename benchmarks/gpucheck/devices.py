"""The device table: memory bandwidth and peak FLOP/s looked up from the GPU's name.

These are public datasheet numbers, not measurements (clocks, power limits and the exact SKU
vary), and every report that uses them says so.  They are the denominators of two ratios:

- "% of bandwidth" (kernel_bench.py) = achieved GB/s / ``bandwidth_gbs``, where achieved GB/s =
  bytes / median time and bytes = 2 x T x V x 4 for the NELBO forward + backward (one fp32 read of
  the logits, one fp32 write of their gradient) or T x V x 4 for the sampling step (one read);
- MFU (training.py) = tokens/s x flops_per_token / (``peak_bf16_tflops`` x 1e12).
"""

from __future__ import annotations

#: Public datasheet numbers by device name: memory bandwidth (GB/s), dense bf16 tensor-core and
#: fp32 (non-tensor) peak TFLOP/s.  An assumption: clocks, power limits and the exact SKU vary.
#: First match wins (substrings of torch.cuda.get_device_name(), case-insensitive), so the more
#: specific keys (``h100`` + ``nvl``) come before the general ones (``h100``).
DEVICE_SPECS = [
    (("h200",), "H200 SXM 141GB", 4800, 989, 67),
    (("h100", "nvl"), "H100 NVL", 3900, 835, 60),
    (("h100", "pcie"), "H100 PCIe", 2000, 756, 51),
    (("h100",), "H100 SXM 80GB", 3350, 989, 67),
    (("gh200",), "GH200 (H100 96GB)", 4000, 989, 67),
    (("b200",), "B200", 8000, 2250, 80),
    (("a100", "80gb", "pcie"), "A100 80GB PCIe", 1935, 312, 19.5),
    (("a100", "80gb"), "A100 SXM 80GB", 2039, 312, 19.5),
    (("a100",), "A100 40GB", 1555, 312, 19.5),
    (("l40s",), "L40S", 864, 362, 91.6),
    (("l4",), "L4", 300, 121, 30.3),
    (("a10g",), "A10G", 600, 70, 31.2),
    (("a10",), "A10", 600, 125, 31.2),
    (("rtx 4090",), "RTX 4090", 1008, 165, 82.6),
]


def device_spec(name: str) -> dict | None:
    """The first DEVICE_SPECS entry whose keys all occur in ``name``, with the assumption spelled
    out for the reports; None for a device not in the table (no bandwidth ratio, no MFU)."""
    low = name.lower()
    for keys, label, bandwidth, bf16, fp32 in DEVICE_SPECS:
        if all(k in low for k in keys):
            return {"matched": label, "bandwidth_gbs": bandwidth, "peak_bf16_tflops": bf16,
                    "peak_fp32_tflops": fp32,
                    "assumption": f"datasheet numbers of a {label} looked up from the device name "
                                  f"{name!r}; not measured"}
    return None
