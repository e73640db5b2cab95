"""``pocketping bridge``: a standalone bridge server holding the platform credentials.

SDKs configured with ``bridge_url`` post their events to it; it runs the same bridge classes as
the in-process mode, and calls the SDK back with operator events (signed)."""

from .app import BackendForwarder, bridges_from_env, build_bridge_server

__all__ = ["BackendForwarder", "bridges_from_env", "build_bridge_server"]
