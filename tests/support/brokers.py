"""Helpers for tests that drive a broker directly."""

from __future__ import annotations

__all__ = ["IgnoreDeliveries"]


class IgnoreDeliveries:
    """A ``BrokerHandler`` for tests that publish and read history but subscribe to nothing."""

    def on_event(self, event: object) -> None: ...

    def on_resubscribed(self) -> None: ...

    def on_channels_resubscribed(self, channels: object) -> None: ...
