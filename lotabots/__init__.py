"""LotaBots shared wiring: settings, tier config, logging, CLI and process supervision."""

__version__ = "0.1.0"
