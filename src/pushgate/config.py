"""Typed settings, read from PUSHGATE_* environment variables and an optional TOML file.

Settings are built once (by the CLI or by the caller of ``create_app``) and passed down;
nothing reads the environment at import time.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pushgate.egress import parse_networks
from pushgate.observability.logs import parse_levels

SECRET_FILE_NAME = "secret.key"
DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "pushgate"
# The browsers' push services: Chrome (FCM), Firefox (Mozilla autopush), Edge (WNS), Safari.
BROWSER_PUSH_HOSTS = (
    "fcm.googleapis.com",
    "android.googleapis.com",
    "push.services.mozilla.com",
    "notify.windows.com",
    "push.apple.com",
)


class Settings(BaseSettings):
    """Everything Pushgate can be told. Environment variables win over the TOML file."""

    model_config = SettingsConfigDict(env_prefix="PUSHGATE_", extra="forbid")

    host: str = Field("127.0.0.1", description="Address the server listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port the server listens on.")
    data_dir: Path = Field(
        DEFAULT_DATA_DIR, description="Directory for the SQLite file, secret key and CLI state."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy async URL; default: SQLite file in the data directory. "
        "postgresql+asyncpg://user@host/db is supported.",
    )
    secret_key: str | None = Field(
        None,
        description="Server secret that encrypts stored secrets; generated into the data "
        "directory on first start when not given.",
    )
    max_body_bytes: int = Field(262_144, ge=64, description="Largest request body accepted.")
    notification_ttl_seconds: int = Field(
        86_400, ge=1, description="How long an undelivered notification is kept for a device."
    )
    instant_delay_seconds: float = Field(
        120.0,
        ge=0,
        le=3600,
        description="A Push.express instant send is a one-time sending due this many seconds "
        "after the request (the vendor's 2 minutes by default).",
    )
    retention_days: float = Field(
        30.0,
        ge=0,
        le=36_500,
        description="Deliveries in a final status (delivered, opened, failed, expired, capped) "
        "of notifications whose TTL ran out more than this many days ago are deleted, then "
        "those notifications and idempotency keys older than that; queued and sent deliveries "
        "are kept. Servers and workers sweep every retention_interval_seconds. 0: keep "
        "everything.",
    )
    retention_interval_seconds: float = Field(
        600.0,
        ge=1,
        le=86_400,
        description="Seconds between two retention sweeps of a server or worker process (the "
        "first one comes a minute after the start, or sooner when this is shorter).",
    )
    queue_url: str | None = Field(
        None,
        description="Queue engine for delivery jobs: unset for the embedded engine (a table in "
        "the database); redis://host:port/db for Redis Streams, which lets several server and "
        "`pushgate worker` processes share the work.",
    )
    queue_prefix: str = Field(
        "pushgate",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Prefix of every Redis key and channel Pushgate uses.",
    )
    run_workers: bool = Field(
        True, description="Whether `pushgate serve` runs delivery workers in its own process."
    )
    push_concurrency: int = Field(
        4, ge=1, le=256, description="Push delivery jobs handled at once per platform."
    )
    max_attempts: int = Field(
        8, ge=1, le=100, description="Attempts per push delivery before it is marked failed."
    )
    retry_base_seconds: float = Field(
        1.0, gt=0, le=3600, description="First retry delay; it doubles per attempt (jittered)."
    )
    retry_max_seconds: float = Field(
        600.0, gt=0, le=86_400, description="Longest delay between two attempts."
    )
    queue_poll_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often an idle worker of the embedded queue looks for jobs that no "
        "wake-up of its own process announced: jobs other processes committed, and jobs whose "
        "lease ran out (one query per process for all its queues).",
    )
    job_lease_seconds: float = Field(
        60.0,
        ge=0.5,
        le=3600,
        description="How long a worker holds a job before another may take it over.",
    )
    websocket_ping_seconds: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="Seconds between WebSocket pings to each device connection (0: none); a "
        "connection that does not answer within as long again is closed.",
    )
    apns_url: str | None = Field(
        None,
        description="APNs base URL; unset: https://api.push.apple.com, or "
        "https://api.sandbox.push.apple.com for credentials marked sandbox. Set it to a local "
        "fake (see pushgate.testing) in tests.",
    )
    apns_connections: int = Field(
        2,
        ge=1,
        le=64,
        description="HTTP/2 connections to APNs per process; each carries up to the stream "
        "limit APNs announces (1,000 at most here) at once.",
    )
    fcm_url: str = Field("https://fcm.googleapis.com", description="FCM HTTP v1 base URL.")
    hms_url: str = Field("https://push-api.cloud.huawei.com", description="HMS Push Kit base URL.")
    hms_token_url: str = Field(
        "https://oauth-login.cloud.huawei.com/oauth2/v3/token",
        description="HMS OAuth 2.0 token URL (client credentials).",
    )
    provider_ca_file: Path | None = Field(
        None,
        description="A PEM file of extra certificate authorities trusted for provider and Web "
        "Push connections, on top of the system's (e.g. the CA of pushgate.testing's fakes).",
    )
    provider_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Timeout of one request to a provider."
    )
    provider_connections: int = Field(
        64,
        ge=1,
        le=4096,
        description="Most connections open at once per provider client (HTTP/1.1 providers; "
        "APNs, and FCM where it offers HTTP/2, multiplex requests over few HTTP/2 "
        "connections).",
    )
    vapid_subject: str = Field(
        "mailto:admin@localhost",
        description="Contact sent as VAPID `sub` with an app's generated Web Push key pair; set "
        "a real mailto: address or https URL in production.",
    )
    egress_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="CIDR ranges Pushgate may connect to although they are not public (e.g. "
        "10.0.0.0/8, or 127.0.0.0/8 for local fakes in tests), for URLs that clients or "
        "credentials supply: Web Push endpoints and service accounts' token_uri. Comma-"
        "separated in the environment. Empty: public addresses only.",
    )
    dashboard_session_seconds: int = Field(
        8 * 3600,
        ge=60,
        le=30 * 86400,
        description="How long a dashboard sign-in lasts before the user signs in again.",
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Addresses or CIDR ranges of reverse proxies in front of Pushgate: for a "
        "request from one of them, the client's address (for IP allowlists and the "
        "failed-authentication throttle) is taken from X-Forwarded-For, the last address "
        "that is not itself a trusted proxy. Comma-separated in the environment. Empty: the "
        "peer's address is the client's; X-Forwarded-For is ignored.",
    )
    fcm_token_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Hosts (host, or host:port) an FCM service account's token_uri may name "
        "besides Google's token endpoint, which is the only one allowed by default (e.g. a "
        "local FakeFcm in tests). Comma-separated in the environment.",
    )
    browser_push_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        BROWSER_PUSH_HOSTS,
        description="Push services that a web subscription registered with a browser key (the "
        "browser SDK, docs/browser.md) may name: its endpoint's host is one of these or under "
        "one. The default: the push services of Chrome, Firefox, Edge and Safari. "
        "Comma-separated in the environment; empty: any host (the egress policy still applies).",
    )
    unengaged_after_days: float = Field(
        30.0,
        gt=0,
        le=3650,
        description="A subscriber not active for this many days is unengaged: audiences that "
        "ask for engaged subscribers only leave it out.",
    )
    max_devices_per_subscriber: int = Field(
        100, ge=1, le=100_000, description="Enabled devices one subscriber may have."
    )
    auth_failures_per_minute: int = Field(
        30,
        ge=1,
        le=1_000_000,
        description="Failed authentications a client address may make per minute; more are "
        "answered 429 with Retry-After.",
    )
    auth_failures_per_key_per_minute: int = Field(
        10,
        ge=1,
        le=1_000_000,
        description="Failed authentications per minute for one appID (or other key id), from "
        "addresses that have not authenticated with it successfully; more are answered 429.",
    )
    max_connections: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="Open client connections (HTTP and device channel) the server holds at "
        "once; a new one past it gets 503. 0: what the open-files limit allows, less 512.",
    )
    keep_alive_seconds: int = Field(
        5, ge=1, le=3600, description="How long an idle keep-alive HTTP connection is kept."
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Time a client has to send a request's headers (from connecting, from "
        "the previous answer, or from the request's first byte); then 408 and close.",
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Time a client has to send a request's body after its headers; then the "
        "connection is closed.",
    )
    max_header_bytes: int = Field(
        16_384,
        ge=1024,
        le=1_048_576,
        description="Largest request line plus headers; larger requests get 431.",
    )
    shutdown_timeout_seconds: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="On SIGTERM: how long requests in flight and delivery jobs in hand get to "
        "finish; then they are cancelled (jobs come back to the queue).",
    )
    environment: Literal["development", "production"] = "development"
    log_level: str = Field("info", description="Level of the server's and Pushgate's loggers.")
    log_levels: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Levels per logger on top of log_level, LOGGER=LEVEL comma-separated, e.g. "
        "`pushgate.access=warning` (no access line per request) or `pushgate.delivery=error`.",
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="Log line format: JSON objects, or readable console lines; auto: console on "
        "a terminal, JSON otherwise.",
    )
    metrics_token: str | None = Field(
        None,
        min_length=16,
        description="Serve Prometheus metrics at GET /metrics on the server's port to "
        "requests with `Authorization: Bearer <metrics_token>`. Unset (and no metrics_port): "
        "no /metrics.",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics on a listener of their own at this port (on "
        "metrics_host); each process (serve, worker) needs its own port.",
    )
    metrics_host: str = Field("127.0.0.1", description="Address of the metrics_port listener.")
    config_file: Path | None = Field(None, description="Optional TOML file with these settings.")

    @field_validator("queue_url", mode="after")
    @classmethod
    def _redis_only(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("queue_url must be a redis://, rediss:// or unix:// URL (or unset)")
        return value

    @field_validator("log_levels", mode="after")
    @classmethod
    def _levels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_levels(value)  # raises ValueError naming the bad entry
        return value

    @field_validator(
        "egress_allow",
        "fcm_token_hosts",
        "browser_push_hosts",
        "trusted_proxies",
        "log_levels",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("egress_allow", "trusted_proxies", mode="after")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(value)  # raises ValueError naming the bad one
        return value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = os.environ.get("PUSHGATE_CONFIG_FILE")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'pushgate.db'}"

    def ensure_data_dir(self) -> Path:
        """The data directory, created readable by this user only (it holds the database and
        the server secret) when it does not exist yet."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.data_dir

    def resolved_secret_key(self) -> str:
        """The server secret: given explicitly, or read from (or generated into) the data dir."""
        if self.secret_key:
            if len(self.secret_key) < 32:
                raise ValueError("PUSHGATE_SECRET_KEY must be at least 32 characters long")
            return self.secret_key
        path = self.ensure_data_dir() / SECRET_FILE_NAME
        if path.exists():
            return path.read_text().strip()
        if self.environment == "production":
            raise ValueError(
                "production mode needs PUSHGATE_SECRET_KEY (or a secret.key in the data "
                "directory); refusing to generate one silently"
            )
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        return key


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and TOML file), with explicit overrides on top."""
    clean = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**clean)
