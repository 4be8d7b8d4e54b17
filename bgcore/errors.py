"""The one error tree of bgcore.

Every message says what was wrong, where (bench, site, app, file, key) and
what to do about it. Only the CLI turns these into exit codes.
"""

from __future__ import annotations


class BgcoreError(Exception):
    """Base of every error bgcore raises on purpose."""


class BenchNotFound(BgcoreError):
    """Raised when a directory given as a bench has no ``sites/`` directory; ``path`` is that directory."""

    def __init__(self, message: str, *, path: object = None) -> None:
        super().__init__(message)
        self.path = path


class ConfigError(BgcoreError):
    """Raised when a ``site_config.json`` or ``common_site_config.json`` is broken."""


class InvalidSiteName(BgcoreError):
    """Raised when a site name is not host-like or could leave ``sites/``."""


class InvalidHostName(BgcoreError):
    """Raised when ``$BGCORE_HOSTNAME`` (this host's name in worker records and the scheduler lease) is not host-like."""


class SiteNotFound(BgcoreError):
    """Raised when a site name names no directory with a ``site_config.json``."""


class NoSiteContext(BgcoreError):
    """Raised when code that needs a current site runs outside one."""


class UnknownQueue(BgcoreError):
    """Raised when a queue name is not one of the bench's queues."""


class UnknownMethod(BgcoreError):
    """Raised when a method path does not import or is not callable."""


class AppNotInstalled(BgcoreError):
    """Raised when a job calls a method of an app not installed on its site."""


class SerializationError(BgcoreError):
    """Raised when job arguments cannot be serialised as JSON."""


class DuplicateJob(BgcoreError):
    """Raised when ``deduplicate=True`` finds the same job id queued or running."""


class NotAvailable(BgcoreError):
    """Raised when an option exists in the API but its feature is not built yet."""


class RedisUnavailable(BgcoreError):
    """Raised when the bench's Redis cannot be found or reached."""


class RedisConfigError(ConfigError, RedisUnavailable):
    """Raised when ``redis_queue`` or ``redis_sentinel`` is malformed (the message never shows a password)."""


class RedisAuthFailed(RedisUnavailable):
    """Raised when the bench's Redis (or a Sentinel) refuses the configured user or password, or the ACL
    user may not run what bgcore needs."""


class RedisTLSFailed(RedisUnavailable):
    """Raised when the TLS handshake with the bench's Redis fails (e.g. a ``rediss://`` URL to a plain-text
    server, or a certificate that does not verify)."""


class InvalidArgument(BgcoreError):
    """Raised when an argument to the API or CLI has the wrong type or value."""


class DatabaseError(BgcoreError):
    """Base of the errors of a site's database; each names the site."""


class DatabaseConfigError(DatabaseError, ConfigError):
    """Raised when a site's ``db_url`` is not a usable database URL."""


class DatabaseUnavailable(DatabaseError):
    """Raised when a site's database cannot be opened: server down, file missing or corrupt."""


class AfterCommitFailed(DatabaseError):
    """Raised when the transaction committed but an after-commit action (an enqueue) failed."""


class SiteExists(BgcoreError):
    """Raised when ``new-site`` is asked for a site that already exists."""


class UnknownApp(BgcoreError):
    """Raised when an app named for a site cannot be imported."""


class DocumentError(BgcoreError):
    """Base of the errors about documents and their controllers."""


class UnknownDoctype(DocumentError):
    """Raised when a doctype is not declared by any app installed on the current site."""


class DocumentNotFound(DocumentError):
    """Raised when no document with the given doctype and name exists in the site."""


class DocumentExists(DocumentError):
    """Raised when a new document is saved under a name that is already taken."""


class DocumentMethodNotFound(DocumentError):
    """Raised when a controller has no public method of the given name."""


class InvalidCron(BgcoreError):
    """Raised when a cron expression (or alias) cannot be parsed or never matches."""


class HooksError(BgcoreError):
    """Raised when an app's ``hooks.py`` cannot be loaded or its ``scheduler_events`` are invalid.

    ``problems`` holds every problem found, one line each (app, file, key,
    value and what to do); the message lists them all.
    """

    def __init__(self, problems: str | list[str] | tuple[str, ...], *, site: str | None = None) -> None:
        self.problems: tuple[str, ...] = (problems,) if isinstance(problems, str) else tuple(problems)
        self.site = site
        where = f"site {site!r}: " if site else ""
        if len(self.problems) == 1:
            message = f"{where}{self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{where}{len(self.problems)} problems in hooks:\n{lines}"
        super().__init__(message)


class InvalidConfigValue(ConfigError):
    """Raised when a config key has a value of the wrong type or out of its range.

    ``file``, ``key`` (dotted for nested values: ``workers.short.timeout``),
    ``value`` (as found, secrets masked) and ``expected`` say what and where.
    """

    def __init__(self, message: str, *, file: str, key: str, value: object, expected: str) -> None:
        super().__init__(message)
        self.file, self.key, self.value, self.expected = file, key, value, expected


class SetupRefused(BgcoreError):
    """Raised when ``bgcore setup`` would overwrite files that differ and ``--yes`` was not given."""
