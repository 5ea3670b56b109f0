"""Which data a process works on, as a short identifier that may be shown to anyone.

``pushgate serve`` reports it in ``GET /api/v1/health`` (``data_id``); a ``pushgate`` command
compares it with its own to tell when the server it would point a user to runs on other
data (another data directory or database), where the accounts and tokens it just made do not
exist. It is an HMAC, keyed with the server secret, of where the database is: it reveals
neither the path nor the secret, and two processes get the same one exactly when they share
both (a token made by one is then accepted by the other).
"""

from __future__ import annotations

import hashlib
import hmac

from pushgate.config import Settings

LENGTH = 16


def data_location(settings: Settings) -> str:
    """Where the data lives, for people: the data directory, and the database when it is
    elsewhere (without its password)."""
    where = str(settings.data_dir.resolve())
    if settings.database_url:
        from sqlalchemy.engine import make_url

        return f"{where}; database {make_url(settings.database_url).render_as_string()}"
    return where


def data_id(settings: Settings) -> str:
    """The identifier of ``settings``' data (16 hex digits)."""
    place = settings.database_url or str(settings.data_dir.resolve())
    key = settings.resolved_secret_key().encode()
    digest = hmac.new(key, b"pushgate data\x00" + place.encode(), hashlib.sha256)
    return digest.hexdigest()[:LENGTH]
