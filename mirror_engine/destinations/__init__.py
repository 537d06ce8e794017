"""Where a channel is written: the local folder by default, or the store `destination:` names."""

from __future__ import annotations

from mirror_engine.config import MirrorConfig
from mirror_engine.destinations.base import Destination
from mirror_engine.destinations.http import HttpPutDestination
from mirror_engine.destinations.local import LocalDestination
from mirror_engine.destinations.quetz import QuetzDestination


def make_destination(config: MirrorConfig) -> Destination:
    """The destination of a config; remote stores stage their downloads under the state folder."""
    settings = config.destination
    if settings is None:
        return LocalDestination(config.channel_dir)
    staging = config.state_dir / "staging" / config.dest_channel
    if settings.kind == "http":
        return HttpPutDestination(config, staging)
    if settings.kind == "quetz":
        return QuetzDestination(settings, config, staging)
    if settings.kind == "s3":
        from mirror_engine.destinations.s3 import S3Destination  # botocore loads only for those who use S3

        return S3Destination.from_config(config, staging)
    raise NotImplementedError(f"destination kind {settings.kind} ({staging})")
