"""The demo command run as a user runs it (its own process group, Ctrl-C to end it), for the tests
of the demo (tests/test_browser.py) and its benchmark (benchmarks/demo_spawn.py)."""

import asyncio
import os
import re
import signal
import sys

from tests.hubharness import REPO
from tests.processes import processes

DEMO_PROGRAMS = ("configurable-http-proxy", "jupyterhub-singleuser", "remote_start.py")


def demo_processes(directory_marker):
    """The live processes (:class:`tests.processes.Process`) whose command line names the demo's
    directory, or that are one of the demo's programs (proxy, single-user servers, remote start
    scripts: no other test runs them now)."""
    return processes(lambda p: directory_marker in p.cmdline or any(name in p.cmdline for name in DEMO_PROGRAMS))


#: the password the running demo printed (a new one every run)
PASSWORDS = {}
# the demo refuses root unless asked (CI containers run as root)
ROOT_FLAG = ["--allow-root"] if os.getuid() == 0 else []


async def start_demo():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "forwardbasespawner.demo", "--port", "0", *ROOT_FLAG,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal gives it
    )  # fmt: skip
    url = log = password = None
    lines = []
    while url is None or log is None or password is None:
        line = await asyncio.wait_for(proc.stdout.readline(), 90)
        if not line:
            raise RuntimeError("the demo exited:\n" + "".join(lines))
        text = line.decode()
        lines.append(text)
        if match := re.search(r"Open\s+(http://\S+)/hub/login", text):
            url = match.group(1)
        if match := re.search(r"Log\s+(\S+)/jupyterhub.log", text):
            log = match.group(1)
        if match := re.search(r"password: (\S+)", text):
            password = match.group(1)
    PASSWORDS[url] = password
    return proc, url, log


async def stop_demo(proc):
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
    out = await asyncio.wait_for(proc.stdout.read(), 60)
    await asyncio.wait_for(proc.wait(), 60)
    return proc.returncode, out.decode()
