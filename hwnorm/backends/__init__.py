"""Backends: one interface (Backend.forward), chosen by name: float, golden, rtl."""
from .base import Backend, FixedPointBackend, LayerResult, get_backend

__all__ = ["Backend", "FixedPointBackend", "LayerResult", "get_backend"]
