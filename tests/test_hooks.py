"""scheduler_events in hooks.py: loading afresh, every key, and clear reports of bad hooks.

Apps are written into ``tmp_path`` with a unique name per test, so a module
imported by one test never shadows another test's app.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from bgcore.errors import HooksError
from bgcore.queues import queue_specs
from bgcore.scheduler.events import (
    EVENT_KEYS,
    EventSpec,
    hooks_fingerprint,
    load_app_hooks,
    load_site_events,
    parse_scheduler_events,
)

QUEUES = queue_specs({})
TASKS = '''
def alpha():
    return "alpha"

def beta():
    return "beta"

def report_usage():
    return "usage"
'''
_counter = itertools.count()

MakeApp = Callable[..., str]


@pytest.fixture
def make_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakeApp:
    """Write an app package ``<prefix>_<n>`` with ``hooks.py`` and ``tasks.py``; return its name."""
    apps = tmp_path / "apps"
    apps.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(apps))

    def make(hooks: str, prefix: str = "hookapp", tasks: str = TASKS) -> str:
        name = f"{prefix}_{next(_counter)}_{abs(hash(str(tmp_path))) % 10_000}"
        package = apps / name
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "tasks.py").write_text(tasks)
        (package / "hooks.py").write_text(textwrap.dedent(hooks).replace("APP", name))
        return name

    return make


def load(app: str) -> list[EventSpec]:
    hooks = load_app_hooks(app)
    return parse_scheduler_events(app, hooks.path, hooks.scheduler_events, QUEUES)


def problems_of(app: str) -> tuple[str, ...]:
    with pytest.raises(HooksError) as info:
        load(app)
    return info.value.problems


# -- good hooks -----------------------------------------------------------------

EXPECTED = {
    "all": (None, "default"),
    "hourly": ("0 * * * *", "default"), "daily": ("0 0 * * *", "default"),
    "weekly": ("0 0 * * 0", "default"), "monthly": ("0 0 1 * *", "default"),
    "yearly": ("0 0 1 1 *", "default"), "annual": ("0 0 1 1 *", "default"),
    "hourly_long": ("0 * * * *", "long"), "daily_long": ("0 0 * * *", "long"),
    "weekly_long": ("0 0 * * 0", "long"), "monthly_long": ("0 0 1 * *", "long"),
    "yearly_long": ("0 0 1 1 *", "long"), "annual_long": ("0 0 1 1 *", "long"),
}


@pytest.mark.parametrize("key", list(EXPECTED))
def test_every_frequency_key_gives_its_cron_and_queue(make_app: MakeApp, key: str) -> None:
    # Given hooks with one method under `key`
    app = make_app(f'scheduler_events = {{"{key}": ["APP.tasks.alpha"]}}')
    # When parsed
    (spec,) = load(app)
    # Then the event has that frequency, the key's expression and queue
    cron, queue = EXPECTED[key]
    assert spec == EventSpec(app=app, method=f"{app}.tasks.alpha", frequency=key, cron=cron, queue=queue)


@pytest.mark.parametrize(("key", "queue"), [("cron", "default"), ("cron_long", "long")])
def test_cron_keys_take_expressions_and_aliases(make_app: MakeApp, key: str, queue: str) -> None:
    app = make_app(f'''
        scheduler_events = {{"{key}": {{
            "*/5 * * * *": ["APP.tasks.alpha"],
            "annual": ["APP.tasks.beta"],
            "@midnight": ["APP.tasks.alpha"],
        }}}}
    ''')
    specs = load(app)
    assert {(s.method.rsplit(".", 1)[1], s.cron, s.queue, s.frequency) for s in specs} == {
        ("alpha", "*/5 * * * *", queue, key), ("beta", "0 0 1 1 *", queue, key), ("alpha", "0 0 * * *", queue, key),
    }


def test_the_key_list_is_complete() -> None:
    assert set(EVENT_KEYS) == set(EXPECTED) | {"cron", "cron_long"}


def test_demo_app_declares_all_hourly_daily_long_and_cron(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the bundled demo app / When its hooks are parsed / Then each kind of event is there
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "fixtures" / "apps"))
    specs = load("demo_app")
    kinds = {(s.frequency, s.cron, s.queue) for s in specs}
    assert ("all", None, "default") in kinds
    assert ("hourly", "0 * * * *", "default") in kinds
    assert ("daily_long", "0 0 * * *", "long") in kinds
    assert ("cron", "*/5 * * * *", "default") in kinds
    assert ("cron", "0 0 1 1 *", "default") in kinds


def test_hooks_without_scheduler_events_declare_nothing(make_app: MakeApp) -> None:
    app = make_app('app_name = "APP"')
    assert load(app) == []


def test_a_method_listed_twice_is_one_event(make_app: MakeApp) -> None:
    app = make_app('scheduler_events = {"daily": ["APP.tasks.alpha", "APP.tasks.alpha"]}')
    assert len(load(app)) == 1


def test_event_ids_are_stable_lowercase_alphanumerics_and_distinguish_events() -> None:
    a = EventSpec("app", "app.tasks.alpha", "daily", "0 0 * * *", "default")
    b = EventSpec("app", "app.tasks.alpha", "daily_long", "0 0 * * *", "long")
    c = EventSpec("app", "app.tasks.alpha", "cron", "*/5 * * * *", "default")
    assert re.fullmatch(r"[a-z0-9]+", a.event_id)
    assert a.event_id == EventSpec("app", "app.tasks.alpha", "daily", "0 0 * * *", "default").event_id
    assert len({a.event_id, b.event_id, c.event_id}) == 3
    # stable across runs and machines: a fixed value
    assert a.event_id == hashlib.sha256("app\x1fapp.tasks.alpha\x1fdaily\x1f0 0 * * *".encode()).hexdigest()[:32]


def test_hooks_are_read_afresh_each_time(make_app: MakeApp) -> None:
    # Given hooks loaded once
    app = make_app('scheduler_events = {"daily": ["APP.tasks.alpha"]}')
    first = load_app_hooks(app)
    # When the file changes on disk
    first.path.write_text(f'scheduler_events = {{"hourly": ["{app}.tasks.beta"]}}\n')
    second = load_app_hooks(app)
    # Then the new content and a new fingerprint are seen
    assert second.scheduler_events == {"hourly": [f"{app}.tasks.beta"]}
    assert second.fingerprint != first.fingerprint
    assert second.fingerprint == hooks_fingerprint(second.path) == hashlib.sha256(second.path.read_bytes()).hexdigest()


# -- bad hooks: each reported clearly ----------------------------------------------

def test_a_syntax_error_names_file_and_line(make_app: MakeApp) -> None:
    app = make_app('app_name = "APP"\nscheduler_events = {\n    "daily": ["APP.tasks.alpha"\n}\n')
    with pytest.raises(HooksError) as info:
        load_app_hooks(app)
    message = str(info.value)
    assert f"app {app!r}" in message and f"{app}/hooks.py" in message
    assert re.search(r"line [34]: syntax error", message)


def test_a_file_with_null_bytes_is_reported_not_crashed_on(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app("")
    (tmp_path / "apps" / app / "hooks.py").write_bytes(b"app_name = 1\x00\n")
    with pytest.raises(HooksError, match=f"app '{app}', file .*hooks.py"):
        load_app_hooks(app)


def test_an_exception_while_running_hooks_names_file_and_line(make_app: MakeApp) -> None:
    app = make_app('app_name = "APP"\n\nscheduler_events = {"daily": [undefined_name]}\n')
    with pytest.raises(HooksError) as info:
        load_app_hooks(app)
    assert f"{app}/hooks.py, line 3" in str(info.value)
    assert "NameError" in str(info.value)


def test_an_unknown_key_suggests_the_closest_one(make_app: MakeApp) -> None:
    app = make_app('scheduler_events = {"dialy": ["APP.tasks.alpha"]}')
    (problem,) = problems_of(app)
    assert "key 'dialy'" in problem and "did you mean 'daily'?" in problem
    assert "hooks.py" in problem and "APP.tasks.alpha".replace("APP", app) in problem


def test_an_invalid_cron_names_the_expression(make_app: MakeApp) -> None:
    app = make_app('scheduler_events = {"cron": {"*/5 * * *": ["APP.tasks.alpha"]}}')
    (problem,) = problems_of(app)
    assert "'*/5 * * *'" in problem and "4 fields" in problem and "key \"cron['*/5 * * *']\"" in problem


def test_a_missing_method_suggests_the_closest_name(make_app: MakeApp) -> None:
    app = make_app('scheduler_events = {"hourly": ["APP.tasks.report_usag"]}')
    (problem,) = problems_of(app)
    assert f"unknown method {app}.tasks.report_usag" in problem
    assert f"did you mean {app}.tasks.report_usage? Fix the path" in problem
    assert "?." not in problem
    assert "key 'hourly'" in problem


def test_a_method_that_needs_arguments_is_reported(make_app: MakeApp) -> None:
    # Given a scheduled method with a required parameter (scheduled runs pass none)
    tasks = TASKS + "\ndef send(to, subject='hi', *args, **kwargs):\n    pass\n"
    app = make_app('scheduler_events = {"daily": ["APP.tasks.send", "APP.tasks.alpha"]}', tasks=tasks)
    # Then only that method is a problem, and the message names the missing argument
    (problem,) = problems_of(app)
    assert f"{app}.tasks.send needs arguments (to) but scheduled methods are called without any" in problem
    assert "key 'daily'" in problem


def test_a_misspelled_cron_alias_suggests_the_alias(make_app: MakeApp) -> None:
    app = make_app('scheduler_events = {"cron": {"@dialy": ["APP.tasks.alpha"]}}')
    (problem,) = problems_of(app)
    assert "'@dialy'" in problem and "did you mean '@daily'?" in problem and "?." not in problem


def test_a_method_in_a_missing_module_is_reported(make_app: MakeApp) -> None:
    app = make_app('scheduler_events = {"hourly": ["APP.nowhere.alpha"]}')
    (problem,) = problems_of(app)
    assert f"{app}.nowhere" in problem and "cannot be imported" in problem


@pytest.mark.parametrize(
    ("value", "hint"),
    [('"APP.tasks.alpha"', "wrap it in a list"), ("{'x': 1}", "list of method paths"), ("None", "list of method paths")],
)
def test_a_non_list_value_is_reported(make_app: MakeApp, value: str, hint: str) -> None:
    app = make_app(f'scheduler_events = {{"daily": {value}}}')
    (problem,) = problems_of(app)
    assert "key 'daily'" in problem and hint in problem


def test_a_cron_value_that_is_not_a_dict_is_reported(make_app: MakeApp) -> None:
    app = make_app('scheduler_events = {"cron": ["APP.tasks.alpha"]}')
    (problem,) = problems_of(app)
    assert "key 'cron'" in problem and "dict of cron expression" in problem


def test_scheduler_events_that_is_not_a_dict_is_reported(make_app: MakeApp) -> None:
    app = make_app('scheduler_events = ["APP.tasks.alpha"]')
    with pytest.raises(HooksError, match="scheduler_events.*must be a dict"):
        load_app_hooks(app)


def test_every_problem_of_an_app_is_listed_at_once(make_app: MakeApp) -> None:
    # Given hooks with four different mistakes
    app = make_app('''
        scheduler_events = {
            "dialy": ["APP.tasks.alpha"],
            "hourly": "APP.tasks.alpha",
            "cron": {"61 * * * *": ["APP.tasks.alpha"], "*/5 * * * *": ["APP.tasks.gamma"]},
            "daily": ["APP.tasks.beta"],
        }
    ''')
    # When parsed / Then one error lists all four, one line each
    problems = problems_of(app)
    assert len(problems) == 4
    assert all(p.startswith(f"app {app!r}, file ") for p in problems)
    assert str(HooksError(problems)).count("\n  - ") == 4


def test_an_app_that_does_not_exist_or_has_no_hooks_is_reported(make_app: MakeApp, tmp_path: Path) -> None:
    with pytest.raises(HooksError, match="no package named 'no_such_app_xyz'"):
        load_app_hooks("no_such_app_xyz")
    app = make_app("")
    (tmp_path / "apps" / app / "hooks.py").unlink()
    with pytest.raises(HooksError, match="hooks.py does not exist"):
        load_app_hooks(app)


# -- a site: all apps checked together, other apps unaffected ---------------------

def test_site_events_list_the_problems_of_every_app(make_app: MakeApp) -> None:
    good = make_app('scheduler_events = {"daily": ["APP.tasks.alpha"]}', prefix="good")
    syntax = make_app("scheduler_events = {\n", prefix="syntax")
    unknown = make_app('scheduler_events = {"hourli": ["APP.tasks.alpha"]}', prefix="unknown")
    with pytest.raises(HooksError) as info:
        load_site_events("a.test", [good, syntax, unknown], QUEUES)
    assert info.value.site == "a.test"
    assert len(info.value.problems) == 2
    assert str(info.value).startswith("site 'a.test': 2 problems in hooks:")
    assert syntax in info.value.problems[0] and unknown in info.value.problems[1]
    # the good app alone still loads
    assert [s.app for s in load_site_events("b.test", [good], QUEUES).events] == [good]


def test_a_method_of_an_app_not_installed_on_the_site_is_refused(make_app: MakeApp) -> None:
    other = make_app("", prefix="other")
    app = make_app(f'scheduler_events = {{"daily": ["{other}.tasks.alpha"]}}')
    with pytest.raises(HooksError, match=f"app '{other}' is not installed on site 'a.test'"):
        load_site_events("a.test", [app], QUEUES)
    assert len(load_site_events("a.test", [app, other], QUEUES).events) == 1
