"""The memory of the running stack's services, from a /proc snapshot (Linux), for the operation benchmark.

A service is a root pid (a pid file of <state>/run/, or the PostgreSQL postmaster) with the processes
of its session or process group and all their descendants; its memory is their summed VmRSS, and
PSS (smaps_rollup) over all services counts shared pages once. The grouping is pure and unit-tested
(tests/unit/bench/test_operate.py, through cryptoflow_bench.operate, which re-exports these names).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    ppid: int
    pgid: int
    sid: int
    rss_kb: int = 0
    pss_kb: int = 0


def parse_stat(text: str) -> tuple[int, int, int]:
    """(ppid, pgid, session) from a /proc/<pid>/stat line (the command may hold spaces and ')')."""
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[2]), int(fields[3])


def group_processes(procs: Mapping[int, Proc], roots: Mapping[str, int]) -> dict[str, set[int]]:
    """The processes of each service: its root pid, the processes whose session or process group is
    the root's, and all their descendants. A process claimed by an earlier service stays with it."""
    children: dict[int, list[int]] = {}
    for pid, p in procs.items():
        children.setdefault(p.ppid, []).append(pid)
    claimed: set[int] = set()
    out: dict[str, set[int]] = {}
    for name, root in roots.items():
        members = {
            pid for pid, p in procs.items() if pid == root or p.sid == root or p.pgid == root
        }
        todo = list(members)
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in members:
                    members.add(child)
                    todo.append(child)
        out[name] = members - claimed
        claimed |= out[name]
    return out


def rss_by_service(
    procs: Mapping[int, Proc], roots: Mapping[str, int]
) -> tuple[dict[str, int], int]:
    """({service: summed VmRSS kB}, total PSS kB over all services' processes) of a /proc snapshot."""
    groups = group_processes(procs, roots)
    rss = {name: sum(procs[pid].rss_kb for pid in pids) for name, pids in groups.items()}
    pss = sum(procs[pid].pss_kb for pids in groups.values() for pid in pids)
    return rss, pss


def read_proc(proc: Path = Path("/proc")) -> dict[int, Proc]:
    """A snapshot of every process: ppid, pgid, session (memory is filled in by `with_memory`)."""
    out: dict[int, Proc] = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid, pgid, sid = parse_stat((d / "stat").read_text())
        except (OSError, ValueError):
            continue
        out[int(d.name)] = Proc(ppid, pgid, sid)
    return out


def _kb_field(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def with_memory(
    procs: dict[int, Proc], pids: Iterable[int], with_pss: bool = True, proc: Path = Path("/proc")
) -> dict[int, Proc]:
    """The snapshot with VmRSS (and PSS from smaps_rollup) filled in for `pids`."""
    out = dict(procs)
    for pid in pids:
        p = out[pid]
        rss = _kb_field(proc / str(pid) / "status", "VmRSS:")
        pss = _kb_field(proc / str(pid) / "smaps_rollup", "Pss:") if with_pss else 0
        out[pid] = Proc(p.ppid, p.pgid, p.sid, rss, pss)
    return out


def mem_available_kb() -> int | None:
    return _kb_field(Path("/proc/meminfo"), "MemAvailable:") or None
