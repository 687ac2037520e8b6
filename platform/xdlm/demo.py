"""``xdlm demo``: the core math on one sentence, no training needed.

Characters are the vocabulary ([MASK] printed as ``_``). The forward process is shown at several
t and k; then the ancestral posterior sampler denoises from the prior with a "noisy oracle"
denoiser that puts ``confidence`` of its mass on the true character, the rest uniform — a
stand-in for a trained network that is right most of the time.
"""

from __future__ import annotations

import torch

from xdlm.diffusion import XDLM, sampling, schedules

MASK_GLYPH = "_"


def run_demo(
    sentence: str = "discrete diffusion balances understanding and generation",
    ks: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0),
    times: tuple[float, ...] = (0.2, 0.5, 0.8),
    steps: int = 8,
    confidence: float = 0.8,
    seed: int = 0,
    print_fn=print,
) -> dict[float, str]:
    """Print the demo and return the final sample for each k."""
    chars = sorted(set(sentence))
    vocab = chars + [MASK_GLYPH]
    N, mask_id = len(vocab), len(vocab) - 1
    x0 = torch.tensor([[vocab.index(c) for c in sentence]])
    schedule = schedules.get("loglinear")

    def show(tokens: torch.Tensor) -> str:
        return "".join(vocab[i] for i in tokens[0].tolist())

    print_fn(f"XDLM demo: {N - 1} characters + [MASK] (shown as {MASK_GLYPH!r}), log-linear schedule")
    print_fn(f"x_0          | {sentence}")
    gen = torch.Generator().manual_seed(seed)
    print_fn("\nForward process: x_t ~ q(x_t | x_0) = alpha_t e_x0 + (1 - alpha_t) pi")
    for k in ks:
        proc = XDLM(N, mask_id, k)
        for t in times:
            alpha = schedule.alpha(torch.tensor(t, dtype=torch.float64))
            print_fn(f"k={k:<4} t={t:.1f} | {show(proc.sample_marginal(x0, alpha, generator=gen))}")

    def denoiser(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        probs = torch.full((*z_t.shape, N), (1 - confidence) / (N - 1))
        probs.scatter_(-1, x0.expand_as(z_t)[..., None], confidence + (1 - confidence) / (N - 1))
        probs[..., mask_id] = 0
        return torch.log(probs.clamp_min(1e-30))

    finals = {}
    print_fn(f"\nReverse process: ancestral posterior sampler, {steps} steps, denoiser right {confidence:.0%} of the time")
    for k in ks:
        proc = XDLM(N, mask_id, k)
        sampler = sampling.get("ancestral", proc, schedule, steps=steps)
        z = None
        for state in sampler.iterate(denoiser, tuple(x0.shape), generator=gen):
            z = state.z
            print_fn(f"k={k:<4} s={state.s:.2f} | {show(z)}")
        accuracy = (z == x0).float().mean().item()
        finals[k] = show(z)
        print_fn(f"k={k:<4} accuracy {accuracy:.0%} after {steps} network calls\n")
    return finals
