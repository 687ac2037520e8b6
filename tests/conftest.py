"""Session-wide fixtures: one local Ray for every test that needs it, offline switches."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray shared by all tests (starting one costs ~5 s and ~2 GB)."""
    import ray

    from xdlm.cluster.ray_session import ensure_ray

    ensure_ray(num_cpus=2, object_store_memory_mb=256)
    yield ray
    ray.shutdown()
