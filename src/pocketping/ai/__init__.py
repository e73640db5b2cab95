"""The AI first responder: ``PocketPing(ai=AIResponder(...))``."""

from .knowledge import Knowledge, Passage
from .model import ModelError
from .responder import BUILT_IN_INSTRUCTIONS, AIResponder

__all__ = ["BUILT_IN_INSTRUCTIONS", "AIResponder", "Knowledge", "ModelError", "Passage"]
