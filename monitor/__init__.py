"""monitor: an event-driven change monitor for Microsoft 365 that tells JupiterOne exactly what changed."""

__version__ = "0.1.0"
