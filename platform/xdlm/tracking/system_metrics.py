"""System metrics (CPU, memory, disk, network, GPU where present) of a run, sampled by MLflow's
own ``SystemMetricsMonitor`` and delivered through the run's ``RunLogger``.

MLflow's monitor logs with a synchronous client of its own; here its samples go through the
``RunLogger`` instead, so a tracking outage delays them like every other record and never
reaches training. The monitor samples in a daemon thread; ``stop`` never waits longer than its
timeout, and what was sampled since the last publish is published before stopping. The names
are MLflow's: ``system/cpu_utilization_percentage``, ``system/system_memory_usage_megabytes``,
``system/gpu_0_utilization_percentage`` (GPU metrics need ``nvidia-ml-py``; without it MLflow
logs a warning and samples the rest), and the run page's "System metrics" tab charts them.
"""

from __future__ import annotations

import logging

from xdlm.tracking.logger import RunLogger

log = logging.getLogger(__name__)

PREFIX = "system/"


class SystemMetrics:
    """Start with ``start()`` (returns False when the monitor could not start, never raises),
    end with ``stop()``. ``resume=True`` continues the step numbering of the run's existing
    system metrics (a restarted worker)."""

    def __init__(self, logger: RunLogger, tracking_uri: str, run_id: str, interval_s: float,
                 resume: bool = True) -> None:
        self.logger = logger
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.interval_s = interval_s
        self.resume = resume
        self._monitor = None

    def start(self) -> bool:
        if self.interval_s <= 0:
            return False
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            logger = self.logger

            class ThroughRunLogger(SystemMetricsMonitor):
                def publish_metrics(self, metrics):
                    prefix = PREFIX + (f"{self.node_id}/" if self.node_id else "")
                    logger.log_metrics({prefix + k: v for k, v in metrics.items()}, self._logging_step)
                    self._logging_step += 1
                    for monitor in self.monitors:
                        monitor.clear_metrics()

            self._monitor = ThroughRunLogger(self.run_id, sampling_interval=self.interval_s,
                                             resume_logging=self.resume, tracking_uri=self.tracking_uri)
            self._monitor.start()
            return self._monitor._process is not None
        except Exception as error:  # a monitor is a courtesy: never fail the run for it
            log.warning("system metrics not recorded: %s", error)
            self._monitor = None
            return False

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sampling and publish what was sampled since the last publish (a run shorter than
        one interval still gets one point)."""
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        try:
            monitor._shutdown_event.set()
            thread = monitor._process
            if thread is not None:
                thread.join(timeout_s)
                if thread.is_alive():
                    return  # stuck in a request: leave the daemon thread, publish nothing more
            if any(m.metrics for m in monitor.monitors):
                monitor.publish_metrics(monitor.aggregate_metrics())
        except Exception as error:
            log.warning("system metrics: stopping the monitor failed: %s", error)
