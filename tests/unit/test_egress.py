"""The egress policy: every internal form of an address is refused, public ones pass, and the
operator's ranges are allowed."""

from __future__ import annotations

import ipaddress

import pytest

from pushgate.egress import EgressPolicy, EgressRefused, kind_of, parse_networks

INTERNAL_HOSTS = [
    ("127.0.0.1", "loopback"),
    ("localhost", "loopback"),
    ("::1", "loopback"),
    ("2130706433", "loopback"),
    ("0x7f000001", "loopback"),
    ("127.1", "loopback"),
    ("0177.0.0.1", "loopback"),
    ("0", "unspecified"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("fc00::1", "private"),
    ("100.64.0.1", "non-public"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "link-local"),
    ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::a00:1", "private"),
]


@pytest.mark.parametrize(("host", "kind"), INTERNAL_HOSTS)
async def test_internal_addresses_are_refused_in_every_form(host: str, kind: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        await EgressPolicy().resolve(host, 443)
    assert refused.value.kind == kind
    assert "egress_allow" in str(refused.value)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
async def test_public_addresses_pass(address: str) -> None:
    assert await EgressPolicy().resolve(address, 443) == [str(ipaddress.ip_address(address))]
    assert kind_of(ipaddress.ip_address(address)) is None


async def test_allowed_ranges_pass_including_mapped_forms() -> None:
    policy = EgressPolicy.from_setting(["127.0.0.0/8", "10.0.0.0/8"])
    assert await policy.resolve("127.0.0.1", 443) == ["127.0.0.1"]
    assert await policy.resolve("localhost", 443)
    assert await policy.resolve("::ffff:10.1.1.1", 443) == ["::ffff:a01:101"]
    with pytest.raises(EgressRefused):
        await policy.resolve("169.254.169.254", 443)
    with pytest.raises(EgressRefused):
        await policy.resolve("::1", 443)


async def test_check_url_refuses_internal_and_lets_unresolvable_hosts_pass() -> None:
    policy = EgressPolicy()
    with pytest.raises(EgressRefused):
        await policy.check_url("https://0x7f000001:8443/push/abc")
    with pytest.raises(EgressRefused):
        await policy.check_url("https://[::1]/push")
    # No answer from DNS now: accepted, and checked again when a connection is opened.
    await policy.check_url("https://push.does-not-exist.invalid/abc")
    await policy.check_url("https://8.8.8.8/abc")


async def test_unresolvable_host_raises_oserror_at_connect_time() -> None:
    with pytest.raises(OSError):
        await EgressPolicy().resolve("push.does-not-exist.invalid", 443)


def test_bad_ranges_are_named() -> None:
    with pytest.raises(ValueError, match="not a CIDR range: 'ten'"):
        parse_networks(["10.0.0.0/8", "ten"])
    assert parse_networks([" 10.0.0.0/8 ", "", "::1"]) == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
