"""XDLM diffusion math: pure tensor code (no Ray, MLflow or file I/O).

- ``XDLM``: the process (forward marginals and sampling, posterior, NELBO).
- ``schedules``: alpha_t families (registry).
- ``time_sampling``: antithetic times over the global batch.
- ``sampling``: samplers (registry).
"""

from xdlm.diffusion import (
    sampling,  # noqa: E402  (imports XDLM)
    schedules,
    time_sampling,
)
from xdlm.diffusion.process import XDLM

__all__ = ["XDLM", "schedules", "time_sampling", "sampling"]
