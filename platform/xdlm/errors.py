"""The one error type for a user's mistake.

``UserError`` means "what you asked for cannot run as given" (a config value, a path, a run
name, a flag): the CLI prints its one-line message and exits with status 2, before any Ray
resource is requested wherever the mistake can be seen that early.  Any other exception that
reaches the CLI is a bug in xdlm, and the CLI says so (traceback, exit status 1).

It subclasses ``ValueError`` so code that validates with ``except ValueError`` keeps working.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the request; the message names the field, file or flag and what is allowed."""


class RunFailed(RuntimeError):
    """A run that ended FAILED for a reason the platform detected and can name in one line (a
    non-finite loss, a full disk), as opposed to a crash."""
