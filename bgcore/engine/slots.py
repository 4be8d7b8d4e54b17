"""Shared memory between a pool's parent and its work-horses: one slot per horse.

A horse writes what it is doing (the job id, its state, its deadline on the
system-wide monotonic clock); the parent reads it without a round trip to
Redis, to kill a horse that overran its deadline and to know which job a dead
horse was running. The memory is an anonymous shared mapping created before
the horses fork.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from enum import IntEnum

SLOT_SIZE = 1024
_HEADER = struct.Struct("<BxxxId H")  # state, jobs run in this slot (all its horses), deadline, job id length
_MAX_ID = SLOT_SIZE - _HEADER.size


class HorseState(IntEnum):
    IDLE = 0
    RUNNING = 1  # the job's own work: the deadline is the job's timeout
    FINISHING = 2  # recording the outcome: the deadline is a grace period


@dataclass(frozen=True)
class SlotView:
    state: HorseState
    deadline: float
    job_id: str


class Slots:
    """``size`` slots in one shared anonymous mapping."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._memory = mmap.mmap(-1, size * SLOT_SIZE)

    def write(self, index: int, state: HorseState, deadline: float = 0.0, job_id: str = "") -> None:
        """Called by horse ``index``: the state (written last, so a reader never sees a torn job id)."""
        raw = job_id.encode()[:_MAX_ID]
        base = index * SLOT_SIZE
        self._memory[base + _HEADER.size: base + _HEADER.size + len(raw)] = raw
        struct.pack_into("<d H", self._memory, base + 8, deadline, len(raw))
        self._memory[base] = int(state)

    def count_job(self, index: int) -> None:
        """Called by horse ``index`` after each job (only that horse writes its slot)."""
        base = index * SLOT_SIZE + 4
        struct.pack_into("<I", self._memory, base, struct.unpack_from("<I", self._memory, base)[0] + 1)

    def jobs_run(self) -> int:
        """Jobs run by every horse that ever used these slots."""
        return sum(struct.unpack_from("<I", self._memory, i * SLOT_SIZE + 4)[0] for i in range(self.size))

    def read(self, index: int) -> SlotView:
        base = index * SLOT_SIZE
        state, _jobs, deadline, length = _HEADER.unpack_from(self._memory, base)
        job_id = self._memory[base + _HEADER.size: base + _HEADER.size + length].decode(errors="replace")
        return SlotView(HorseState(state), deadline, job_id)

    def clear(self, index: int) -> None:
        self.write(index, HorseState.IDLE)
