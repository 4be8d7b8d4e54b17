"""``bgcore setup``: process-manager config for a bench (supervisor, systemd, Procfile).

:mod:`~bgcore.setup.plan` decides what runs, :mod:`~bgcore.setup.render` writes
it in each format, :mod:`~bgcore.setup.files` compares with what is on disk and
writes it.
"""
