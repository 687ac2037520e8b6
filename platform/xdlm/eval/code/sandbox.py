"""Run one candidate program against its tests in a confined subprocess.

Each call gets a fresh temporary directory ``<root>/work`` as its working directory and starts
``python -I -S`` (the base interpreter: no site-packages, no project path, no ``PYTHON*``
variables) with a minimal environment (no credentials, ``HOME``/``TMPDIR`` inside ``work``).
The child confines itself before the candidate runs (``_child.py``: network namespace,
resource limits, a uid of its own when started as root, an audit hook on sockets, subprocesses
and paths). The parent enforces the wall clock and cleans up: the whole process group is
killed, and, when the candidate had its own uid, every process of that uid, so a fork bomb that
escaped its group with ``setsid`` still dies.

Outcomes (``CATEGORIES``): ``passed``; ``syntax_error`` (the candidate does not compile);
``wrong_answer`` (an ``AssertionError``, as the paper's MBPP evaluator counts it); ``timeout``
(wall clock or CPU limit); ``crash`` (any other exception, a memory error, a refused operation,
an exit before the tests finished, a fatal signal).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xdlm.config import require
from xdlm.eval.code._child import PRELOAD

PASSED, SYNTAX_ERROR, WRONG_ANSWER, TIMEOUT, CRASH = "passed", "syntax_error", "wrong_answer", "timeout", "crash"
CATEGORIES = (PASSED, SYNTAX_ERROR, WRONG_ANSWER, TIMEOUT, CRASH)

_CHILD = Path(__file__).with_name("_child.py")
# A candidate's uid when the parent is root: random in a range no account uses, so two
# sandboxes (threads or processes) practically never share one and RLIMIT_NPROC and the final
# kill-by-uid touch only this candidate's processes.
_UID_RANGE = (1 << 30, (1 << 31) - 2)
_KILL = next((p for p in ("/bin/kill", "/usr/bin/kill") if os.access(p, os.X_OK)), None)


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (not the candidate's fault)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-candidate limits. ``cpu_s`` defaults to the wall clock rounded up."""

    wall_s: float = 10.0
    cpu_s: int | None = None
    memory_mb: int = 1024
    nproc: int = 16
    fsize_mb: int = 16
    nofile: int = 64
    preload: tuple[str, ...] | None = None  # None: _child.PRELOAD

    def validate(self) -> SandboxLimits:
        require(self.wall_s > 0, "sandbox.wall_s", f"must be > 0 seconds, got {self.wall_s}")
        require(self.cpu_s is None or self.cpu_s >= 1, "sandbox.cpu_s", f"must be >= 1 second, got {self.cpu_s}")
        require(self.memory_mb >= 64, "sandbox.memory_mb", f"must be >= 64 (the interpreter needs it), got {self.memory_mb}")
        require(self.nproc >= 1, "sandbox.nproc", f"must be >= 1, got {self.nproc}")
        require(self.fsize_mb >= 1, "sandbox.fsize_mb", f"must be >= 1, got {self.fsize_mb}")
        require(self.nofile >= 16, "sandbox.nofile", f"must be >= 16 (the interpreter needs some), got {self.nofile}")
        return self

    def child_limits(self) -> dict:
        cpu = self.cpu_s if self.cpu_s is not None else max(1, int(-(-self.wall_s // 1)))
        return {"cpu_s": cpu, "memory_mb": self.memory_mb, "nproc": self.nproc,
                "fsize_mb": self.fsize_mb, "nofile": self.nofile}


@dataclass
class ExecutionResult:
    category: str
    detail: str
    duration_s: float
    output: str = ""
    """The tail of what the candidate printed (stdout and stderr together)."""
    isolation: dict = field(default_factory=dict)
    """How it was confined: ``network``, ``user``, ``guard`` (each in words)."""
    leftover_processes: int = 0
    """Processes of the candidate still alive after cleanup (0 unless cleanup failed)."""

    @property
    def passed(self) -> bool:
        return self.category == PASSED

    def to_dict(self) -> dict:
        return asdict(self)


def base_python() -> str:
    """The interpreter without the virtual environment (whose site-packages hold the project)."""
    exe = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(exe)


def run_candidate(code: str, tests: str, limits: SandboxLimits | None = None, *, guard: bool = True,
                  unshare_net: bool = True, python: str | None = None, tmp_root: str | None = None) -> ExecutionResult:
    """Run ``code`` then ``tests`` (one namespace) in a fresh confined child; classify the outcome.

    ``guard=False`` leaves out the audit hook, to test the layers under it on their own (the
    tests do; evaluation never should).
    """
    limits = (limits or SandboxLimits()).validate()
    root = Path(tempfile.mkdtemp(prefix="xdlm-sandbox-", dir=tmp_root))
    try:
        return _run_in(root, code, tests, limits, guard, unshare_net, python or base_python())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_in(root: Path, code: str, tests: str, limits: SandboxLimits, guard: bool, unshare_net: bool,
            python: str) -> ExecutionResult:
    is_root = os.geteuid() == 0
    uid = secrets.randbelow(_UID_RANGE[1] - _UID_RANGE[0]) + _UID_RANGE[0] if is_root else None
    # root: the directory is only traversable, so the candidate reaches work/ and nothing else;
    # the job file and the output files stay root's.
    os.chmod(root, 0o711)
    work = root / "work"
    work.mkdir(mode=0o700)
    if uid is not None:
        os.chown(work, uid, uid)
    nonce = secrets.token_hex(16)
    cgroup = _make_pids_cgroup(root.name, limits.nproc)
    job = {
        "nonce": nonce, "code": code, "tests": tests, "limits": limits.child_limits(),
        "extra_procs": 0 if uid is not None else _processes_of(os.getuid()),
        "cgroup_procs": str(cgroup / "cgroup.procs") if cgroup else None,
        "uid": uid, "workdir": str(work), "guard": guard, "unshare_net": unshare_net,
        "result_path": str(root / "result.jsonl"),
        "preload": list(limits.preload if limits.preload is not None else PRELOAD),
    }
    _write_private(root / "job.json", json.dumps(job))
    _write_private(root / "result.jsonl", "")
    shutil.copyfile(_CHILD, root / "bootstrap.py")
    os.chmod(root / "bootstrap.py", 0o600)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"}

    start = time.monotonic()
    with open(root / "output.txt", "wb") as out:
        try:
            proc = subprocess.Popen([python, "-I", "-S", "-B", str(root / "bootstrap.py"), str(root / "job.json")],
                                    cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        except OSError as error:
            raise SandboxError(f"cannot start {python}: {error}") from None
        timed_out = False
        try:
            status = proc.wait(timeout=limits.wall_s + 1.0)  # + interpreter start-up
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc.pid)
            if timed_out:
                status = proc.wait()
        leftover = _kill_uid(uid) if uid is not None else _kill_session(proc.pid)
        if cgroup is not None:
            leftover = max(leftover, _remove_cgroup(cgroup))
    duration = time.monotonic() - start
    output = _tail(root / "output.txt")
    report = _read_report(root / "result.jsonl", nonce)
    isolation = report.get("isolation", {}) if report else {}
    if report and report["category"] == "setup":
        report = None

    if timed_out:
        category, detail = TIMEOUT, f"wall clock over {limits.wall_s:g} s"
    elif report and report["category"] == "sandbox_error":
        raise SandboxError(f"sandbox setup failed: {report['detail']}")
    elif report:
        category, detail = report["category"], report["detail"]
    else:
        category, detail = _classify_status(status, limits)
    return ExecutionResult(category, detail, duration, output, isolation, leftover)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _classify_status(status: int, limits: SandboxLimits) -> tuple[str, str]:
    if status < 0:
        sig = -status
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        if sig == signal.SIGXCPU or sig == signal.SIGKILL:
            # The CPU limit sends SIGXCPU, then SIGKILL a second later; nothing else here kills.
            return TIMEOUT, f"killed by {name} (CPU limit {limits.child_limits()['cpu_s']} s)"
        if sig == signal.SIGXFSZ:
            return CRASH, f"killed by {name} (file size limit {limits.fsize_mb} MB)"
        return CRASH, f"killed by {name}"
    return CRASH, f"exited with status {status} before the tests finished"


def _read_report(path: Path, nonce: str) -> dict | None:
    """The child's verdict: its last line carrying the nonce; a lone ``setup`` line means it
    confined itself and then never finished (killed, or exited early)."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    found = None
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("nonce") == nonce:
            found = record
    return found


def _tail(path: Path, limit: int = 2000) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - limit))
        return f.read().decode("utf-8", "replace")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _own_pids_cgroup() -> Path | None:
    """This process's directory in the cgroup-v1 ``pids`` hierarchy, when it is mounted."""
    base = Path("/sys/fs/cgroup/pids")
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            own = base / path.lstrip("/")
            return own if (own / "cgroup.procs").exists() else None
    return None


def _make_pids_cgroup(name: str, limit: int) -> Path | None:
    """A child cgroup of our own with ``pids.max = limit``, or None where we may not make one.

    Made under our own cgroup, so any cap above us (a test's, a container's) still holds.
    """
    own = _own_pids_cgroup()
    if own is None or os.geteuid() != 0:
        return None
    path = own / name
    try:
        path.mkdir()
        (path / "pids.max").write_text(str(limit))
        return path
    except OSError:
        try:
            path.rmdir()
        except OSError:
            pass
        return None


def _remove_cgroup(path: Path) -> int:
    """Kill what is left in the cgroup and remove it; the number of processes still in it."""
    alive: list[str] = []
    for _ in range(40):
        try:
            alive = (path / "cgroup.procs").read_text().split()
        except OSError:
            return 0
        for pid in alive:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        try:
            path.rmdir()
            return 0
        except OSError:
            time.sleep(0.05)  # zombies not yet reaped keep the group busy
    return len(alive)


def _proc_entries():
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield entry.name


def _status_field(pid: str, key: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(key):
                    return line.split()[1]
    except OSError:
        return None
    return None


def processes_of_uid(uid: int) -> list[int]:
    """Live (not zombie) processes whose real uid is ``uid``, from ``/proc``."""
    found = []
    for pid in _proc_entries():
        if _status_field(pid, "Uid:") == str(uid) and _status_field(pid, "State:") != "Z":
            found.append(int(pid))
    return found


def _processes_of(uid: int) -> int:
    """Tasks (threads count against RLIMIT_NPROC) this uid already has."""
    total = 0
    for pid in _proc_entries():
        if _status_field(pid, "Uid:") == str(uid):
            try:
                total += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return total


def _kill_uid(uid: int) -> int:
    """SIGKILL every process of ``uid``; the number still alive afterwards.

    ``kill(-1)`` sent as that uid reaches all of its processes in one pass of the kernel over
    the task list, which forks cannot race, so a fork bomb dies at once.
    """
    for _ in range(10):
        if not processes_of_uid(uid):
            return 0
        if _KILL is not None:
            subprocess.run([_KILL, "-s", "KILL", "--", "-1"], user=uid, group=uid, extra_groups=[],
                           env={}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        else:
            for pid in processes_of_uid(uid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)
    return len(processes_of_uid(uid))


def _kill_session(sid: int) -> int:
    """Without a uid of its own, the candidate's processes are those of its session."""
    for _ in range(10):
        alive = [int(p) for p in _proc_entries() if _session_of(p) == sid and _status_field(p, "State:") != "Z"]
        if not alive:
            return 0
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    return len(alive)


def _session_of(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[3]) if len(fields) > 3 else None  # state ppid pgrp session
