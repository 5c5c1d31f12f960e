"""Settings, read from the environment (and a ``.env`` file) in one place."""
from config.settings import Account, ConfigError, Settings, get_settings, load_settings

__all__ = ["Account", "ConfigError", "Settings", "get_settings", "load_settings"]
