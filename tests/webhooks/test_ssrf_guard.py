"""The SSRF guard: which destinations are refused, and that the connection goes to the checked address.

No packet leaves loopback: refused addresses are refused before any connect, and the pinning tests
use a receiver on 127.0.0.1 with names mapped by a test resolver.
"""

from __future__ import annotations

import ipaddress
import itertools

import httpx
import pytest

from gateway.ssrf import (
    DestinationRefused,
    SsrfPolicy,
    address_refusal,
    check_destination,
    pinned_client,
)
from tests.webhooks.receiver import Receiver

NO_ALLOW = SsrfPolicy()
REFUSED_URLS = [
    "http://127.0.0.1/hook", "http://[::1]/hook", "http://10.0.0.1/hook", "http://172.16.0.1/hook",
    "http://192.168.1.1/hook", "http://169.254.169.254/latest/meta-data", "http://0.0.0.0/hook",
    "http://[fc00::1]/hook", "http://[fe80::1]/hook", "http://224.0.0.1/hook", "http://[::ffff:127.0.0.1]/hook",
    "http://100.64.0.1/hook", "http://[::]/hook", "https://[fd00:ec2::254]/hook",
]


def _resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]
    return resolve


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_private_loopback_link_local_unspecified_and_multicast_literals_are_refused(url: str) -> None:
    with pytest.raises(DestinationRefused) as err:
        await check_destination(url, NO_ALLOW)
    assert err.value.code == "webhook_url_forbidden"


@pytest.mark.parametrize("address, word", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.0.0.1", "private"), ("172.16.0.1", "private"),
    ("192.168.1.1", "private"), ("169.254.169.254", "metadata"), ("0.0.0.0", "unspecified"),
    ("fc00::1", "private"), ("fe80::1", "link-local"), ("239.1.2.3", "multicast"), ("::ffff:10.1.1.1", "private"),
    ("2002:7f00:1::", "loopback"),  # 6to4 carrying 127.0.0.1
])
def test_each_refusal_names_its_reason(address: str, word: str) -> None:
    reason = address_refusal(ipaddress.ip_address(address))
    assert reason is not None and word in reason


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    resolve = _resolver({"hooks.internal.example": ["10.20.30.40"]})
    with pytest.raises(DestinationRefused) as err:
        await check_destination("https://hooks.internal.example/x", NO_ALLOW, resolve)
    assert err.value.code == "webhook_url_forbidden" and "10.20.30.40" in err.value.message


async def test_a_name_with_one_private_address_among_public_ones_is_refused() -> None:
    resolve = _resolver({"mixed.example": ["93.184.215.14", "192.168.0.10"]})
    with pytest.raises(DestinationRefused):
        await check_destination("https://mixed.example/", NO_ALLOW, resolve)


async def test_a_public_name_passes_with_its_addresses() -> None:
    resolve = _resolver({"hooks.example.com": ["93.184.215.14"]})
    assert await check_destination("https://hooks.example.com/x", NO_ALLOW, resolve) == [
        ipaddress.ip_address("93.184.215.14")]


@pytest.mark.parametrize("url", ["http://localhost:9/hook", "http://2130706433/hook", "http://0x7f000001/hook"])
async def test_real_resolution_of_loopback_names_and_numeric_forms_is_refused(url: str) -> None:
    with pytest.raises(DestinationRefused) as err:
        await check_destination(url, NO_ALLOW)  # the system resolver: /etc/hosts and inet_aton forms
    assert err.value.code == "webhook_url_forbidden"


@pytest.mark.parametrize("url, code", [
    ("ftp://example.com/x", "webhook_url_invalid"), ("file:///etc/passwd", "webhook_url_invalid"),
    ("not a url", "webhook_url_invalid"), ("https://" + "a" * 2100 + ".com/", "webhook_url_invalid"),
])
async def test_malformed_urls_are_refused(url: str, code: str) -> None:
    with pytest.raises(DestinationRefused) as err:
        await check_destination(url, NO_ALLOW)
    assert err.value.code == code


async def test_unresolvable_names_are_refused_with_their_own_code() -> None:
    with pytest.raises(DestinationRefused) as err:
        await check_destination("https://nowhere.example/", NO_ALLOW, _resolver({}))
    assert err.value.code == "webhook_url_unresolvable"


async def test_the_allow_list_admits_exactly_what_it_names() -> None:
    policy = SsrfPolicy.from_setting("127.0.0.1/32, dev.internal")
    assert await check_destination("http://127.0.0.1:8080/x", policy)
    with pytest.raises(DestinationRefused):
        await check_destination("http://127.0.0.2/x", policy)
    with pytest.raises(DestinationRefused):
        await check_destination("http://[::1]/x", policy)
    resolve = _resolver({"dev.internal": ["10.9.9.9"], "other.internal": ["10.9.9.9"]})
    assert await check_destination("http://DEV.internal./x", policy, resolve)
    with pytest.raises(DestinationRefused):
        await check_destination("http://other.internal/x", policy, resolve)


@pytest.fixture(scope="module")
def loopback_receiver():  # type: ignore[no-untyped-def]
    r = Receiver()
    yield r
    r.close()


async def test_the_connection_goes_to_the_checked_address_with_the_original_host(loopback_receiver: Receiver) -> None:
    policy = SsrfPolicy.from_setting("127.0.0.1/32")
    resolve = _resolver({"hooks.example.test": ["127.0.0.1"]})
    async with pinned_client(policy, httpx.Timeout(5), resolver=resolve) as client:
        r = await client.post(f"http://hooks.example.test:{loopback_receiver.port}/pinned", content=b"{}")
        assert r.status_code == 200
        backend = client._transport.backend  # type: ignore[attr-defined]  # noqa: SLF001
        assert backend.connected_to[-1] == "127.0.0.1"
    got = loopback_receiver.at("pinned")[-1]
    assert got.headers["host"] == f"hooks.example.test:{loopback_receiver.port}"


async def test_dns_rebinding_cannot_slip_an_unchecked_address_in(loopback_receiver: Receiver) -> None:
    """Each new connection resolves once; a name flipping between an allowed and a refused address
    either connects to the allowed one or is refused, never connects to the refused one."""
    policy = SsrfPolicy.from_setting("127.0.0.1/32")
    answers = itertools.cycle([["127.0.0.1"], ["127.0.0.2"]])  # 127.0.0.2: loopback, not allow-listed
    calls = 0

    async def flipping(host: str, port: int) -> list[str]:
        nonlocal calls
        calls += 1
        return next(answers)

    refused = delivered = 0
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=0)  # a fresh connection each time
    async with pinned_client(policy, httpx.Timeout(5), resolver=flipping, limits=limits) as client:
        for _ in range(6):
            try:
                r = await client.post(f"http://rebind.example.test:{loopback_receiver.port}/rebind", content=b"{}")
                delivered += r.status_code == 200
            except DestinationRefused:
                refused += 1
        connected = set(client._transport.backend.connected_to)  # type: ignore[attr-defined]  # noqa: SLF001
    assert calls == 6 and refused == 3 and delivered == 3
    assert connected == {"127.0.0.1"}
    assert len(loopback_receiver.at("rebind")) == 3


async def test_the_pinned_client_follows_no_redirects_and_ignores_proxy_settings(
    loopback_receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.webhooks.receiver import Answer

    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.0.0.1:3128")
    loopback_receiver.script("redirect", Answer(307, {"location": "http://169.254.169.254/latest"}))
    async with pinned_client(SsrfPolicy.from_setting("127.0.0.1/32"), httpx.Timeout(5)) as client:
        r = await client.post(loopback_receiver.url("redirect"), content=b"{}")
    assert r.status_code == 307  # answered as is: the redirect was not followed
    assert len(loopback_receiver.at("redirect")) == 1
