"""A run's files on disk: checkpoints (written atomically, found and loaded) and the run record.

Below both ``train`` (which writes checkpoints) and ``eval`` / ``tune`` (which read them).
"""

from xdlm.checkpoint.files import (
    JOB_FILE,
    RUN_RECORD,
    STATE_FILE,
    read_checkpoint,
    write_checkpoint,
)
from xdlm.checkpoint.restore import has_checkpoint, latest_checkpoint, load_model_from_run

__all__ = [
    "JOB_FILE", "RUN_RECORD", "STATE_FILE", "has_checkpoint", "latest_checkpoint",
    "load_model_from_run", "read_checkpoint", "write_checkpoint",
]
