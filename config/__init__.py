"""Settings per environment; see settings.py."""

from config.settings import ConfigError, Declared, flag, load, resolve

__all__ = ["ConfigError", "Declared", "flag", "load", "resolve"]
