"""``bgcore setup supervisor|systemd|procfile``: process-manager config for the bench."""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from bgcore import embedded_redis
from bgcore.cli import CliState, pass_state
from bgcore.setup.files import Change, compare, write
from bgcore.setup.plan import DEFAULT_REDIS_PORT, LOG_DIR, build_plan
from bgcore.setup.render import RENDERERS

NEXT_STEPS = {
    "supervisor": "include {main} from supervisord.conf ([include] files = {main}), then: "
                  "supervisorctl reread && supervisorctl update",
    "systemd": "copy {out}/*.service and {out}/*.target to /etc/systemd/system/, then: "
               "systemctl daemon-reload && systemctl enable --now {target}",
    "procfile": "honcho start -f {main}",
}


@click.command("setup")
@click.argument("fmt", metavar="supervisor|systemd|procfile", type=click.Choice(sorted(RENDERERS)))
@click.option("--output", "output", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Where to write the files. Default: <bench>/config.")
@click.option("--user", default=None, help="The user the programs run as (supervisor, systemd). "
              "Default: the user running this command.")
@click.option("--yes", is_flag=True, help="Overwrite files that exist and differ (their diff is shown).")
@click.option("--no-dashboard", is_flag=True, help="Leave out the dashboard program.")
@click.option("--redis-port", type=int, default=DEFAULT_REDIS_PORT, show_default=True,
              help="Port of the bench's private Redis (only when redis_queue is unset).")
@pass_state
def setup(state: CliState, fmt: str, output: str | None, user: str | None, yes: bool, no_dashboard: bool,
          redis_port: int) -> None:
    """Write ready-to-use process config for the bench: worker pools, scheduler, dashboard, private Redis.

    Running it again gives the same files. A file that exists and differs is
    shown as a diff and nothing is changed (exit 1) unless --yes is given.
    """
    bench = state.bench
    if user is None and fmt != "procfile":
        user = getpass.getuser()
    plan = build_plan(bench, user=user, dashboard=not no_dashboard, redis_port=redis_port)
    out = Path(output).absolute() if output else bench.path / "config"
    files = {out / name: text for name, text in RENDERERS[fmt](plan).items()}
    if plan.redis_port is not None:
        files[bench.state_path / embedded_redis.MANAGED_FILE] = embedded_redis.managed_record(plan.redis_port)
    planned = compare(files)
    for item in planned:
        if item.change == Change.DIFFERS:
            click.echo(item.diff, nl=not item.diff.endswith("\n"))
    write(planned, overwrite=yes)
    (bench.path / LOG_DIR).mkdir(exist_ok=True)
    if plan.redis_port is not None:  # redis-server refuses to start without its --dir
        embedded_redis.data_dir(bench).mkdir(parents=True, exist_ok=True)
    for item in planned:
        verb = {Change.NEW: "wrote", Change.SAME: "unchanged", Change.DIFFERS: "updated"}[item.change]
        click.echo(f"{verb} {item.path}")
    if fmt == "systemd":
        for stale in sorted(set(out.glob(f"{plan.prefix}-*.service")) - set(files)):
            click.secho(f"warning: {stale} is not part of this config any more (a removed queue?); "
                        "delete it (and disable it in systemd)", fg="yellow", err=True)
    main = next(iter(files))
    click.echo("next: " + NEXT_STEPS[fmt].format(main=main, out=out, target=f"{plan.prefix}.target"))


COMMANDS = [setup]
