"""The live web dashboard of a bench (``bgcore dashboard``): Starlette, Jinja2 and htmx.

- :mod:`bgcore.dashboard.settings`: ``dashboard_host`` / ``dashboard_port`` / ``dashboard_password``, checked.
- :mod:`bgcore.dashboard.security`: HTTP basic authentication and CSRF protection of the actions.
- :mod:`bgcore.dashboard.app`: the routes; each one calls a read model of :mod:`bgcore.views` (or an
  action the CLI uses) and renders a template.
- :mod:`bgcore.dashboard.server`: serves the app with uvicorn.
"""
