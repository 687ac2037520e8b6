"""Fast paths for the NELBO and the sampling step: chunked PyTorch and Triton kernels.

A sub-package of the math it accelerates: its modules import the formula modules
``xdlm.diffusion.nelbo`` / ``posterior`` / ``categorical`` (the definitions every backend must
match) and one another by full module path, never ``xdlm.diffusion`` or this ``__init__``;
``xdlm.diffusion.process`` (``XDLM``) and ``sampling`` sit above and import them.

Public entry points (``XDLM.nelbo / linear_nelbo / sample_step`` call these with validated,
broadcast inputs; use those methods rather than these directly):

- ``nelbo``: per-token loss from logits; backends ``auto | torch | chunked | triton``.
- ``linear_nelbo``: LM head + loss fused over token chunks (logits never materialised).
- ``sample_step``: one posterior draw per token, streamed over the vocabulary.
- ``resolve_backend``: which backend a request would run on a device.

Module map (one job each): ``dispatch`` (names, checks), ``stats`` (the shared definitions),
``chunked`` / ``triton_nelbo`` (loss statistics, twins), ``autograd`` (the custom Function),
``loss`` and ``linear`` (the losses), ``chunked_sample`` / ``triton_sample`` (row pass of a
sampling step, twins), ``sample`` (the step).  Triton is imported only by ``triton_*`` modules,
which ``autograd`` and ``sample`` load by name (importlib) only when a ``triton`` backend runs:
importing ``xdlm`` never imports Triton.
"""

from xdlm.diffusion.kernels.dispatch import BACKENDS
from xdlm.diffusion.kernels.dispatch import resolve as resolve_backend
from xdlm.diffusion.kernels.linear import linear_nelbo
from xdlm.diffusion.kernels.loss import nelbo
from xdlm.diffusion.kernels.sample import SampleStep, sample_step

__all__ = ["BACKENDS", "SampleStep", "linear_nelbo", "nelbo", "resolve_backend", "sample_step"]
