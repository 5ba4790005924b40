"""A stand-in for a batch system's client, so that myspawner.py runs as it is: each "job" is a
local process group. Replace these four functions with calls to your scheduler.

A real job runs on another host and picks its own port there; this one picks a free local port
and tells the Jupyter server through JUPYTERHUB_SERVICE_URL, as a job script would.
"""

import asyncio
import os
import signal
import socket
from urllib.parse import urlsplit, urlunsplit

_JOBS = {}  # job id -> (process, "http://host:port")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def submit_job(command, env):
    """Start ``command`` with ``env`` added to this process's environment; return the job id."""
    port = _free_port()
    url = urlsplit(env["JUPYTERHUB_SERVICE_URL"])
    env = {**os.environ, **env, "JUPYTERHUB_SERVICE_URL": urlunsplit(url._replace(netloc=f"127.0.0.1:{port}"))}
    if os.getuid() == 0 and os.path.basename(command[0]) == "jupyterhub-singleuser":
        command = [*command, "--allow-root"]  # a demo machine as root; never on a real system
    process = await asyncio.create_subprocess_exec(*command, env=env, start_new_session=True)
    job_id = str(process.pid)
    _JOBS[job_id] = (process, f"http://127.0.0.1:{port}")
    return job_id


async def job_address(job_id):
    """Where the job's server will listen."""
    return _JOBS[job_id][1]


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


async def job_running(job_id):
    return _alive(int(job_id))


async def cancel_job(job_id):
    pid = int(job_id)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        for _ in range(50):
            if not _alive(pid):
                break
            await asyncio.sleep(0.1)
        else:
            continue
        break
    process = _JOBS.pop(job_id, (None, None))[0]
    if process is not None:
        await process.wait()
