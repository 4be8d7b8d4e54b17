"""A :class:`~bgcore.setup.plan.Plan` as supervisor, systemd or Procfile text (pure, deterministic).

Each renderer returns ``{file name: text}``; the same plan always gives the
same text (no dates, no host names, programs in plan order).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from bgcore.errors import InvalidArgument
from bgcore.setup.plan import Plan

HONCHO_KILL_WAIT = 5  # honcho's fixed wait between SIGTERM and SIGKILL (honcho.manager.KILL_WAIT)


def _header(plan: Plan, fmt: str, comment: str) -> list[str]:
    return [
        f"{comment} Written by `bgcore setup {fmt}` for the bench {plan.bench} (bench id {plan.bench_id}).",
        f"{comment} Generated: edit the bench config and run the command again instead of editing this file.",
    ]


# -- supervisor ---------------------------------------------------------------------------------------


def _supervisor_value(text: str) -> str:
    return text.replace("%", "%%")  # supervisor expands %(name)s in values


def supervisor(plan: Plan) -> dict[str, str]:
    """One ``supervisor.conf`` to include from supervisord.conf: a program per process and one group."""
    lines = _header(plan, "supervisor", ";") + [
        "; Include it from supervisord.conf ([include] files = <this file>), then: supervisorctl reread;",
        f"; supervisorctl update. Control the bench as one group: supervisorctl restart {plan.prefix}:*",
        "; stopwaitsecs is each program's stop grace; supervisor sends SIGKILL (to the whole process group)",
        "; only after it, so a graceful stop never kills a job that is within its queue's timeout.",
    ]
    env = ",".join(f'{key}="{_supervisor_value(value)}"' for key, value in plan.environment.items())
    for program in plan.programs:
        command = " ".join(shlex.quote(arg) for arg in program.argv)
        lines += [
            "",
            f"; {program.summary}",
            f"[program:{plan.full_name(program)}]",
            f"command={_supervisor_value(command)}",
            f"directory={_supervisor_value(str(plan.bench))}",
            f"environment={env}",
        ]
        if plan.user:
            lines.append(f"user={plan.user}")
        lines += [
            f"priority={program.priority}",
            "autostart=true",
            "autorestart=true",
            "startsecs=1",
            "startretries=10",
            "stopsignal=TERM",
            f"stopwaitsecs={program.stop_seconds}",
            "stopasgroup=false",  # the pool forwards SIGTERM to its horses itself
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={_supervisor_value(str(program.log))}",
        ]
    names = ",".join(plan.full_name(p) for p in plan.programs)
    lines += ["", f"[group:{plan.prefix}]", f"programs={names}", ""]
    return {"supervisor.conf": "\n".join(lines)}


# -- systemd ------------------------------------------------------------------------------------------


def _systemd_quote(arg: str) -> str:
    """One argument of ``ExecStart=`` (systemd.service(5) "Command lines"): specifiers and variables escaped."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and not any(c.isspace() or c in "\"'\\;" for c in escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd(plan: Plan) -> dict[str, str]:
    """A ``.service`` unit per program and a ``.target`` that starts and stops them together."""
    target = f"{plan.prefix}.target"
    redis_unit = next((f"{plan.full_name(p)}.service" for p in plan.programs if p.name == "redis"), None)
    files: dict[str, str] = {}
    for program in plan.programs:
        after = ["network-online.target"]
        wants = ["network-online.target"]
        if redis_unit and program.name != "redis":
            after.append(redis_unit)
            wants.append(redis_unit)
        environment = " ".join(_systemd_quote(f"{k}={v}") for k, v in plan.environment.items())
        lines = _header(plan, "systemd", "#") + [
            f"# {program.summary}",
            "# TimeoutStopSec is its stop grace: systemd sends SIGKILL only after it (KillMode=mixed: SIGTERM to",
            "# the main process, which stops its own children, then SIGKILL to whatever is left).",
            "[Unit]",
            f"Description=bgcore {program.name} of bench {_systemd_text(str(plan.bench))}",
            f"PartOf={target}",
            f"After={' '.join(after)}",
            f"Wants={' '.join(wants)}",
            "",
            "[Service]",
            "Type=simple",
        ]
        if plan.user:
            lines.append(f"User={plan.user}")
        lines += [
            f"WorkingDirectory={_systemd_quote(str(plan.bench))}",
            f"Environment={environment}",
            f"ExecStart={' '.join(_systemd_quote(arg) for arg in program.argv)}",
            "KillMode=mixed",
            "KillSignal=SIGTERM",
            f"TimeoutStopSec={program.stop_seconds}",
            "Restart=always",
            "RestartSec=2",
            f"StandardOutput=append:{_systemd_text(str(program.log))}",
            "StandardError=inherit",
            "",
            "[Install]",
            f"WantedBy={target}",
            "",
        ]
        files[f"{plan.full_name(program)}.service"] = "\n".join(lines)
    services = " ".join(f"{plan.full_name(p)}.service" for p in plan.programs)
    files[target] = "\n".join(_header(plan, "systemd", "#") + [
        f"# Copy these files to /etc/systemd/system/, then: systemctl daemon-reload; systemctl enable --now {target}",
        "[Unit]",
        f"Description=bgcore bench {_systemd_text(str(plan.bench))}: every program",
        f"Wants={services}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])
    return files


def _systemd_text(text: str) -> str:
    return text.replace("%", "%%")


# -- Procfile -----------------------------------------------------------------------------------------


def procfile(plan: Plan) -> dict[str, str]:
    """A ``Procfile`` for honcho (or foreman): one line per program, each logging to its file under logs/."""
    if plan.user:
        raise InvalidArgument(f"--user {plan.user} has no meaning in a Procfile: run honcho itself as that user "
                              f"(e.g. sudo -u {plan.user} honcho start), or use 'bgcore setup supervisor|systemd'")
    longest = max(p.stop_seconds for p in plan.programs)
    env = " ".join(shlex.quote(f"{k}={v}") for k, v in plan.environment.items())
    lines = _header(plan, "procfile", "#") + [
        "# Run it with: honcho start -f <this file>   (honcho stops every program when one of them exits).",
        "# Stop grace: each line's comment gives how long its program may need after SIGTERM so that no",
        f"# running job is cut off. honcho waits a fixed {HONCHO_KILL_WAIT}s and then SIGKILLs every process group,",
        "# so under honcho a stop can cut off a longer job: the next worker to start records it as failed",
        "# (or retries it, by its retry policy), as after any crash. foreman waits as long as you say:",
        f"# foreman start -t {longest} -f <this file>. For production, prefer 'bgcore setup supervisor' or",
        "# 'bgcore setup systemd', which wait each program's full stop grace.",
    ]
    for program in plan.programs:
        command = " ".join(shlex.quote(arg) for arg in program.argv)
        lines += [f"# {program.summary}; stop grace {program.stop_seconds}s",
                  f"{program.name}: exec env {env} {command} >> {shlex.quote(str(program.log))} 2>&1"]
    lines.append("")
    return {"Procfile": "\n".join(lines)}


RENDERERS: dict[str, Callable[[Plan], dict[str, str]]] = {
    "supervisor": supervisor,
    "systemd": systemd,
    "procfile": procfile,
}
