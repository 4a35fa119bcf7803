"""Configuration: the YAML schema and its loader."""

from portico.config.loader import ConfigError, load_config
from portico.config.schema import PorticoConfig

__all__ = ["ConfigError", "PorticoConfig", "load_config"]
