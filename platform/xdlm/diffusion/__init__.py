"""XDLM diffusion math: pure tensor code (no Ray, MLflow or file I/O).

Three levels; a module imports only modules of its own level or below, by their full module path
(never this package's ``__init__``), so every arrow runs one way:

1. Formulas, one job per module: ``forward`` (q(x_t | x_0), the prior pi), ``posterior``
   (q(z_s | z_t, x)), ``nelbo`` (the per-token loss l_t and its three statistics),
   ``categorical`` (top-p, Gumbel-max), ``checks`` (input validation), ``schedules`` (alpha_t
   families, a registry), ``time_sampling`` (antithetic times over the global batch).
2. ``kernels``: the ``chunked`` and ``triton`` backends of the loss, of the fused LM head + loss
   and of the sampling step (same numbers as the eager formulas, less memory).  They import the
   formula modules ``nelbo``, ``posterior``, ``categorical`` and nothing above them.
3. ``process.XDLM``: the validating facade (forward marginals and sampling, posterior, NELBO,
   sampling step) that routes each call to the eager formula or a kernel backend; ``sampling``:
   the samplers (a registry), built on ``XDLM``.

Exported here: ``XDLM`` and the modules ``schedules``, ``time_sampling``, ``sampling``.
"""

from xdlm.diffusion import sampling, schedules, time_sampling
from xdlm.diffusion.process import XDLM

__all__ = ["XDLM", "schedules", "time_sampling", "sampling"]
