"""Private keys in provider credentials, loaded without letting a hostile key stall anyone.

Loading a PEM private key is cheap except for RSA's consistency check, whose cost grows
steeply with the key size (on the development machine: 2048 bits 37 ms, 4096 bits 270 ms,
8192 bits 3.9 s). So a key is first loaded without that check (well under a millisecond for
any size), its kind and size are checked against what the platform accepts, and only then,
for a key that is being uploaded, is the full check run. Callers run ``load_*`` with
``checked=True`` in a worker thread, never on the event loop. Keys read back from storage
were checked when they were stored and load with ``checked=False``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushgate.domain.errors import InvalidInput

# A 4096-bit RSA key in PKCS#8 PEM is about 3,300 characters; an EC P-256 key about 240.
MAX_PEM_CHARS = 4_000
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 4096


def _load(pem: str, *, what: str, field: str, accepted: str) -> object:
    if len(pem) > MAX_PEM_CHARS:
        raise InvalidInput(
            f"{what}: {field} is {len(pem):,} characters, longer than any accepted key "
            f"({accepted}; at most {MAX_PEM_CHARS:,} characters of PEM)"
        )
    try:
        return serialization.load_pem_private_key(
            pem.encode(), password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"{what}: {field} is not an unencrypted PEM private key ({accepted}): {exc}"
        ) from exc


def load_p256(pem: str, *, what: str, field: str = "private_key") -> ec.EllipticCurvePrivateKey:
    """An EC private key on P-256 (APNs, VAPID)."""
    accepted = "an EC key on P-256 (prime256v1)"
    key = _load(pem, what=what, field=field, accepted=accepted)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidInput(f"{what}: {field} must be {accepted}")
    return key


def load_rsa(
    pem: str, *, what: str, field: str = "private_key", checked: bool
) -> rsa.RSAPrivateKey:
    """An RSA private key of 2048 to 4096 bits (an FCM service account). ``checked``: run
    RSA's full consistency check too (tens to hundreds of milliseconds: not on the loop)."""
    accepted = f"an RSA key of {RSA_MIN_BITS} to {RSA_MAX_BITS} bits"
    key = _load(pem, what=what, field=field, accepted=accepted)
    if not isinstance(key, rsa.RSAPrivateKey) or not (RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS):
        size = f" (got {key.key_size} bits)" if isinstance(key, rsa.RSAPrivateKey) else ""
        raise InvalidInput(f"{what}: {field} must be {accepted}{size}")
    if not checked:
        return key
    try:
        full = serialization.load_pem_private_key(pem.encode(), password=None)
    except ValueError as exc:
        raise InvalidInput(f"{what}: {field} is not a consistent RSA key: {exc}") from exc
    assert isinstance(full, rsa.RSAPrivateKey)
    return full
