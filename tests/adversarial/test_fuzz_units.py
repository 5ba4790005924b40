"""Property-based fuzzing (hypothesis) of the validators, name builders, event log and policy:
whatever comes in, the answer is a clean value or the module's own refusal, never anything else."""

import json
import re
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado import web

from forwardbasespawner.addresses import InvalidAddress, parse_server_address, validate_host, validate_port
from forwardbasespawner.api.servers import ListServersAPIHandler
from forwardbasespawner.events import ALLOWED_TAGS, EventLog, is_terminal, sanitise_html
from forwardbasespawner.k8s.names import DNS1035_LABEL, LABEL_VALUE, label_value, service_name
from forwardbasespawner.policy import ALWAYS_REFUSED_NETWORKS, key_allowed, log_safe, service_allowed
from forwardbasespawner.ssh.spec import Endpoint, Forward, InvalidSpec, TunnelRequest, validate_options
from tests.adversarial.hostile import hostile_text, json_values

FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))

SAFE_HOST = re.compile(r"[A-Za-z0-9.:-]+")


@FUZZ
@given(hostile_text)
def test_validate_host(text):
    try:
        host = validate_host(text)
    except InvalidAddress:
        return
    assert SAFE_HOST.fullmatch(host) and not host.startswith("-") and "\n" not in host and "%" not in host


@FUZZ
@given(st.one_of(hostile_text, st.integers(), st.booleans(), st.floats(allow_nan=False), st.none()))
def test_validate_port(value):
    try:
        port = validate_port(value)
    except InvalidAddress:
        return
    assert type(port) is int and 1 <= port <= 65535
    if isinstance(value, str):
        assert value.isascii() and value.isdigit()


@FUZZ
@given(hostile_text)
def test_parse_server_address(text):
    try:
        scheme, host, port = parse_server_address(text)
    except InvalidAddress:
        return
    assert scheme in ("http", "https") and SAFE_HOST.fullmatch(host) and 1 <= port <= 65535


@FUZZ
@given(st.dictionaries(st.sampled_from(["service", "ssh_node", "ssh_port", "ssh_username", "ssh_key",
                                        "ssh_forward_options", "ProxyCommand"]) | hostile_text, json_values, max_size=5))  # fmt: skip
def test_tunnel_request_parse(body):
    keys = ["ssh_port", "ssh_username", "ssh_key", "ssh_forward_options"]
    try:
        request = TunnelRequest.parse(body, allowed_nodes=["*"], allowed_keys=keys).port_forward_info()
    except InvalidSpec:
        return
    # whatever passed can go on an ssh command line word by word: no blanks, no leading dash
    for key, value in request.items():
        words = [f"{k}={v}" for k, v in value.items()] if isinstance(value, dict) else [str(value)]
        for word in words:
            assert word and not word.startswith("-") and not re.search(r"[\s;|&$`'\"\\<>()\x00]", word), (key, word)
    if "ssh_node" in request:
        Endpoint(request["ssh_node"], 22)  # a valid endpoint


@FUZZ
@given(st.dictionaries(hostile_text | st.sampled_from(["Ciphers", "ServerAliveInterval", "ProxyCommand"]), json_values, max_size=3))
def test_validate_options(options):
    try:
        checked = validate_options(options)
    except InvalidSpec:
        return
    for _name, value in checked:
        assert re.fullmatch(r"[A-Za-z0-9@._,:+=/-]{1,256}", value)


@FUZZ
@given(hostile_text, hostile_text, st.integers(1, 65535))
def test_forward_argument(listen, target, port):
    try:
        forward = Forward("L", listen, port, target, port)
    except InvalidSpec:
        return
    assert re.fullmatch(r"[A-Za-z0-9.:\[\]-]+", forward.argument())


@FUZZ
@given(hostile_text, hostile_text, hostile_text, st.integers(0, 10**6))
def test_endpoint(host, user, key, port):
    try:
        endpoint = Endpoint(host, port or 22, user, key)
    except (InvalidSpec, TypeError):
        return
    assert not endpoint.user.startswith("-") and "\n" not in endpoint.user


@FUZZ
@given(hostile_text, hostile_text, hostile_text)
def test_service_names(user_a, server_a, user_b):
    for template in ("jupyter-{username}--{servername}", "{unescaped_username}-{userid}", "{escaped_username}"):
        name = service_name(template, user_a, 7, server_a, "ns")
        assert len(name) <= 63 and DNS1035_LABEL.match(name), (template, name)
    if user_a != user_b:  # two users never share a Service
        assert service_name("jupyter-{username}--{servername}", user_a, 7, server_a, "ns") != service_name(
            "jupyter-{username}--{servername}", user_b, 7, server_a, "ns"
        )
    value = label_value(user_a)
    assert len(value) <= 63 and LABEL_VALUE.match(value)


@FUZZ
@given(hostile_text)
def test_log_safe_is_one_line(text):
    line = log_safe(text)
    assert len(line.splitlines()) <= 1 and "\t" not in line and "\x1b" not in line


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.bad = []

    def handle_starttag(self, tag, attrs):
        if tag not in ALLOWED_TAGS:
            self.bad.append(tag)
        for name, value in attrs:
            if name.startswith("on") or (value and re.match(r"\s*(javascript|data|vbscript):", value, re.I)):
                self.bad.append(f"{tag} {name}={value}")


MARKUP = ["<script>", "</script>", "<img src=x onerror=", "<svg onload=", "javascript:", "<a href=", "<iframe",
          "<style>", "<b>", "<details>", "<summary>", "\"", "'", ">", "<", "&lt;", "<!--", "-->", "<math>"]  # fmt: skip


@FUZZ
@given(st.lists(st.sampled_from(MARKUP) | hostile_text, max_size=12).map("".join))
def test_sanitised_html_has_no_live_markup(html):
    parser = _Tags()
    parser.feed(sanitise_html(html))
    assert parser.bad == []


event = st.fixed_dictionaries(
    {"message": st.text(max_size=300)},
    optional={"progress": st.integers(0, 100), "failed": st.booleans(), "ready": st.booleans(), "html_message": st.text(max_size=300)},
)


@FUZZ
@given(st.lists(event, max_size=120), st.integers(1, 30), st.integers(2000, 20000))
def test_event_log_caps_hold_for_any_sequence(events, max_count, max_bytes):
    log = EventLog(max_count=max_count, max_bytes=max_bytes, max_chars=400)
    for e in events:
        log.append(e)
        assert len(log) <= max_count
        assert log._bytes <= max_bytes or len(log) == 1
        assert log._bytes == sum(len(json.dumps(x, default=str)) for x in log)
        clean = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", e["message"])
        assert log[-1]["message"].endswith(clean[-50:]) or len(clean) > 300
    if events and is_terminal(events[-1]):
        assert is_terminal(log[-1])  # the newest event is always kept


def test_terminal_flood_stays_within_the_caps():
    """The review's reproduction: 300 terminal + 300 progress events of 4,000 characters."""
    log = EventLog()
    for _ in range(300):
        log.append({"progress": 100, "failed": True, "message": "F" * 4000})
        log.append({"progress": 1, "message": "P" * 4000})
    assert len(log) <= 200 and log._bytes <= 256 * 1024
    assert log[-1]["message"].endswith("P" * 100) and any(e.get("failed") for e in log)


@FUZZ
@given(hostile_text | st.integers().map(str), st.lists(st.text(max_size=20), max_size=3))
def test_service_policy_never_allows_link_local(host, allowed):
    import ipaddress

    for refused in ("169.254.169.254", "fe80::1", "fd00:ec2::254", "::ffff:169.254.169.254", "224.0.0.1"):
        assert not service_allowed(refused, 80, allowed + ["0.0.0.0/0", "::/0", "*"])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if any(address in net for net in ALWAYS_REFUSED_NETWORKS if net.version == address.version):
        assert not service_allowed(host, 80, [])


@pytest.mark.parametrize("path, allowed", [("/k/a_ed25519", True), ("/k/../etc/shadow", False), ("/k//a", False),
                                           ("/k/./a", False), ("/etc/ssh/ssh_host_ed25519_key", False), ("/k/a/..", False)])  # fmt: skip
def test_key_paths_only_the_operators(path, allowed):
    assert key_allowed(path, ["/k/*"]) is allowed


@FUZZ
@given(hostile_text)
def test_list_servers_integer_arguments(value):
    handler = SimpleNamespace(get_argument=lambda name, default=None: value)
    try:
        result = ListServersAPIHandler._int_argument(handler, "offset", 0)
    except web.HTTPError as e:
        assert e.status_code == 400
        return
    assert 0 <= result <= 2**31 - 1 and value.isascii() and value.isdigit()


@pytest.mark.parametrize("value", ["²", "٣", "１", "9" * 30, "-1", "1e3", " 1", "1\n"])
def test_list_servers_offset_examples_from_the_review(value):
    handler = SimpleNamespace(get_argument=lambda name, default=None: value)
    with pytest.raises(web.HTTPError) as e:
        ListServersAPIHandler._int_argument(handler, "offset", 0)
    assert e.value.status_code == 400


@pytest.mark.parametrize("host", ["fd00::1%x@127.0.0.2", "fe80::1%eth0", "node1\n", "node1\r", "١٢٧.0.0.1", "ѕ.example.org"])
def test_validate_host_examples_from_the_review(host):
    with pytest.raises(InvalidAddress):
        validate_host(host)


@pytest.mark.parametrize("options", [{"Ciphers": "aes128-ctr\n"}, {"ServerAliveInterval": "15\n"}])
def test_option_values_with_a_trailing_newline(options):
    with pytest.raises(InvalidSpec):
        validate_options(options)


def test_zone_id_node_refused_by_setuptunnel_even_past_a_pattern():
    with pytest.raises(InvalidSpec) as e:
        TunnelRequest.parse({"service": "127.0.0.1:80", "ssh_node": "fd00::1%x@127.0.0.2"}, allowed_nodes=["fd00:*"])
    assert "zone" in str(e.value)
