"""mirror_engine: mirror conda channels into a channel of your own, fully, partially or for an air gap."""

__version__ = "0.1.0"
