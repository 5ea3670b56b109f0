"""The log configuration: levels per logger, central redaction, request ids."""

from __future__ import annotations

import logging

import pytest

from pushgate.config import Settings
from pushgate.observability.logs import (
    REDACTED,
    logging_config,
    parse_levels,
    redact,
    redact_fields,
)
from pushgate.observability.requests import incoming_request_id


def test_levels_per_logger_are_parsed_and_bad_ones_named() -> None:
    assert parse_levels("pushgate.access=warning, uvicorn=ERROR") == {
        "pushgate.access": "WARNING",
        "uvicorn": "ERROR",
    }
    assert parse_levels("") == {}
    for bad in ("pushgate.access", "=info", "uvicorn=loud"):
        with pytest.raises(ValueError, match="LOGGER=LEVEL"):
            parse_levels(bad)


def test_settings_refuse_a_bad_level_entry() -> None:
    assert Settings(log_levels="pushgate.access=warning").log_levels == ("pushgate.access=warning",)
    with pytest.raises(ValueError, match="bad log level entry"):
        Settings(log_levels="pushgate.access")


def test_levels_reach_the_logging_config() -> None:
    config = logging_config("info", {"pushgate.access": "WARNING", "other": "DEBUG"}, "json")
    assert config["loggers"]["pushgate.access"] == {"level": "WARNING"}
    assert config["loggers"]["other"] == {"level": "DEBUG"}
    assert config["loggers"]["pushgate"]["level"] == "INFO"
    assert config["handlers"]["default"]["filters"] == ["redact"]


def test_fields_are_redacted_in_one_place() -> None:
    event = {
        "event": "GET /api/v1/channel/poll?token=dvt_abcdefgh123",
        "path": "/x?key=k-123&page=2",
        "device": "dvt_abcdefghijk",
        "secret": "s3cr3t",
        "authorization": "Bearer ut_123",
        "status": 200,
    }
    out = redact_fields(None, "info", dict(event))
    assert out["event"] == f"GET /api/v1/channel/poll?token={REDACTED}"
    assert out["path"] == f"/x?key={REDACTED}&page=2"
    assert out["device"] == f"dvt_{REDACTED}"
    assert out["secret"] == REDACTED and out["authorization"] == REDACTED
    assert out["status"] == 200
    assert redact("nothing to hide") == "nothing to hide"


def test_a_redacting_filter_guards_stdlib_records() -> None:
    from pushgate.observability.logs import RedactSecrets

    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '"%s" %d', ("GET /p?token=abc", 401), None
    )
    assert RedactSecrets().filter(record)
    assert record.getMessage() == f'"GET /p?token={REDACTED}" 401'


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (b"abc-123.x:y_z", "abc-123.x:y_z"),
        (b"x" * 64, "x" * 64),
        (b"x" * 65, None),
        (b'a"b', None),
        (b"a b", None),
        (b"", None),
    ],
)
def test_only_a_safe_incoming_request_id_is_kept(value: bytes, kept: str | None) -> None:
    assert incoming_request_id([(b"host", b"x"), (b"x-request-id", value)]) == kept
    assert incoming_request_id([(b"host", b"x")]) is None


def test_lines_carry_the_ids_of_their_request_and_notification() -> None:
    import contextvars

    from pushgate.observability.logs import NOTIFICATION_ID, REQUEST_ID, add_ids

    def in_a_request() -> dict[str, object]:
        REQUEST_ID.set("req-1")
        NOTIFICATION_ID.set(42)
        return add_ids(None, "info", {"event": "x"})

    def in_a_push_job() -> dict[str, object]:
        NOTIFICATION_ID.set(7)
        return add_ids(None, "info", {"event": "x"})

    assert contextvars.copy_context().run(in_a_request) == {
        "event": "x",
        "request_id": "req-1",
        "notification_id": 42,
    }
    assert contextvars.copy_context().run(in_a_push_job) == {"event": "x", "notification_id": 7}
    assert add_ids(None, "info", {"event": "x"}) == {"event": "x"}
