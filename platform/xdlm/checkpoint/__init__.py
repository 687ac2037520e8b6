"""A run's files on disk: checkpoints (written atomically, found and loaded) and the run record.

Below both ``train`` (which writes checkpoints) and ``eval`` / ``tune`` (which read them).
"""

from xdlm.checkpoint.files import (
    FAILURE_RECORD,
    JOB_FILE,
    RUN_RECORD,
    STATE_FILE,
    read_checkpoint,
    write_checkpoint,
)
from xdlm.checkpoint.manifest import MANIFEST, verify_local, write_manifest
from xdlm.checkpoint.restore import (
    NoCompleteCheckpoint,
    has_checkpoint,
    latest_checkpoint,
    load_model_from_run,
    open_checkpoint,
    open_newest,
)
from xdlm.checkpoint.store import StoredCheckpoint, prune, scan

__all__ = [
    "FAILURE_RECORD", "JOB_FILE", "MANIFEST", "RUN_RECORD", "STATE_FILE", "NoCompleteCheckpoint", "StoredCheckpoint",
    "has_checkpoint", "latest_checkpoint", "load_model_from_run", "open_checkpoint", "open_newest", "prune",
    "read_checkpoint", "scan", "verify_local", "write_checkpoint", "write_manifest",
]
