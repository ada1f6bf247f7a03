"""Settings per environment; see settings.py."""

from config.settings import ConfigError, load

__all__ = ["ConfigError", "load"]
