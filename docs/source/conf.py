"""Sphinx configuration: `make docs` builds it nitpicky, warnings as errors."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))

import forwardbasespawner  # noqa: E402

project = "forwardbasespawner"
author = "the forwardbasespawner developers"
copyright = "the forwardbasespawner developers, BSD-3-Clause"
release = version = forwardbasespawner.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.graphviz",
    "sphinxcontrib.openapi",
    "traitsref",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
html_theme = "alabaster"
html_static_path = ["_static"]
html_theme_options = {"description": "A JupyterHub Spawner base for servers on remote systems", "fixed_sidebar": True}
graphviz_output_format = "svg"
nitpicky = True
autodoc_typehints = "none"
suppress_warnings = []

#: the configuration reference's groups (docs/source/_ext/traitsref.py); every trait of ours is in one
fbs_trait_groups = {
    "lifecycle": [
        "public_api_url", "ssh_during_startup", "custom_port", "pre_poll_hook", "pre_stop_hook",
        "update_start_response", "update_expected_path", "remote_stop_timeout",
    ],
    "events": [
        "show_first_default_event", "cancelling_event", "filter_events", "events_max_count",
        "events_max_bytes", "event_max_chars", "event_max_body_bytes",
    ],
    "ssh": [
        "ssh_node", "ssh_node_mapping", "ssh_port", "ssh_username", "ssh_key", "ssh_known_hosts",
        "ssh_strict_host_key_checking", "ssh_forward_options", "ssh_ciphers", "ssh_forward_bind_host",
        "ssh_recreate_at_start", "ssh_backend", "ssh_binary", "ssh_control_dir", "ssh_master_start_timeout",
        "ssh_check_interval", "ssh_restore_attempts", "ssh_forwards_per_master", "ssh_master_idle_timeout",
        "ssh_legacy_control_path", "ssh_adopt_grace", "ssh_tunnel_grace",
        "ssh_custom_forward", "ssh_custom_forward_remove",
    ],
    "api": [
        "events_post_rate", "events_post_burst", "events_state_write_interval", "setuptunnel_allowed_nodes",
        "setuptunnel_allowed_keys", "setuptunnel_allowed_services", "setuptunnel_allowed_ssh_keys",
        "setuptunnel_max_changes", "setuptunnel_service_check",
    ],
    "server-to-hub": [
        "ssh_create_remote_forward", "ssh_remote_forward_mode", "ssh_remote_node", "ssh_remote_port",
        "ssh_remote_username", "ssh_remote_key", "ssh_forward_remote_options", "ssh_remote_command_success_code",
        "ssh_remote_command_timeout", "ssh_custom_forward_remote", "ssh_custom_forward_remote_remove",
    ],
    "kubernetes": [
        "svc_create", "svc_name_template", "dns_name_template", "namespace", "extra_labels", "k8s_hub_selector",
        "k8s_hub_service_name", "k8s_hub_id", "k8s_owner_reference", "k8s_api_host", "k8s_api_token",
        "k8s_api_ca_file", "k8s_api_retries", "k8s_api_timeout", "ssh_custom_svc", "ssh_custom_svc_remove",
    ],
    "remotessh": [
        "remote_host", "remote_port", "remote_username", "remote_key", "remote_start_command", "server_command",
        "remote_command_timeout", "remote_python", "remote_shared_account", "offer_slow_start", "slow_start_seconds",
    ],
}  # fmt: skip
