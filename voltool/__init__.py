"""voltool: point-in-time snapshots of Docker named volumes, and safe restores."""

__version__ = "0.1.0"
