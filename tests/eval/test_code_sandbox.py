"""The sandbox against ordinary and hostile candidates: each is contained and classified.

The fork bombs run under an outer cap that does not depend on the sandbox: this test process is
moved into a pids cgroup of its own (where the machine allows it; else a watchdog kills any
process in the sandbox's uid range), so a containment that fails still cannot exhaust the
machine's process table.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from xdlm.eval.code import sandbox
from xdlm.eval.code._child import PRELOAD
from xdlm.eval.code.sandbox import SandboxLimits, processes_of_uid, run_candidate

REPO = Path(__file__).resolve().parents[2]
FAST = SandboxLimits(wall_s=1.0, nproc=8)
WITH_SOCKET = SandboxLimits(wall_s=1.0, nproc=8, preload=PRELOAD + ("socket",))
ROOT = os.geteuid() == 0


def netns_available() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def sandbox_uids() -> list[int]:
    """Live processes whose uid lies in the sandbox's range (none outside a running sandbox)."""
    low, high = sandbox._UID_RANGE
    found = []
    for pid in sandbox._proc_entries():
        uid = sandbox._status_field(pid, "Uid:")
        if uid and low <= int(uid) <= high and sandbox._status_field(pid, "State:") != "Z":
            found.append(int(pid))
    return found


def uid_of(result) -> int | None:
    user = result.isolation.get("user", "")
    return int(user.split()[1]) if user.startswith("uid ") and "not root" not in user else None


@pytest.fixture
def outer_process_cap():
    """Cap this process and its descendants at (its tasks now + 64) while the test runs."""
    own = sandbox._own_pids_cgroup()
    cap = own / f"xdlm-test-cap-{os.getpid()}" if own is not None and ROOT else None
    if cap is not None:
        try:
            cap.mkdir()
            tasks = len(os.listdir("/proc/self/task"))
            (cap / "pids.max").write_text(str(tasks + 64))
            (cap / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            cap = None
    stop = threading.Event()
    watchdog = None
    if cap is None:  # no cgroup here: a watchdog on the sandbox's uid range instead
        def watch():
            while not stop.is_set():
                pids = sandbox_uids()
                if len(pids) > 64:
                    for pid in pids:
                        try:
                            os.kill(pid, 9)
                        except ProcessLookupError:
                            pass
                time.sleep(0.01)
        watchdog = threading.Thread(target=watch, daemon=True)
        watchdog.start()
    try:
        yield cap
    finally:
        stop.set()
        if watchdog is not None:
            watchdog.join()
        if cap is not None:
            (own / "cgroup.procs").write_text(str(os.getpid()))
            for _ in range(50):
                try:
                    cap.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


def test_correct_wrong_and_syntax_error_are_told_apart():
    code = "def add_one(x):\n    return x + 1\n"
    ok = run_candidate(code, "assert add_one(1) == 2\nassert add_one(-1) == 0\n", FAST)
    assert ok.category == "passed" and ok.passed and ok.detail == ""
    wrong = run_candidate(code, "assert add_one(1) == 2\nassert add_one(2) == 4\n", FAST)
    assert wrong.category == "wrong_answer" and not wrong.passed
    assert "<tests> line 2: assert add_one(2) == 4" in wrong.detail
    broken = run_candidate("def add_one(x)\n    return x + 1\n", "assert add_one(1) == 2\n", FAST)
    assert broken.category == "syntax_error" and "line 1" in broken.detail
    other = run_candidate(code, "assert add_one('a') == 2\n", FAST)
    assert other.category == "crash" and other.detail.startswith("TypeError")


def test_exit_before_the_tests_is_not_a_pass():
    for code in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n"):
        result = run_candidate(code, "assert False\n", FAST)
        assert result.category == "crash", (code, result)


def test_infinite_loop_times_out_fast():
    start = time.monotonic()
    result = run_candidate("while True:\n    pass\n", "", FAST)
    assert result.category == "timeout"
    assert time.monotonic() - start < FAST.wall_s + 3.0
    assert result.leftover_processes == 0


def test_memory_hog_is_a_memory_error_not_a_dead_machine():
    result = run_candidate("hog = bytearray(10 * 1024 ** 3)\n", "", FAST)
    assert result.category == "crash" and "MemoryError" in result.detail


@pytest.mark.parametrize("path", [str(REPO / "README.md"), "/etc/passwd"])
def test_reading_outside_the_working_directory_is_refused(path):
    assert Path(path).is_file()
    result = run_candidate(f"print(open({path!r}).read())\n", "", FAST)
    assert result.category == "crash" and "refused" in result.detail
    assert result.output.strip() == ""
    listing = run_candidate(f"import os\nprint(os.listdir({str(REPO)!r}))\n", "", FAST)
    assert listing.category == "crash" and "refused" in listing.detail


def test_writing_outside_is_refused_and_inside_works(tmp_path):
    target = Path("/tmp") / f"xdlm-escape-{uuid.uuid4().hex}"
    result = run_candidate(f"open({str(target)!r}, 'w').write('x')\n", "", FAST)
    assert result.category == "crash" and "refused" in result.detail
    assert not target.exists()
    inside = run_candidate("open('scratch.txt', 'w').write('hi')\nassert open('scratch.txt').read() == 'hi'\n", "", FAST)
    assert inside.category == "passed"


def test_socket_to_loopback_is_refused_by_each_layer():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.2)
        port = server.getsockname()[1]
        code = f"import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('127.0.0.1', {port}))\n"
        guarded = run_candidate(code, "", WITH_SOCKET)
        assert guarded.category == "crash" and "socket" in guarded.detail and "refused" in guarded.detail
        if netns_available():  # the layer under the audit hook: a network namespace of its own
            bare = run_candidate(code, "", WITH_SOCKET, guard=False)
            assert bare.isolation["network"].startswith("netns")
            assert bare.category == "crash" and "unreachable" in bare.detail.lower()
        with pytest.raises(socket.timeout):
            server.accept()  # nothing ever reached the listener


def test_no_project_paths_and_no_credentials_inside():
    os.environ["XDLM_TEST_SECRET"] = "hunter2"
    try:
        code = ("import os, sys\n"
                "assert 'XDLM_TEST_SECRET' not in os.environ, sorted(os.environ)\n"
                "assert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_ALL', 'PYTHONHASHSEED', 'LC_CTYPE'}, sorted(os.environ)\n"
                f"assert not any(p.startswith({str(REPO)!r}) for p in sys.path), sys.path\n"
                "try:\n    import xdlm\nexcept ImportError:\n    pass\nelse:\n    raise AssertionError('xdlm importable')\n")
        result = run_candidate(code, "", FAST)
    finally:
        del os.environ["XDLM_TEST_SECRET"]
    assert result.category == "passed", result


def test_output_flood_hits_the_file_size_limit():
    result = run_candidate("while True:\n    print('x' * 100000)\n", "", SandboxLimits(wall_s=2.0, fsize_mb=1))
    assert result.category == "crash" and ("File too large" in result.detail or "file size" in result.detail)


@pytest.mark.skipif(not ROOT, reason="a uid of its own needs root")
def test_fork_bombs_are_contained_and_leave_nothing(outer_process_cap):
    bomb = "import os\nwhile True:\n    os.fork()\n"
    guarded = run_candidate(bomb, "", FAST)
    assert guarded.category == "crash" and "os.fork refused" in guarded.detail

    # Below the hook: RLIMIT_NPROC on a uid of its own (and a pids cgroup where there is one).
    for code in (bomb, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"):
        start = time.monotonic()
        result = run_candidate(code, "", FAST, guard=False)
        assert result.category in ("crash", "timeout"), result
        assert time.monotonic() - start < FAST.wall_s + 4.0
        assert result.leftover_processes == 0
        uid = uid_of(result)
        assert uid is not None and processes_of_uid(uid) == []
        assert sandbox_uids() == []
    assert not list(Path("/sys/fs/cgroup/pids").rglob("xdlm-sandbox-*"))


def test_isolation_is_reported():
    result = run_candidate("pass\n", "", FAST)
    assert result.isolation["guard"] == "audit hook"
    if netns_available():
        assert result.isolation["network"].startswith("netns")
    if ROOT:
        assert result.isolation["user"].startswith("uid ") and uid_of(result) >= sandbox._UID_RANGE[0]
