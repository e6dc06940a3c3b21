"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class ProxyFDAError(Exception):
    """Base class for user-facing errors: bad config, missing files or weights.

    The message is one line that names the field or path and says how to fix it.
    """


class ConfigError(ProxyFDAError):
    """A config value, CLI flag or config file is wrong."""


class DataError(ProxyFDAError):
    """A dataset or results folder is missing, unreadable or malformed."""


class WeightsError(ProxyFDAError):
    """Pre-trained weights are neither local nor reachable."""
