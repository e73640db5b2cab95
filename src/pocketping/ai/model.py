"""A client for the OpenAI chat-completions wire format (``POST {base_url}/chat/completions``),
which OpenAI, local model servers (Ollama, vLLM, llama.cpp's server) and most gateways speak.

httpx, already a dependency of the bridges and webhooks, is the client: async, with separate
connect and read timeouts, and no SDK needed for one JSON request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

#: The tool the model calls to hand the conversation over to a person.
HANDOFF_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "handoff",
        "description": (
            "Hand the conversation over to a person on the team. Call it when the passages do not "
            "hold the answer, when the visitor asks for a person, or when the visitor is upset."
        ),
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why, in one sentence, for the team."}},
            "required": ["reason"],
        },
    },
}


class ModelError(Exception):
    """The model server did not give a usable answer (the text says why, never the key);
    ``retry_after``: seconds it asked to wait (429)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Completion:
    """What the model answered: text for the visitor, or a handoff with its reason."""

    content: str = ""
    handoff: str | None = None


class ChatModel:
    """One model behind an OpenAI-compatible endpoint."""

    def __init__(self, base_url: str, api_key: str | None, model: str, timeout: float) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key
        self.model = model
        self.timeout = timeout
        #: False once the server refused ``tools`` (a model without function calling).
        self.tools_supported = True
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(
                headers=headers, timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
            )
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def complete(self, messages: list[dict[str, Any]]) -> Completion:
        """One completion; :class:`ModelError` for anything but a usable answer."""
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.tools_supported:
            body["tools"] = [HANDOFF_TOOL]
        r = await self._post(body)
        if r.status_code == 400 and self.tools_supported and "tool" in r.text.lower():
            # A model or server without function calling: ask again without the tool (the
            # plain-words rule still hands over when the visitor asks for a person).
            self.tools_supported = False
            body.pop("tools")
            r = await self._post(body)
        if r.status_code != 200:
            raise ModelError(
                f"the model server answered {r.status_code}: {_error_text(r)}", retry_after=_retry_after(r)
            )
        return parse_completion(r)

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        try:
            return await self.client.post(self.url, json=body, follow_redirects=False)
        except httpx.TimeoutException:
            raise ModelError(f"the model server did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise ModelError(f"could not reach the model server ({type(exc).__name__})") from None


def parse_completion(r: httpx.Response) -> Completion:
    """``choices[0].message``: its ``tool_calls`` (a handoff) or its ``content``."""
    try:
        message = r.json()["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ModelError("the model server's answer is not a chat completion") from None
    if not isinstance(message, dict):
        raise ModelError("the model server's answer is not a chat completion")
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if name != "handoff":
            raise ModelError(f"the model called a tool it was not given ({str(name)[:40]!r})")
        try:
            arguments = json.loads(function.get("arguments") or "{}")  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ModelError("the model called handoff with arguments that are not JSON") from None
        reason = arguments.get("reason") if isinstance(arguments, dict) else None
        return Completion(handoff=reason.strip() if isinstance(reason, str) and reason.strip() else "no reason given")
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise ModelError("the model answered with no text")
    return Completion(content=content.strip())


def _error_text(r: httpx.Response) -> str:
    try:
        error = r.json().get("error")
        text = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        text = r.text
    return str(text or r.reason_phrase)[:200]


def _retry_after(r: httpx.Response) -> float | None:
    try:
        return float(r.headers["retry-after"]) if r.status_code == 429 and "retry-after" in r.headers else None
    except ValueError:
        return None
