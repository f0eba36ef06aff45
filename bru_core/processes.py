"""Which process wrote a record, and whether it still runs: what lets a lock or a hold left
by a killed process be taken over at once instead of after its lease.

A pid alone says little: containers on one host each count pids from 1, and a pid is
reused once its process is gone. So a process is named by three things: the machine (the
kernel's boot and the pid namespace), its pid, and its start time. Only the standard
library here: the campaign lock and the MLflow holds both use it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class Identity(NamedTuple):
    """One process, for good: where its pid means something, the pid, when it started."""

    machine: str | None
    pid: int
    started: str | None


def this_machine() -> str | None:
    """What makes two processes' pids comparable: one kernel boot and one pid namespace
    (containers on one host each have their own); None where /proc does not say."""
    try:
        return f"{Path('/proc/sys/kernel/random/boot_id').read_text().strip()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks after boot) from /proc/PID/stat (fields 3 and 22);
    None where it cannot be read. The command name, field 2, may hold spaces and ')'."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def started(pid: int) -> str | None:
    """A process's start time in clock ticks after boot: with the pid, one process for
    good, even once the pid is reused. None: no such process (or one that has exited and
    only waits to be reaped), or /proc does not say."""
    stat = _stat(pid) if pid > 0 else None
    if stat is None or stat[0] in ("Z", "X"):
        return None
    return stat[1]


def process_identity() -> Identity:
    """This process's identity."""
    pid = os.getpid()
    return Identity(this_machine(), pid, started(pid))


def alive_here(machine: str | None, pid: int, started_at: str | None) -> bool | None:
    """Whether the process named by (machine, pid, start time) still runs: True or False
    when it was on this machine and /proc can tell; None when it was elsewhere (or the
    record does not say where), or when its pid exists but cannot be looked at (another
    user's process behind ``hidepid``): then only a lease can tell."""
    here = this_machine()
    if here is None or machine != here or started_at is None or pid <= 0:
        return None
    stat = _stat(pid)
    if stat is not None:  # a zombie has exited: only its parent has not reaped it yet
        return stat[1] == started_at and stat[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)  # signal 0: is there a process with this pid at all?
    except ProcessLookupError:
        return False
    except OSError:
        return None
    return None  # it exists, but its start time cannot be read: it may be a reused pid
