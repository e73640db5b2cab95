"""Request parsing and JSON errors shared by the endpoints."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

M = TypeVar("M", bound=BaseModel)

MAX_BODY = 256 * 1024


def error(status: int, code: str, detail: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


async def parse(request: Request, model: type[M]) -> M:
    return parse_body(await request.body(), model)


def parse_body(body: bytes, model: type[M]) -> M:
    """Validate a JSON request body; :class:`BadRequest` (400/413) naming what is wrong."""
    if len(body) > MAX_BODY:
        raise BadRequest(413, "body_too_large", f"request body over {MAX_BODY} bytes")
    if not body.strip():
        raise BadRequest(400, "invalid_json", "request body is empty; expected a JSON object")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errs = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(e["type"] == "json_invalid" for e in errs):
            raise BadRequest(400, "invalid_json", "request body is not valid JSON") from None
        if any(e["type"] == "model_type" and not e["loc"] for e in errs):
            raise BadRequest(400, "invalid_json", "request body must be a JSON object") from None
        detail = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in errs]
        raise BadRequest(400, "invalid_input", detail) from None


class BadRequest(Exception):
    def __init__(self, status: int, code: str, detail: Any) -> None:
        super().__init__(code)
        self.status, self.code, self.detail = status, code, detail

    @property
    def response(self) -> JSONResponse:
        return error(self.status, self.code, self.detail)


_BadRequest = BadRequest
