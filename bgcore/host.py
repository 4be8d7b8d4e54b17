"""This host's identity: the name bgcore records wherever it says which host a process runs on.

Worker names and registrations (``hostname``), the scheduler lease holder
(``host:pid:uuid``) and the liveness checks that may look at a pid only on the
host that owns it all take the name from :func:`host_name`: ``$BGCORE_HOSTNAME``
when set, else ``socket.gethostname()``.

Set ``BGCORE_HOSTNAME`` when machines share a hostname (containers, cloned VMs):
two machines with one name would each take the other's pids for their own and
settle live jobs as lost. Every process on one machine should carry the same
name, or it treats the others as remote (alive while their registration lasts).
Tests use it to run several simulated hosts on one machine.
"""

from __future__ import annotations

import os
import re
import socket

from bgcore.errors import InvalidHostName

HOST_ENV = "BGCORE_HOSTNAME"
# Host-like: no ':' (the lease holder is host:pid:uuid), no spaces or '/', at most 253 characters.
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


def host_name() -> str:
    """``$BGCORE_HOSTNAME`` if set (checked), else this machine's hostname."""
    value = os.environ.get(HOST_ENV)
    if value is None or value == "":
        return socket.gethostname()
    if not _HOST.match(value):
        raise InvalidHostName(
            f"${HOST_ENV}={value!r} is not a usable host name: use letters, digits, '.', '-' and '_' (starting "
            f"and ending with a letter or digit, at most 253 characters, no ':'), e.g. 'web1', or unset it to "
            f"use this machine's hostname ({socket.gethostname()!r})"
        )
    return value


def host_of_worker(name: str) -> str:
    """The host in a horse's name ``<host>.<pool pid>.<index>.<generation>`` (the name itself if not one)."""
    parts = name.rsplit(".", 3)
    if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
        return parts[0]
    return name


def host_of_holder(holder: str) -> str:
    """The host of a scheduler lease holder ``<host>:<pid>:<uuid>``."""
    return holder.rsplit(":", 2)[0]
