"""Fake Telegram, Slack and Discord servers: real HTTP on 127.0.0.1, the platforms' documented
request and response shapes, a record of every call, and injectable faults and latency."""
