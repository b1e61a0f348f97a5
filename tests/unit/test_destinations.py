"""The SSRF policy: which addresses a delivery may connect to, which webhook URLs pass."""

from __future__ import annotations

import pytest

from switchboard.channels import parse_config
from switchboard.destinations import MAX_URL_CHARS, forbidden_address, validate_webhook_url
from switchboard.errors import BadRequest
from switchboard.model import ChannelId

FIELD = "configuration.webhookUrl"

FORBIDDEN = [
    "127.0.0.1", "127.255.255.254",  # loopback
    "10.0.0.1", "10.255.255.255",  # 10/8
    "172.16.0.1", "172.31.255.254",  # 172.16/12
    "192.168.0.1", "192.168.255.254",  # 192.168/16
    "169.254.169.254", "169.254.0.1",  # link-local, cloud metadata
    "100.64.0.1", "100.127.255.254",  # CGNAT 100.64/10
    "0.0.0.0", "0.1.2.3",  # "this network"
    "224.0.0.1", "239.255.255.250",  # IPv4 multicast
    "255.255.255.255", "240.0.0.1",  # broadcast, reserved
    "192.0.0.170", "198.18.0.1",  # IETF protocol assignments, benchmarking
    "::1", "::",  # loopback, unspecified
    "fc00::1", "fd12:3456::1", "fd00:ec2::254",  # unique local fc00::/7 (AWS metadata)
    "fe80::1", "fe80::1%eth0",  # link-local, with a zone
    "fec0::1",  # site-local (deprecated)
    "ff02::1", "ff0e::1",  # IPv6 multicast
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "2002:7f00:1::", "2002:a00:1::",  # 6to4 of 127.0.0.1, 10.0.0.1
    "2002:808:808::",  # 6to4 even of a public address: refused whole
    "64:ff9b::7f00:1", "64:ff9b::808:808",  # NAT64
    "2001:db8::1",  # documentation
    "2001::1",  # Teredo
    "not an address", "", "127.1", "2130706433",  # not a canonical literal
]
ALLOWED = ["1.1.1.1", "8.8.8.8", "93.184.216.34", "2606:4700:4700::1111",
           "2001:4860:4860::8888", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_forbidden_addresses(address: str) -> None:
    assert forbidden_address(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not forbidden_address(address)


def _refused(url: str, allow_private: bool = False) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        validate_webhook_url(url, allow_private=allow_private, field=FIELD)
    assert info.value.field == FIELD
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize("url", [
    "http://",  # no host
    "https:///path",
    "http://:80/",
    "http://exa mple.com/",  # a space in the host
    "http://example.com/a b",  # or anywhere else
    "http://example.com/\x00",
    "http://user:pass@example.com/",  # user-info
    "http://user@example.com/",
    "http://example.com\\@127.0.0.1/",
    "ftp://example.com/",  # scheme
    "file:///etc/passwd",
    "gopher://example.com/",
    "example.com/hook",
    "http://example.com:0/",  # port
    "http://example.com:99999/",
    "http://example.com:http/",
    "http://[::1/",  # unbalanced bracket
    "http://-bad-.example.com/",  # labels
    "http://" + "a" * 64 + ".example.com/",
    "http://127.1/",  # legacy numeric forms inet_aton would read as 127.0.0.1
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://127.0.0.1./",
    "http://017700000001/",
])
def test_malformed_urls_are_invalid(url: str) -> None:
    for allow_private in (False, True):
        assert _refused(url, allow_private).code == "invalid_url"


def test_too_long_a_url_is_invalid() -> None:
    url = "https://example.com/" + "a" * (MAX_URL_CHARS - len("https://example.com/") + 1)
    assert len(url) == MAX_URL_CHARS + 1
    assert _refused(url).code == "invalid_url"
    just = url[:-1]
    assert validate_webhook_url(just, allow_private=False, field=FIELD) == just


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://127.0.0.1:9/x", "http://10.0.0.1/", "http://172.16.5.4/",
    "http://192.168.1.10:8080/hook", "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/", "http://0.0.0.0:8080/", "http://224.0.0.1/",
    "http://[::1]:8080/", "http://[fc00::1]/", "http://[fe80::1]/", "http://[::]/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:10.0.0.1]/", "http://[2002:7f00:1::]/",
    "http://[64:ff9b::7f00:1]/",
])
def test_literal_private_addresses_are_forbidden(url: str) -> None:
    assert _refused(url).code == "destination_forbidden"
    # Allowed when the operator says so (`switchboard dev`, tests).
    assert validate_webhook_url(url, allow_private=True, field=FIELD) == url


@pytest.mark.parametrize("url", [
    "https://example.com/hook",
    "http://example.com",
    "https://hooks.example.co.uk:8443/a/b?c=d&e=f#frag",
    "https://EXAMPLE.com/Path",
    "https://xn--bcher-kva.example/",
    "https://bücher.example/",
    "https://my-service.internal.example.com./hook",  # a trailing dot is a name still
    "http://1.1.1.1/hook",
    "https://8.8.8.8:443/",
    "https://[2606:4700:4700::1111]/hook",
    # Names are judged on the address connected to, at send time, not here.
    "http://localhost:9000/hook",
    "http://metadata.google.internal/",
])
def test_normal_urls_are_accepted(url: str) -> None:
    for allow_private in (False, True):
        assert validate_webhook_url(url, allow_private=allow_private, field=FIELD) == url


def test_configurations_check_their_webhook_url() -> None:
    # Direct (optional URL) and System (required) both pass through the policy.
    with pytest.raises(BadRequest) as info:
        parse_config(ChannelId.DIRECT, {"integrationType": "Agent",
                                        "webhookUrl": "http://127.0.0.1:9/x"})
    assert (info.value.code, info.value.field) == ("destination_forbidden", FIELD)
    with pytest.raises(BadRequest) as info:
        parse_config(ChannelId.SYSTEM, {"webhookUrl": "http://10.0.0.1/",
                                        "events": ["message:*"]})
    assert (info.value.code, info.value.field) == ("destination_forbidden", FIELD)
    with pytest.raises(BadRequest) as info:
        parse_config(ChannelId.SYSTEM, {"webhookUrl": "http://exa mple.com/",
                                        "events": ["message:*"]}, allow_private=True)
    assert (info.value.code, info.value.field) == ("invalid_url", FIELD)
    cfg = parse_config(ChannelId.DIRECT, {"integrationType": "Agent",
                                          "webhookUrl": "http://127.0.0.1:9/x"},
                       allow_private=True)
    assert getattr(cfg, "webhook_url", None) == "http://127.0.0.1:9/x"
    # A Direct integration without a URL (websocket only) has nothing to check.
    parse_config(ChannelId.DIRECT, {"integrationType": "Customer"})
