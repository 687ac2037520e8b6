"""Checkpoint integrity on storage, locally and on S3 (a real S3 endpoint on loopback): a
truncated or corrupt checkpoint is never taken for a good one, the previous good one is used
with a warning naming both, and retention never deletes the newest complete checkpoint.

Before issue 10, ``latest_checkpoint`` picked the newest directory holding a ``state.pt``: each
test below failed on that code (a truncated file was loaded and crashed with EOFError, a corrupt
one had no fallback, Ray's retention could delete the last good one)."""

from __future__ import annotations

import logging

import boto3
import pytest
import torch

from xdlm.checkpoint import (
    MANIFEST,
    NoCompleteCheckpoint,
    latest_checkpoint,
    open_newest,
    prune,
    read_checkpoint,
    scan,
    verify_local,
    write_checkpoint,
)

NAMES = [f"checkpoint_2026-01-01_00-00-0{i}.000000" for i in range(1, 5)]


def make_run(run_dir, steps=(2, 4, 6)):
    for name, step in zip(NAMES, steps, strict=False):
        write_checkpoint(run_dir / name, {"counters": {"step": step}, "w": torch.full((1000,), float(step))},
                         "name: run\n")
    return run_dir


def test_truncated_state_is_invisible_and_the_previous_one_is_used(tmp_path, caplog):
    run = make_run(tmp_path / "run")
    state = run / NAMES[2] / "state.pt"
    state.write_bytes(state.read_bytes()[:100])  # a full disk: the copy stopped short
    complete, broken = scan(str(run))
    assert [c.step for c in complete] == [4, 2] and "truncated" in broken[NAMES[2]]
    with caplog.at_level(logging.WARNING):
        chosen = latest_checkpoint(run)
    assert chosen == run / NAMES[1] and read_checkpoint(chosen)["counters"]["step"] == 4
    assert NAMES[2] in caplog.text and NAMES[1] in caplog.text  # the warning names both


def test_corrupt_state_of_the_right_size_is_caught_by_its_checksum(tmp_path, caplog):
    run = make_run(tmp_path / "run")
    state = run / NAMES[2] / "state.pt"
    body = bytearray(state.read_bytes())
    body[len(body) // 2] ^= 0xFF  # one flipped byte: sizes agree, the checksum does not
    state.write_bytes(bytes(body))
    assert [c.step for c in scan(str(run))[0]] == [6, 4, 2]  # listing checks sizes only
    assert "checksum" in verify_local(run / NAMES[2])
    with caplog.at_level(logging.WARNING), open_newest(str(run)) as (directory, found):
        assert found.step == 4 and read_checkpoint(directory)["counters"]["step"] == 4
    assert "corrupted" in caplog.text


def test_a_directory_without_manifest_is_not_a_checkpoint_and_none_complete_is_an_error(tmp_path):
    run = make_run(tmp_path / "run", steps=(2,))
    (run / NAMES[0] / MANIFEST).unlink()
    assert scan(str(run)) == ([], {NAMES[0]: "no manifest (an incomplete write)"})
    with pytest.raises(NoCompleteCheckpoint, match="has checkpoints but none is complete"):
        latest_checkpoint(run)
    with open_newest(str(tmp_path / "never-trained")) as found:
        assert found is None  # no checkpoint at all: a fresh start is right


def test_prune_keeps_k_complete_and_never_the_newest(tmp_path):
    run = make_run(tmp_path / "run", steps=(2, 4, 6, 8))
    newest = run / NAMES[3] / "state.pt"
    newest.write_bytes(newest.read_bytes()[:10])  # the newest copy is torn
    gone = prune(str(run), keep=1)
    # the torn newest may still be being written: kept; the newest complete (step 6) kept
    assert sorted(p.rsplit("/", 1)[1] for p in gone) == NAMES[:2]
    assert sorted(p.name for p in run.iterdir()) == NAMES[2:]


def test_prune_deletes_an_old_incomplete_write_but_not_a_manifest_it_could_not_read(tmp_path):
    run = make_run(tmp_path / "run", steps=(2, 4, 6))
    (run / NAMES[0] / MANIFEST).unlink()  # an interrupted write: safe to remove
    (run / NAMES[1] / MANIFEST).write_text("{ not json")  # unreadable: may be a passing storage error
    complete, broken = scan(str(run))
    assert [c.step for c in complete] == [6] and broken[NAMES[1]].startswith("unreadable manifest")
    gone = prune(str(run), keep=1)
    assert [p.rsplit("/", 1)[1] for p in gone] == [NAMES[0]]
    assert sorted(p.name for p in run.iterdir()) == NAMES[1:3]


def test_s3_scan_and_restore(s3_endpoint, tmp_path):
    run = make_run(tmp_path / "run")
    s3 = boto3.client("s3")
    for path in run.rglob("*"):
        if path.is_file():
            s3.put_object(Bucket=s3_endpoint["bucket"], Key=f"integrity/{path.relative_to(run)}", Body=path.read_bytes())
    key = f"integrity/{NAMES[2]}/state.pt"
    s3.put_object(Bucket=s3_endpoint["bucket"], Key=key, Body=b"torn")
    uri = f"s3://{s3_endpoint['bucket']}/integrity"
    complete, broken = scan(uri)
    assert [c.step for c in complete] == [4, 2] and NAMES[2] in broken
    with open_newest(uri) as (directory, found):
        assert found.uri == f"{uri}/{NAMES[1]}" and read_checkpoint(directory)["counters"]["step"] == 4
