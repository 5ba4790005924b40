"""Safe Kubernetes names and label values for (user, server) pairs.

A name part is kept as it is when it is already safe (lower-case letters, digits, single hyphens);
otherwise it becomes a readable slug plus ``---`` and a hash of the raw value. A safe part never
contains ``--``, so ``{username}--{servername}`` never collides with another pair, and a hashed
part never equals a kept one.
"""

import hashlib
import re
import string

import escapism

DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SAFE_PART = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_MAX = 63


def short_hash(*values):
    return hashlib.sha256("\0".join(values).encode("utf8")).hexdigest()[:8]


def _slug(value):
    slug = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    return re.sub(r"-+", "-", slug)


def safe_part(value, max_length=30):
    """``value`` if it is safe and short, else a slug of it + ``---`` + a hash of it."""
    if value and len(value) <= max_length and _SAFE_PART.match(value):
        return value
    digest = short_hash(value)
    slug = _slug(value)[: max(max_length - 11, 0)].strip("-")
    return f"{slug}---{digest}" if slug else f"x---{digest}"


def template_keys(user_name, user_id, server_name, namespace):
    """The expansion keys of ``svc_name_template`` (KubeSpawner's names)."""
    username = safe_part(user_name)
    servername = safe_part(server_name) if server_name else ""
    return {
        "userid": str(user_id),
        "username": username,
        "unescaped_username": user_name,
        "escaped_username": escapism.escape(user_name, safe=set(string.ascii_lowercase + string.digits), escape_char="-").lower(),
        "servername": servername,
        "unescaped_servername": server_name,
        "escaped_servername": escapism.escape(server_name, safe=set(string.ascii_lowercase + string.digits), escape_char="-").lower(),
        "user_server": f"{username}--{servername}" if servername else username,
        "hubnamespace": namespace,
    }


def service_name(template, user_name, user_id, server_name, namespace):
    """A DNS-1035 Service name (at most 63 characters) for this user's server.

    Names that the template makes invalid or too long are shortened and get a hash of the raw
    (user, server), so two servers never share a name.
    """
    name = template.format(**template_keys(user_name, user_id, server_name, namespace)).rstrip("-")
    if not server_name:
        name = name.rstrip("-")
    if len(name) <= _MAX and DNS1035_LABEL.match(name):
        return name
    digest = short_hash(user_name, server_name)
    stem = _slug(name)
    if not stem or not stem[0].isalpha():
        stem = f"s-{stem}"
    return f"{stem[: _MAX - 11].rstrip('-')}---{digest}"


def label_value(value):
    """``value`` if it is a valid label value, else a slug of it with a hash (at most 63)."""
    if len(value) <= _MAX and LABEL_VALUE.match(value):
        return value
    return safe_part(value, _MAX)


def dns_name(template, name, namespace):
    """The in-cluster DNS name of the Service (``dns_name_template``)."""
    return template.format(name=name, namespace=namespace)
