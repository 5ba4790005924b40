import pytest

from forwardbasespawner.addresses import InvalidAddress, format_url, parse_server_address


@pytest.mark.parametrize(
    "address, expected",
    [
        ("http://node1:8888", ("http", "node1", 8888)),
        ("https://node1.cluster.example.org:443", ("https", "node1.cluster.example.org", 443)),
        ("10.0.0.7:9000", ("http", "10.0.0.7", 9000)),
        ("[::1]:8888", ("http", "::1", 8888)),
        ("http://127.0.0.1:1/", ("http", "127.0.0.1", 1)),
    ],
)
def test_valid_addresses(address, expected):
    assert parse_server_address(address) == expected


@pytest.mark.parametrize(
    "address",
    ["", "node1", "node1:0", "node1:70000", "node1:abc", "ftp://node1:21", "http://node1:80/path",
     "a;rm -rf /:22", "$(id):80", "-oProxyCommand=x:22", "http://user:pw@node1:80", "node_1:80",
     "http://node1:80?x=1", None, 80],
)  # fmt: skip
def test_invalid_addresses(address):
    with pytest.raises(InvalidAddress):
        parse_server_address(address)


def test_format_url_brackets_ipv6():
    assert format_url("http", "::1", 80) == "http://[::1]:80"
    assert format_url("https", "node", 443) == "https://node:443"
