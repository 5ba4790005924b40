"""The adversarial suite's hostile inputs, as hypothesis strategies (tests/adversarial/test_fuzz_units.py
fuzzes the units with them, tests/adversarial/test_live_routes.py a live Hub)."""

from hypothesis import strategies as st

# the hostile vocabulary: shell metacharacters, option injection, zone ids, newlines, unicode
# digits and look-alikes (full-width, Arabic-Indic, superscripts, Cyrillic "а", dotless ı)
HOSTILE = [
    ";", "|", "&", "$(", "`", "'", '"', "\\", "\n", "\r", "\t", "\x00", " ", "-o", "-oProxyCommand=",
    "--", "%", "%25", "@", "#", "?", "/", "[", "]", "::", "fd00::1%x@127.0.0.2", "²", "٣", "２", "١٢٧",
    "а", "ı", "\u2028", "\u202e", "\x1b[31m", "{username}", "..", "../", "/etc/shadow", "*",
    "touch /tmp/fbs-adversarial-canary", "127.0.0.1", "::1", "localhost", "node1\n", "Ciphers=aes128-ctr\n",
]  # fmt: skip
hostile_text = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(HOSTILE) | st.text(max_size=6), max_size=6).map("".join),
)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | hostile_text
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4), max_leaves=20
)
