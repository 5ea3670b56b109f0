"""The native API as a face: its error format, and the paths that are its own."""

from __future__ import annotations

from pushgate.api.dialects.base import Face
from pushgate.web.errors import native_error

FACE = Face("native", native_error, ("/api/v1/", "/docs", "/openapi.json"))
