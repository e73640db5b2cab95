"""HTTP, WebSocket and SSE endpoints."""
