"""What the machine, the processes and the checkout are doing: CPU seconds, memory, open-file
limits, the machine's description and the source version a result was measured on."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def cpu_seconds_self() -> float:
    """utime+stime of this process (all its threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cpu_seconds_pid(pid: int | None, tid: int | None = None) -> float | None:
    """utime+stime of a process (all its threads), or of one of its threads, or None."""
    if pid is None:
        return None
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        raw = Path(path).read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def server_cpu(pid: int | None) -> tuple[float, float] | None:
    """(whole process, main thread = the event loop) CPU seconds of a server."""
    total = cpu_seconds_pid(pid)
    main = cpu_seconds_pid(pid, pid)
    if total is None or main is None:
        return None
    return total, main


def machine_busy() -> float | None:
    """CPU seconds all cores spent not idle, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    v = [int(x) for x in first[1:9]]
    busy = sum(v) - v[3] - v[4]  # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int | None, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process, in KiB."""
    return _status_kib(pid, "VmRSS:")


def peak_rss_kib(pid: int | None) -> int | None:
    """VmHWM (the peak of VmRSS) of a process, in KiB."""
    return _status_kib(pid, "VmHWM:")


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def nofile_of(pid: int) -> tuple[int, int] | None:
    """(soft, hard) RLIMIT_NOFILE of a running process."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                parts = line.split()
                return int(parts[3]), int(parts[4])
    except (OSError, ValueError, IndexError):
        pass
    return None


def fd_count(pid: int) -> int | None:
    """How many file descriptors a process holds."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info(loop: str | None = None) -> dict[str, Any]:
    """nproc, CPU model, Python and platform; with ``loop``, the event loop's name too."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if loop is not None:
        info["loop"] = loop
    return info


def source_version() -> str | None:
    """Commit of this checkout, with "+dirty" when src/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def device_room(
    pid: int, requested: int, fd_margin: int, own: tuple[int, int]
) -> tuple[int, str | None]:
    """How many device connections server ``pid`` can hold next to the descriptors it holds
    already plus ``fd_margin`` spare ones (its RLIMIT_NOFILE, or ``own`` limits when it cannot
    be read): ``requested`` or fewer, and a note saying why when fewer."""
    limit = nofile_of(pid) or own
    idle_fds = fd_count(pid) or 0
    room = limit[0] - idle_fds - fd_margin
    if requested <= room:
        return requested, None
    n = max(1, room)
    return n, (
        f"capped from {requested:,} to {n:,} devices: the server's RLIMIT_NOFILE is "
        f"{limit[0]} (hard {limit[1]}, which this user cannot raise: prlimit/setrlimit need "
        f"CAP_SYS_RESOURCE), it holds {idle_fds} descriptors at idle and keeps {fd_margin} "
        "free for database files, the HTTP requests of the run and connection churn"
    )
