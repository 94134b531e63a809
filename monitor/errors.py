"""Errors that end a command with one clear line instead of a traceback."""

from __future__ import annotations


class MonitorError(Exception):
    """Base class: the message is complete and meant for an operator."""


class ConfigError(MonitorError):
    """A setting is missing, misspelt or invalid. The message names it."""


class RedisUnavailable(MonitorError):
    """Redis could not be reached."""
