"""``pushgate doctor --online``: prove each app's stored provider credentials with the
provider itself, the way a send would use them (the same settings: provider URLs, CA file,
timeouts, egress policy).

- FCM (android): the service account's signed assertion is exchanged for an access token at
  its ``token_uri``;
- HMS (huawei): the app id and secret are exchanged for an access token;
- APNs (ios): a provider token (ES256 JWT) is signed and sent with an empty push to a made-up
  device token: ``BadDeviceToken`` (or ``200`` from a provider that accepts any token) means
  the key, key id, team id and topic were accepted; ``403`` names what was refused;
- Web Push: nothing to fetch (VAPID signs every push itself); reported as such.

Nothing is stored and no real device is reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pushgate.config import Settings
from pushgate.domain import credentials as kinds
from pushgate.egress import EgressPolicy
from pushgate.transports import apns, fcm, hms
from pushgate.transports.http import ProviderRequest
from pushgate.transports.http1 import Http1Sender
from pushgate.transports.http2 import Http2Sender
from pushgate.transports.oauth import TokenUnavailable, fetch_grant

MADE_UP_DEVICE = "0" * 64
APNS_ACCEPTED = {"BadDeviceToken", "Unregistered"}

# (status, detail); the caller turns them into checks.
Result = tuple[str, str]


def _http1(settings: Settings, egress: EgressPolicy | None) -> Http1Sender:
    return Http1Sender(
        ca_file=settings.provider_ca_file,
        timeout_seconds=settings.provider_timeout_seconds,
        max_connections=1,
        egress=egress,
    )


async def _token(sender: Http1Sender, request: ProviderRequest, provider: str) -> Result:
    try:
        grant = await fetch_grant(sender, request, provider)
    except TokenUnavailable as exc:
        return "fail", f"{provider} gave no access token: {exc.outcome.reason}"
    finally:
        await sender.close()
    return "ok", f"{provider} gave an access token (valid {int(grant.expires_in)} s)"


async def check_fcm(settings: Settings, credentials: kinds.FcmCredentials) -> Result:
    problem = kinds.token_uri_problem(credentials.token_uri, settings.fcm_token_hosts)
    if problem is not None:
        return "fail", problem
    egress = EgressPolicy.from_setting(settings.egress_allow)
    request = fcm.token_request(credentials, int(time.time()))
    return await _token(_http1(settings, egress), request, "FCM")


async def check_hms(settings: Settings, credentials: kinds.HmsCredentials) -> Result:
    request = hms.token_request(credentials, settings.hms_token_url)
    return await _token(_http1(settings, None), request, "HMS")


async def check_apns(settings: Settings, credentials: kinds.ApnsCredentials) -> Result:
    sender = Http2Sender(
        ca_file=settings.provider_ca_file,
        timeout_seconds=settings.provider_timeout_seconds,
        connections=1,
    )
    token = apns.provider_token(credentials, time.time())
    headers = {
        "authorization": f"bearer {token}",
        "apns-topic": credentials.topic,
        "apns-push-type": "alert",
        "apns-priority": "5",
        "apns-expiration": "0",
    }
    base = apns.base_url_for(credentials, settings.apns_url)
    request = ProviderRequest("POST", f"{base}/3/device/{MADE_UP_DEVICE}", headers, b'{"aps":{}}')
    try:
        response = await sender.send(request)
    except Exception as exc:
        return "fail", f"APNs at {base} could not be reached: {type(exc).__name__}: {exc}"
    finally:
        await sender.close()
    reason = apns.reason_of(response)
    if response.status == 200 or reason in APNS_ACCEPTED:
        return "ok", f"APNs accepted the provider token and topic {credentials.topic}"
    return "fail", f"APNs answered {response.status} {reason or ''}".strip()


CHECKS: dict[str, Callable[[Settings, Any], Any]] = {
    "android": check_fcm,
    "huawei": check_hms,
    "ios": check_apns,
}


async def check_online(settings: Settings, platform: str, raw: Any) -> Result:
    """The online check of one stored credential (already decrypted and parsed once)."""
    check = CHECKS.get(platform)
    if check is None:
        return "ok", "nothing to fetch online (VAPID signs every push itself)"
    credentials = kinds.from_secret(platform, raw)
    result: Result = await check(settings, credentials)
    return result
