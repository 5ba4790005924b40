"""Process helpers of the simulated remote systems: standard library only, so the spawner that
runs on the original package's venv (tests/compat/legacy_sim.py) can import it there too."""

import asyncio
import os
import signal


def process_alive(pid):
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


async def stop_process_group(pid, grace=5.0):
    """SIGTERM the process group of ``pid`` (its leader), SIGKILL it after ``grace`` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(int(grace * 10)):
        if not process_alive(pid):
            return
        await asyncio.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
