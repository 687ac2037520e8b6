"""The records a ``RunLogger`` queues, and the MLflow request that delivers each kind.

A record is a plain tuple whose first item names its kind: building one costs a logging call a
single allocation, and it survives the round trip through the JSONL spill file unchanged.

    ("metric", key, value, timestamp_ms, step)
    ("param", key, value)
    ("tag", key, value)
    ("text", text, artifact_file)       # an artifact written from memory
    ("file", local_path, artifact_path) # an artifact uploaded from disk
    ("table", columns, artifact_file)   # rows appended to an MLflow table ({column: [values]})
    ("inputs", datasets)                # MLflow dataset inputs (``dataset_input`` dicts)
    ("end", status, end_time_ms)        # ends the run

Metrics, params and tags travel together in ``log_batch`` requests; every other kind is a
request of its own.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

BATCHABLE_KINDS = ("metric", "param", "tag")


def now_ms() -> int:
    """A timestamp as MLflow stores them (milliseconds since the epoch)."""
    return int(time.time() * 1000)


def send_records(client: MlflowClient, run_id: str, records: list[tuple]) -> None:
    """Deliver ``records`` in one request: batchable ones of any mix, else exactly one record.

    Raises whatever MLflow raises; the caller decides between retrying and dropping.
    """
    kind = records[0][0]
    if kind in BATCHABLE_KINDS:
        metrics, params, tags = [], [], []
        for record in records:
            if record[0] == "metric":
                metrics.append(Metric(record[1], record[2], record[3], record[4]))
            elif record[0] == "param":
                params.append(Param(record[1], record[2]))
            else:
                tags.append(RunTag(record[1], record[2]))
        client.log_batch(run_id, metrics, params, tags, synchronous=True)
    elif kind == "text":
        client.log_text(run_id, records[0][1], records[0][2])
    elif kind == "file":
        _, local_path, artifact_path = records[0]
        if not os.path.exists(local_path):
            raise FileNotFoundError(f"artifact {local_path} no longer exists")
        client.log_artifact(run_id, local_path, artifact_path)
    elif kind == "table":
        # MLflow appends to a table that exists (and records it in mlflow.loggedArtifacts, which
        # the UI's evaluation view reads)
        client.log_table(run_id, data=dict(records[0][1]), artifact_file=records[0][2])
    elif kind == "inputs":
        client.log_inputs(run_id, datasets=[to_dataset_input(d) for d in records[0][1]])
    elif kind == "end":
        client.set_terminated(run_id, status=records[0][1], end_time=records[0][2])
    else:
        raise ValueError(f"unknown record kind {kind!r}")


def dataset_input(name: str, digest: str, source: str, source_type: str, profile: Mapping[str, Any],
                  context: str) -> dict[str, Any]:
    """One MLflow dataset input as a plain (spillable) dict; ``context`` is MLflow's
    ``mlflow.data.context`` tag (``training``, ``evaluation``), shown beside it in the UI."""
    return {"name": name, "digest": digest[:36], "source": source, "source_type": source_type,
            "profile": json.dumps(dict(profile), sort_keys=True, default=str), "context": context}


def to_dataset_input(d: Mapping[str, Any]) -> DatasetInput:
    dataset = Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"], source=d["source"],
                      profile=d["profile"])
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", d["context"])])


def describe_record(record: tuple) -> str:
    """A short human name for a record in warnings (its key or artifact, never its value)."""
    kind = record[0]
    if kind in BATCHABLE_KINDS:
        return f"{kind} {record[1]!r}"
    if kind == "text":
        return f"artifact {record[2]!r}"
    if kind == "file":
        return f"artifact {record[1]!r}"
    if kind == "table":
        return f"table {record[2]!r}"
    if kind == "inputs":
        return f"dataset inputs {[d.get('name') for d in record[1]]}"
    return f"{kind} record"
