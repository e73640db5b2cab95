"""Storages: where sessions and messages live."""

from .base import BaseStorage, StorageAdapter
from .memory import MemoryStorage
from .sqlite import SQLiteStorage

__all__ = ["BaseStorage", "MemoryStorage", "SQLiteStorage", "StorageAdapter"]
