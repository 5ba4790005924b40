"""The configuration reference, generated from the traits of forwardbasespawner's classes.

``fbs-traits`` renders one group of traits (the groups are ``fbs_trait_groups`` in conf.py):
only traits that forwardbasespawner's own classes define; those inherited from JupyterHub's
``Spawner`` are left out (JupyterHub documents them). Every trait of ours must be in exactly one
group, or the build warns (and fails with -W).

    ```{eval-rst}
    .. fbs-traits:: lifecycle
    ```

(inside ``eval-rst``: the help texts are reStructuredText).
"""

import inspect
import textwrap

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from traitlets import Callable, Container, Dict, Enum, Union

logger = logging.getLogger(__name__)


def own_traits():
    """``{name: (trait, configured class path)}`` of every config trait our classes add: those of
    ForwardBaseSpawner (with its mixins) that JupyterHub's Spawner does not have, and those
    RemoteSSHSpawner adds to ForwardBaseSpawner."""
    from jupyterhub.spawner import Spawner

    from forwardbasespawner import ForwardBaseSpawner
    from forwardbasespawner.remotessh import RemoteSSHSpawner

    found = {}
    for cls, base, documented_as in (
        (ForwardBaseSpawner, Spawner, "forwardbasespawner.ForwardBaseSpawner"),
        (RemoteSSHSpawner, ForwardBaseSpawner, "forwardbasespawner.remotessh.RemoteSSHSpawner"),
    ):
        inherited = set(base.class_trait_names(config=True))
        for name, trait in cls.class_traits(config=True).items():
            if name not in inherited and name not in found:
                found[name] = (trait, documented_as)
    return found


def describe_type(trait):
    """A short, readable kind of value, e.g. "str, or a callable"."""
    if isinstance(trait, Union):
        kinds = [describe_type(t) for t in trait.trait_types if not isinstance(t, Callable)]
        callable_ = any(isinstance(t, Callable) for t in trait.trait_types)
        text = " or ".join(kinds) + (", or a callable (sync or async)" if callable_ else "")
    elif isinstance(trait, Callable):
        text = "a callable (sync or async), or None"
    elif isinstance(trait, Enum):
        text = "one of " + ", ".join(f'"{v}"' for v in trait.values)
    elif isinstance(trait, Dict):
        text = "dict"
    elif isinstance(trait, Container):
        inner = getattr(trait, "_trait", None)
        text = f"list of {describe_type(inner)}" if inner is not None else "list"
    else:
        text = {"Unicode": "str", "Integer": "int", "PortNumber": "int (a port)", "Float": "float", "Bool": "bool"}.get(
            type(trait).__name__, type(trait).__name__
        )
    if getattr(trait, "allow_none", False) and not isinstance(trait, (Callable, Union)):
        text += " or None"
    return text


class TraitsDirective(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self):
        groups = self.config.fbs_trait_groups
        group = self.arguments[0]
        if group not in groups:
            logger.warning("fbs-traits: unknown group %r", group, location=self.get_location())
            return []
        traits = own_traits()
        lines = []
        for name in groups[group]:
            if name not in traits:
                logger.warning("fbs-traits: %r is not a trait of ours", name, location=self.get_location())
                continue
            trait, documented_as = traits[name]
            module, _, cls = documented_as.rpartition(".")
            help_text = textwrap.dedent(trait.help or "").strip("\n")
            help_text = inspect.cleandoc(help_text) if help_text else "(no help text)"
            lines += [
                f".. py:attribute:: {cls}.{name}",
                f"   :module: {module}",
                "",
                f"   *{describe_type(trait)}* — ``c.{cls}.{name}``",
                "",
                *("   " + line if line else "" for line in help_text.splitlines()),
                "",
            ]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=f"<traits of group {group}>"), self.content_offset, container)
        return container.children


def check_groups(app):
    groups = app.config.fbs_trait_groups
    listed = [name for names in groups.values() for name in names]
    for name in sorted(set(own_traits()) - set(listed)):
        logger.warning("fbs-traits: the trait %r is in no group of fbs_trait_groups (docs/source/conf.py)", name)
    for name in sorted({n for n in listed if listed.count(n) > 1}):
        logger.warning("fbs-traits: the trait %r is in more than one group", name)


def setup(app):
    app.add_config_value("fbs_trait_groups", {}, "env")
    app.add_directive("fbs-traits", TraitsDirective)
    app.connect("builder-inited", check_groups)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


class MetricsDirective(SphinxDirective):
    """``fbs-metrics``: a table of the Prometheus metrics in forwardbasespawner.ssh.metrics, read
    from the metric objects themselves (names as scraped, type, labels, help)."""

    has_content = False

    def run(self):
        from prometheus_client.metrics import MetricWrapperBase

        from forwardbasespawner.ssh import metrics

        rows = []
        for value in vars(metrics).values():
            if isinstance(value, MetricWrapperBase):
                suffix = {"counter": "_total", "histogram": "_bucket, _sum, _count"}.get(value._type, "")
                names = ", ".join(f"``{value._name}{s.strip()}``" for s in suffix.split(",")) if suffix else f"``{value._name}``"
                rows.append((names, value._type, ", ".join(value._labelnames) or "—", value._documentation))
        for family in metrics.TunnelCollector([]).collect():
            rows.append((f"``{family.name}``", "gauge", "—", family.documentation))
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 35 10 15 40", "",
                 "   * - metric", "     - type", "     - labels", "     - meaning"]  # fmt: skip
        for name, kind, labels, text in rows:
            lines += [f"   * - {name}", f"     - {kind}", f"     - {labels}", f"     - {text}"]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="<metrics>"), self.content_offset, container)
        return container.children


_setup_traits = setup


def setup(app):  # noqa: F811
    _setup_traits(app)
    app.add_directive("fbs-metrics", MetricsDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
