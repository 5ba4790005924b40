"""Every code and configuration example in README.md and docs/source/*.md is executed or loaded:

- ``python`` blocks that configure (``c.<Class>.<name> = ...``) are loaded with traitlets'
  PyFileConfigLoader, and every setting is checked against the real class (the name exists and the
  value passes the trait's validation); other Python blocks are executed;
- ``json`` blocks are parsed, and events are validated against the OpenAPI document's Event schema;
- ``yaml`` blocks are parsed; Kubernetes objects are validated with kubernetes-validate, the Zero to
  JupyterHub values' ``extraConfig`` is loaded like a configuration block, Prometheus files are
  checked for their structure;
- ``text`` blocks are known_hosts lines (checked by ssh-keygen) or sshd_config (checked by sshd -t);
- ``dockerfile`` blocks use only Dockerfile instructions and start with ARG/FROM;
- ``sh`` blocks are parsed by bash; those that can run on this machine run (the README's curl line
  in tests/test_docs_examples.py, the key generation here); the others talk to a cluster, a
  registry or a remote host and are checked for syntax only.

The files the docs include (examples/) are tested in tests/test_docs_examples.py.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from traitlets.config import PyFileConfigLoader

from tests.hubharness import REPO

DOCS = os.path.join(REPO, "docs", "source")
FILES = [os.path.join(REPO, "README.md")] + sorted(os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith(".md"))
CONFIG_FILES = [os.path.join(REPO, "examples", "minimal", "jupyterhub_config.py"),
                os.path.join(REPO, "examples", "slurm", "jupyterhub_config.py")]  # fmt: skip
sys.path[:0] = [os.path.join(REPO, "examples", "minimal"), os.path.join(REPO, "examples", "slurm")]


def blocks():
    """``(file, line, language, text)`` of every fenced block."""
    found = []
    for path in FILES:
        with open(path) as f:
            text = f.read()
        for m in re.finditer(r"^(```+)([^\n`]*)\n(.*?)^\1[ \t]*$", text, re.S | re.M):
            language = m.group(2).strip().split(" ")[0]
            found.append((os.path.relpath(path, REPO), text[: m.start()].count("\n") + 1, language, m.group(3)))
    return found


BLOCKS = blocks()
NOT_CODE = {"{toctree}", "{eval-rst}", "{literalinclude}", "{include}", "{graphviz}"}


def ids(block):
    return f"{block[0]}:{block[1]}:{block[2] or 'plain'}"


def test_every_block_has_a_known_language():
    known = {"python", "json", "yaml", "sh", "text", "dockerfile"} | NOT_CODE
    unknown = [ids(b) for b in BLOCKS if b[2] not in known]
    assert not unknown, f"blocks no test knows how to check: {unknown}"


# ------------------------------------------------------------------ configuration


def our_classes():
    from jupyterhub.app import JupyterHub
    from jupyterhub.spawner import Spawner
    from myspawner import MySpawner
    from slurmspawner import SlurmSpawner

    from forwardbasespawner import ForwardBaseSpawner
    from forwardbasespawner.remotessh import RemoteSSHSpawner

    classes = [JupyterHub, Spawner, ForwardBaseSpawner, RemoteSSHSpawner, MySpawner, SlurmSpawner]
    return {cls.__name__: cls for cls in classes}


def load_config(text, tmp_path, monkeypatch):
    """Load ``text`` as jupyterhub_config.py; return the Config, with every setting checked."""
    for name in re.findall(r"os\.environ\[\"(\w+)\"\]", text):
        monkeypatch.setenv(name, "0123456789abcdef0123456789abcdef")
    path = tmp_path / "jupyterhub_config.py"
    path.write_text(text)
    config = PyFileConfigLoader(path.name, path=str(tmp_path)).load_config()
    classes = our_classes()
    checked = 0
    for section, settings in config.items():
        assert section in classes, f"configures an unknown class {section}"
        cls = classes[section]
        instance = cls.__new__(cls)
        for name, value in settings.items():
            traits = cls.class_traits(config=True)
            assert name in traits, f"{section}.{name} is not a setting of {cls.__name__}"
            traits[name]._validate(instance, value)  # raises TraitError for a wrong value
            checked += 1
    assert checked, "the block sets nothing"
    return config


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[2] == "python"], ids=ids)
def test_python_blocks(block, tmp_path, monkeypatch):
    text = block[3]
    if re.search(r"^c\.\w+\.\w+", text, re.M):
        load_config(text, tmp_path, monkeypatch)
    elif text.startswith("# myspawner.py"):
        with open(os.path.join(REPO, "examples", "minimal", "myspawner.py")) as f:
            assert f.read() == text  # the file is spawned on a real Hub in test_docs_examples
    else:
        exec(compile(text, ids(block), "exec"), {"__name__": "docs_example"})


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_example_config_files(path, tmp_path, monkeypatch):
    with open(path) as f:
        load_config(f.read(), tmp_path, monkeypatch)


def test_trait_help_examples_compile_and_state_their_default():
    """The examples inside the configuration reference (the traits' own help) are Python, and
    every help text says its default."""
    sys.path.insert(0, os.path.join(DOCS, "_ext"))
    try:
        from traitsref import own_traits
    finally:
        sys.path.remove(os.path.join(DOCS, "_ext"))
    without_default = sorted(name for name, (trait, _) in own_traits().items() if "Default" not in (trait.help or ""))
    # remote_host has no useful default ("" means unset); its help should say so (reported)
    assert without_default in ([], ["remote_host"]), f"help texts that do not say their default: {without_default}"
    for name, (trait, _) in own_traits().items():
        text = trait.help or ""
        if "Example::" in text:
            example = text.split("Example::", 1)[1]
            lines = [line for line in example.splitlines() if line.strip()]
            indent = min(len(line) - len(line.lstrip()) for line in lines)
            compile("\n".join(line[indent:] for line in example.splitlines()), f"help of {name}", "exec")


def test_every_trait_of_ours_is_in_one_reference_group():
    sys.path.insert(0, DOCS)
    sys.path.insert(0, os.path.join(DOCS, "_ext"))
    try:
        from traitsref import own_traits

        namespace = {"__file__": os.path.join(DOCS, "conf.py")}
        with open(os.path.join(DOCS, "conf.py")) as f:
            exec(compile(f.read(), "conf.py", "exec"), namespace)
    finally:
        sys.path.remove(DOCS)
        sys.path.remove(os.path.join(DOCS, "_ext"))
    listed = [name for names in namespace["fbs_trait_groups"].values() for name in names]
    assert sorted(listed) == sorted(set(listed)), "a trait is in two groups"
    assert set(listed) == set(own_traits()), set(listed) ^ set(own_traits())


# ------------------------------------------------------------------ data and system configuration


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[2] == "json"], ids=ids)
def test_json_blocks(block):
    import jsonschema

    from tests.rest_api_check import spec

    data = json.loads(block[3])
    if isinstance(data, dict) and set(data) & {"progress", "message", "html_message"}:
        jsonschema.validate(data, spec().document["components"]["schemas"]["Event"])


def k8s_object(doc):
    import kubernetes_validate

    kubernetes_validate.validate(doc, "1.30", strict=True)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[2] == "yaml"], ids=ids)
def test_yaml_blocks(block, tmp_path, monkeypatch):
    documents = [d for d in yaml.safe_load_all(block[3]) if d is not None]
    assert documents
    for doc in documents:
        if "apiVersion" in doc and "kind" in doc:
            k8s_object(doc)
        elif "hub" in doc:  # Zero to JupyterHub values
            for snippet in doc["hub"].get("extraConfig", {}).values():
                secrets = tmp_path / "secret"
                secrets.mkdir(exist_ok=True)
                (secrets / "tunnel_ed25519").write_text("key")
                (secrets / "known_hosts").write_text("")
                private = tmp_path / "private"
                text = snippet.replace("/etc/fbs-ssh", str(secrets)).replace("/tmp/fbs-ssh", str(private))
                load_config(text, tmp_path, monkeypatch)
                assert oct((private / "tunnel_ed25519").stat().st_mode & 0o777) == "0o600"
            policy = doc["hub"].get("networkPolicy", {})
            for rule in policy.get("ingress", []):  # a NetworkPolicy rule as Kubernetes takes it
                k8s_object({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                            "metadata": {"name": "x"}, "spec": {"podSelector": {}, "ingress": [rule]}})  # fmt: skip
        elif "scrape_configs" in doc:
            for job in doc["scrape_configs"]:
                assert {"job_name", "metrics_path", "static_configs"} <= set(job)
                assert job["metrics_path"] == "/hub/metrics"
        elif "groups" in doc:
            from prometheus_client.metrics import MetricWrapperBase

            from forwardbasespawner.ssh import metrics

            names = {f.name for f in metrics.TunnelCollector([]).collect()}
            names |= {m._name + "_total" for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
            for group in doc["groups"]:
                for rule in group["rules"]:
                    assert {"alert", "expr"} <= set(rule)
                    used = set(re.findall(r"forwardbasespawner_\w+", rule["expr"]))
                    assert used and used <= names, used - names
        else:
            raise AssertionError(f"{ids(block)}: a YAML block no test knows: {sorted(doc)[:5]}")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[2] == "text"], ids=ids)
def test_text_blocks(block, tmp_path):
    text = block[3]
    if text.lstrip().startswith("Match "):
        host_key = tmp_path / "host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        config = tmp_path / "sshd_config"
        config.write_text(f"HostKey {host_key}\nListenAddress 127.0.0.1\nPidFile {tmp_path}/pid\n{text}")
        os.makedirs("/run/sshd", exist_ok=True)
        run = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(config)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        run = subprocess.run(["/usr/sbin/sshd", "-T", "-f", str(config), "-C", "user=jupyter-tunnel,host=h,addr=127.0.0.1"],
                             capture_output=True, text=True)  # fmt: skip
        effective = dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line)
        assert effective["allowtcpforwarding"] == "yes" and effective["forcecommand"] == "/bin/false", effective
    elif "ssh-ed25519" in text:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(text)
        run = subprocess.run(["ssh-keygen", "-l", "-f", str(known_hosts)], capture_output=True, text=True)
        assert run.returncode == 0 and len(run.stdout.splitlines()) == len(text.splitlines()), run.stderr
        for line in text.splitlines():
            host = line.split()[0]
            assert subprocess.run(["ssh-keygen", "-F", host, "-f", str(known_hosts)], capture_output=True).returncode == 0
    else:
        raise AssertionError(f"{ids(block)}: a text block no test knows")


DOCKERFILE_INSTRUCTIONS = {"FROM", "ARG", "RUN", "USER", "ENV", "COPY", "ADD", "WORKDIR", "LABEL", "ENTRYPOINT", "CMD"}


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[2] == "dockerfile"], ids=ids)
def test_dockerfile_blocks(block):
    logical = re.sub(r"\\\n", " ", block[3]).splitlines()
    words = [line.split()[0] for line in logical if line.strip() and not line.lstrip().startswith("#")]
    assert words[0] in ("ARG", "FROM") and "FROM" in words
    assert set(words) <= DOCKERFILE_INSTRUCTIONS, set(words) - DOCKERFILE_INSTRUCTIONS


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[2] == "sh"], ids=ids)
def test_shell_blocks_parse(block):
    run = subprocess.run(["bash", "-n"], input=block[3], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_the_key_generation_of_the_ssh_guide_runs(tmp_path):
    (block,) = [b for b in BLOCKS if b[0].endswith("ssh-setup.md") and b[2] == "sh" and "ssh-keygen -t" in b[3]]
    script = block[3].replace("/srv/jupyterhub/ssh", str(tmp_path))
    subprocess.run(["bash", "-e", "-c", script], check=True, capture_output=True)
    assert (tmp_path / "tunnel_ed25519").exists() and (tmp_path / "tunnel_ed25519.pub").exists()
