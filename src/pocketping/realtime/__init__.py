"""Real-time fan-out: the in-process hub and the brokers that join processes."""

from .hub import Broker, Hub, Subscriber

__all__ = ["Broker", "Hub", "Subscriber"]
