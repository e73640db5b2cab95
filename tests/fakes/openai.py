"""A fake OpenAI-compatible chat-completions server: ``POST /v1/chat/completions`` answering
``{"choices": [{"message": {"role": "assistant", "content", "tool_calls"}}]}`` and errors as
``{"error": {"message", "type", "code"}}``, the shapes OpenAI, Ollama, vLLM and llama.cpp use.

What it answers is ``self.model(body)``: by default it plays a model that answers from the
passages it was given and hands over (tool call) when none matches. ``script`` (a list of
answers: text, :func:`tool_call`, :func:`broken`) overrides it call by call; ``fail`` and
``latency`` come from :class:`FakePlatform`.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .base import FakePlatform

MALFORMED = object()


def tool_call(name: str, arguments: Any) -> dict[str, Any]:
    """A ``tool_calls`` answer (``arguments`` as the model sends them: a JSON string)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"tool_calls": [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": args}}]}


def system_text(body: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "system")


def knowledgeable(body: dict[str, Any]) -> str | dict[str, Any]:
    """Answers with the first passage's title when passages came with the turn; else hands over."""
    text = system_text(body)
    if "Passages:\n\n[1] " in text:
        title = text.split("Passages:\n\n[1] ", 1)[1].split("\n", 1)[0]
        return f"From our docs ({title}): see the passage."
    return tool_call("handoff", {"reason": "the documents do not cover this"})


class FakeOpenAI(FakePlatform):
    def __init__(self, api_key: str | None = "sk-test-0123456789") -> None:
        super().__init__()
        self.api_key = api_key
        self.model: Callable[[dict[str, Any]], Any] = knowledgeable
        self.script: list[Any] = []
        self.reject_tools = False  # a server without function calling: 400 when tools are sent
        self.received = 0  # requests that arrived (answered or still being written)
        self._ids = itertools.count(1)
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.completions, methods=["POST"])])

    def requests(self) -> list[dict[str, Any]]:
        return self.sent("chat.completions", ok_only=False)

    def answered(self) -> list[dict[str, Any]]:
        return self.sent("chat.completions")

    @staticmethod
    def error(status: int, message: str, kind: str = "server_error") -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": None}}, status_code=status)

    async def completions(self, request: Request) -> Response:
        body = json.loads(await request.body())
        with self.lock:
            self.received += 1
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            self.record("chat.completions", body, request.headers, 401)
            return self.error(401, "Incorrect API key provided.", "invalid_request_error")
        fault = await self.gate("chat.completions")
        if fault is not None:
            status, retry_after = fault
            self.record("chat.completions", body, request.headers, status)
            response = self.error(status, "The server had an error while processing your request.")
            if retry_after is not None:
                response.headers["Retry-After"] = str(retry_after)
            return response
        if self.reject_tools and "tools" in body:
            self.record("chat.completions", body, request.headers, 400)
            return self.error(400, "this model does not support tools", "invalid_request_error")
        with self.lock:
            answer = self.script.pop(0) if self.script else None
        if answer is None:
            answer = self.model(body)
        self.record("chat.completions", body, request.headers, 200)
        if answer is MALFORMED:
            return JSONResponse({"object": "chat.completion", "choices": []})
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if isinstance(answer, str):
            message["content"] = answer
        else:
            message.update(answer)
        finish = "tool_calls" if "tool_calls" in message else "stop"
        return JSONResponse(
            {
                "id": f"chatcmpl-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )
