"""Which Ray Train run a start of a trial continues, from the checkpoint Tune hands it: the
decision that makes retries resume, PBT exploits start fresh segments, and a restored sweep
pick up the segment it was in."""

from __future__ import annotations

from dataclasses import asdict

from xdlm.checkpoint import write_checkpoint
from xdlm.tune import layout
from xdlm.tune.channel import Pointer
from xdlm.tune.trainable import choose_segment, donor_checkpoint


def add_segment(directory, trial_id, segment, params, init_from=None):
    run_dir = directory / layout.TRIALS_DIR / layout.trial_run_name("s", trial_id, segment)
    layout.write_trial_info(run_dir, {"trial_id": trial_id, "segment": segment, "params": params,
                                      "init_from": init_from})
    return run_dir


def test_segments_follow_the_checkpoint_tune_hands_back(tmp_path):
    lr1, lr2 = {"optim.lr": 1e-3}, {"optim.lr": 1.2e-3}
    first = choose_segment(tmp_path, "s", "t1", lr1, None)
    assert (first.index, first.run_name, first.init_from) == (0, "s-t1", None)
    add_segment(tmp_path, "t1", 0, lr1)

    # a retry / paused trial resumed: its own pointer names the run to continue
    own = Pointer("t1", "s-t1", "/ckpt/a", 4)
    assert choose_segment(tmp_path, "s", "t1", lr1, own).run_name == "s-t1"

    # PBT exploit: another trial's checkpoint and a mutated config start segment 1 from it
    donor = Pointer("t2", "s-t2", "/ckpt/b", 4)
    exploit = choose_segment(tmp_path, "s", "t1", lr2, donor)
    assert (exploit.index, exploit.run_name, exploit.init_from) == (1, "s-t1-pbt1", asdict(donor))
    add_segment(tmp_path, "t1", 1, lr2, asdict(donor))

    # the same exploit restarted before its first checkpoint (a retry, a restored sweep): resume it
    again = choose_segment(tmp_path, "s", "t1", lr2, donor)
    assert (again.index, again.run_name) == (1, "s-t1-pbt1")
    # the same donor checkpoint handed out again with a new mutation: a new segment
    later = choose_segment(tmp_path, "s", "t1", {"optim.lr": 0.8e-3}, donor)
    assert (later.index, later.run_name) == (2, "s-t1-pbt2")
    # its own pointer from inside segment 1
    inside = choose_segment(tmp_path, "s", "t1", lr2, Pointer("t1", "s-t1-pbt1", "/ckpt/c", 6))
    assert (inside.index, inside.run_name, inside.init_from) == (1, "s-t1-pbt1", asdict(donor))

    segments = layout.trial_segments(tmp_path)
    assert [d.name for d, _ in segments["t1"]] == ["s-t1", "s-t1-pbt1"]


def test_a_donor_checkpoint_deleted_by_retention_falls_back_to_its_runs_latest(tmp_path):
    run_dir = tmp_path / layout.TRIALS_DIR / "s-t2"
    for step, name in enumerate(("checkpoint_2026-01-01_00-00-02", "checkpoint_2026-01-01_00-00-03"), start=4):
        write_checkpoint(run_dir / name, {"counters": {"step": step}}, "name: s-t2\n")
    kept = asdict(Pointer("t2", "s-t2", str(run_dir / "checkpoint_2026-01-01_00-00-02"), 4))
    assert donor_checkpoint(tmp_path, kept) == kept["checkpoint"]
    gone = asdict(Pointer("t2", "s-t2", str(run_dir / "checkpoint_2026-01-01_00-00-01"), 2))
    assert donor_checkpoint(tmp_path, gone) == str(run_dir / "checkpoint_2026-01-01_00-00-03")
