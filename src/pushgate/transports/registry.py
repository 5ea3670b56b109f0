"""The transports of one process, built from the settings: one per push platform, each with
its own HTTP client and the app credentials read through ``CredentialSource``."""

from __future__ import annotations

from pathlib import Path

from pushgate.config import Settings
from pushgate.egress import EgressPolicy
from pushgate.transports.apns import ApnsTransport
from pushgate.transports.base import CredentialSource, Transport
from pushgate.transports.fcm import FcmTransport
from pushgate.transports.hms import HmsTransport
from pushgate.transports.http1 import Http1Sender
from pushgate.transports.http2 import Http2Sender
from pushgate.transports.negotiated import ALPN, NegotiatedSender
from pushgate.transports.webpush import WebPushTransport

# HTTP/2 connections to FCM per process when it offers h2 (it does; a proxy in front of it may
# not). Each carries as many requests at once as the server allows (FCM: 100 and more).
FCM_HTTP2_CONNECTIONS = 2


def fcm_sender(
    *, ca_file: Path | None, timeout_seconds: float, max_connections: int
) -> NegotiatedSender:
    """FCM's sender: HTTP/2 where the FCM host offers it, else HTTP/1.1 over up to
    ``max_connections`` connections."""
    return NegotiatedSender(
        Http2Sender(
            ca_file=ca_file,
            timeout_seconds=timeout_seconds,
            connections=FCM_HTTP2_CONNECTIONS,
            alpn=ALPN,
        ),
        Http1Sender(
            ca_file=ca_file, timeout_seconds=timeout_seconds, max_connections=max_connections
        ),
    )


def build_transports(
    settings: Settings, credentials: CredentialSource, egress: EgressPolicy
) -> dict[str, Transport]:
    """``egress`` governs the connections to URLs that clients and credentials supply (Web
    Push endpoints, FCM token endpoints); the providers' own URLs come from the settings."""

    def http1(policy: EgressPolicy | None = None) -> Http1Sender:
        return Http1Sender(
            ca_file=settings.provider_ca_file,
            timeout_seconds=settings.provider_timeout_seconds,
            max_connections=settings.provider_connections,
            egress=policy,
        )

    concurrency = settings.provider_connections
    apns_sender = Http2Sender(
        ca_file=settings.provider_ca_file,
        timeout_seconds=settings.provider_timeout_seconds,
        connections=settings.apns_connections,
    )
    return {
        "ios": ApnsTransport(credentials, apns_sender, base_url=settings.apns_url, concurrency=500),
        "android": FcmTransport(
            credentials,
            fcm_sender(
                ca_file=settings.provider_ca_file,
                timeout_seconds=settings.provider_timeout_seconds,
                max_connections=settings.provider_connections,
            ),
            base_url=settings.fcm_url,
            concurrency=concurrency,
            token_sender=http1(egress),
            token_hosts=settings.fcm_token_hosts,
        ),
        "huawei": HmsTransport(
            credentials,
            http1(),
            base_url=settings.hms_url,
            token_url=settings.hms_token_url,
            concurrency=concurrency,
        ),
        "web": WebPushTransport(credentials, http1(egress), concurrency=concurrency),
    }
