"""Training: the per-worker loop (``loop``), its parts (optimizer, EMA, checkpoints, loss step)
and the Ray Train driver (``launch``)."""
