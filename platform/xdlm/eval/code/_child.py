"""The sandboxed child: set up its own confinement, then run one candidate against its tests.

``sandbox.run_candidate`` copies this file into a fresh root-only directory and starts it with
``python -I -S bootstrap.py CONFIG``. It must stay standard-library only and self-contained: it
runs under the base interpreter with no site-packages and no project path.

Order matters, because every step below needs a privilege the next one gives up:

1. read the job (candidate, tests, limits) from the root-only config file and open the result
   file, both before the privilege drop, so the candidate can read neither;
2. import the standard-library modules candidates use (``PRELOAD``): once the uid changes, the
   interpreter's library may sit below a directory it cannot enter (``/root`` is 0700 here);
3. join the pids cgroup the parent made for it, when there is one (a second cap on processes),
   and leave the network: a new network namespace (only a loopback that is down);
4. set the resource limits (CPU time, address space, processes, file size, open files, core);
5. as root, become a uid of its own (no supplementary groups): RLIMIT_NPROC then counts only
   this candidate's processes, and the parent can kill every process of that uid afterwards;
6. install an audit hook that refuses sockets, subprocesses, ``ctypes`` and any path outside
   the working directory (reads of the standard library excepted);
7. run the candidate, then the tests, and write one result line (nonce, category, detail).

The audit hook is one layer, not the wall: the namespace, the uid and the limits hold even
against code that gets past it. The threat model is model-written code that loops, allocates,
forks, deletes or connects by accident, not an adversary forging results.
"""

import json
import os
import sys

PRELOAD = (
    "abc", "array", "bisect", "calendar", "cmath", "collections", "collections.abc", "copy",
    "dataclasses", "datetime", "decimal", "enum", "fractions", "functools", "hashlib", "heapq",
    "itertools", "json", "math", "numbers", "operator", "random", "re", "statistics", "string",
    "struct", "textwrap", "time", "typing", "unicodedata",
)
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
_REFUSED_EVENTS = ("socket.", "subprocess.", "ctypes.", "os.exec", "os.posix_spawn", "os.spawn",
                   "os.system", "os.kill", "os.killpg", "os.fork", "os.forkpty", "pty.",
                   "urllib.", "http.", "ftplib.", "smtplib.", "poplib.", "imaplib.", "nntplib.",
                   "telnetlib.", "webbrowser.", "resource.setrlimit", "resource.prlimit",
                   "sys.addaudithook", "os.symlink", "os.link", "os.startfile")
_PATH_EVENTS = ("os.listdir", "os.scandir", "os.chdir", "os.chflags", "os.chmod", "os.chown",
                "os.mkdir", "os.remove", "os.rename", "os.rmdir", "os.truncate", "os.utime",
                "os.listxattr", "os.getxattr", "os.setxattr", "os.removexattr", "os.fwalk",
                "glob.glob", "shutil.", "tempfile.")
_READ_ONLY_EVENTS = ("os.listdir", "os.scandir", "os.listxattr", "os.getxattr", "glob.glob")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def leave_network(root: bool) -> str:
    """Enter a fresh network namespace; return how the network is cut off."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    flags = CLONE_NEWNET if root else CLONE_NEWUSER | CLONE_NEWNET
    if libc.unshare(flags) == 0:
        return "netns" if root else "netns (user namespace)"
    return f"audit hook only (unshare: {os.strerror(ctypes.get_errno())})"


def set_limits(limits: dict, extra_procs: int) -> None:
    import resource

    mb = 1024 * 1024
    cpu = int(limits["cpu_s"])
    pairs = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL one second later
        resource.RLIMIT_AS: (limits["memory_mb"] * mb,) * 2,
        resource.RLIMIT_NPROC: (limits["nproc"] + extra_procs,) * 2,
        resource.RLIMIT_FSIZE: (limits["fsize_mb"] * mb,) * 2,
        resource.RLIMIT_NOFILE: (limits["nofile"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, value in pairs.items():
        resource.setrlimit(which, value)


def drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError(f"still uid {os.getuid()} after setresuid({uid})")


def install_guard(workdir: str, read_roots: list) -> None:
    """Refuse what a candidate has no business doing; see the module docstring for why."""
    realpath, join, fspath = os.path.realpath, os.path.join, os.fspath

    def inside(path, roots) -> bool:
        try:
            p = fspath(path)
        except TypeError:
            return True  # a file descriptor: opened earlier under this same hook
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        p = realpath(join(workdir, p))
        return any(p == r or p.startswith(r + os.sep) for r in roots)

    write_roots = [workdir]
    readable = [workdir] + read_roots

    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            if not inside(path, write_roots if writes else readable):
                raise PermissionError(f"sandbox: open({path!r}) outside the working directory refused")
        elif event.startswith(_REFUSED_EVENTS):
            raise PermissionError(f"sandbox: {event} refused")
        elif event.startswith(_PATH_EVENTS):
            roots = readable if event.startswith(_READ_ONLY_EVENTS) else write_roots
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg, roots):
                    raise PermissionError(f"sandbox: {event}({arg!r}) outside the working directory refused")

    sys.addaudithook(hook)


def failure_line(error: BaseException, sources: dict) -> str:
    """``Type: message``, plus the failing line when it is in the candidate or the tests."""
    text = f"{type(error).__name__}: {error}".strip().rstrip(":")
    tb, where = error.__traceback__, None
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name in sources:
            where = (name, tb.tb_lineno)
        tb = tb.tb_next
    if where:
        lines = sources[where[0]].splitlines()
        line = lines[where[1] - 1].strip() if 0 < where[1] <= len(lines) else ""
        text += f" (at {where[0]} line {where[1]}: {line[:200]})"
    return text[:500]


def run(code: str, tests: str, memory_mb: int):
    """(category, detail) of running ``code`` then ``tests`` in one namespace."""
    try:
        compiled = compile(code, "<candidate>", "exec")
    except (SyntaxError, ValueError) as error:
        where = f"line {getattr(error, 'lineno', '?')}: " if isinstance(error, SyntaxError) else ""
        return "syntax_error", f"{type(error).__name__}: {where}{getattr(error, 'msg', error)}"[:500]
    sources = {"<candidate>": code, "<tests>": tests}
    namespace = {"__name__": "__candidate__", "__builtins__": __builtins__}
    try:
        exec(compiled, namespace)
        exec(compile(tests, "<tests>", "exec"), namespace)
    except AssertionError as error:
        return "wrong_answer", failure_line(error, sources)
    except MemoryError:
        return "crash", f"MemoryError (memory limit {memory_mb} MB)"
    except SystemExit as error:
        return "crash", f"SystemExit({error.code!r}) before the tests finished"
    except BaseException as error:  # noqa: BLE001 - every other way out is a crash of the candidate
        return "crash", failure_line(error, sources)
    return "passed", ""


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    result = os.open(job["result_path"], os.O_WRONLY | os.O_APPEND)
    me = os.getpid()

    def report(category: str, detail: str, isolation: dict) -> None:
        if os.getpid() == me:  # forked copies of the candidate never speak for it
            line = json.dumps({"nonce": job["nonce"], "category": category, "detail": detail,
                               "isolation": isolation})
            os.write(result, line.encode() + b"\n")

    isolation = {}
    try:
        for name in job["preload"]:
            try:
                __import__(name)
            except ImportError:
                pass
        root = os.geteuid() == 0
        isolation["processes"] = f"RLIMIT_NPROC {job['limits']['nproc']}"
        if job["cgroup_procs"]:
            with open(job["cgroup_procs"], "w") as f:
                f.write(str(os.getpid()))
            isolation["processes"] += f" + pids cgroup (max {job['limits']['nproc']})"
        isolation["network"] = leave_network(root) if job["unshare_net"] else "audit hook only (not requested)"
        set_limits(job["limits"], job["extra_procs"])
        if job["uid"] is not None:
            drop_privileges(job["uid"])
            isolation["user"] = f"uid {job['uid']}"
        else:
            isolation["user"] = f"uid {os.getuid()} (not root: no uid of its own)"
        os.chdir(job["workdir"])
        if job["guard"]:
            read_roots = sorted({os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)})
            install_guard(os.path.realpath(job["workdir"]), read_roots)
        isolation["guard"] = "audit hook" if job["guard"] else "off"
        report("setup", "", isolation)
    except BaseException as error:  # noqa: BLE001
        report("sandbox_error", f"{type(error).__name__}: {error}", isolation)
        os._exit(3)
    category, detail = run(job["code"], job["tests"], job["limits"]["memory_mb"])
    report(category, detail, isolation)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: atexit hooks and finalizers belong to the candidate


if __name__ == "__main__":
    main()
