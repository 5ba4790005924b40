"""SlurmSpawner: each single-user server is a Slurm batch job, reached through an SSH tunnel.

A complete, tested example of a batch-system subclass of ForwardBaseSpawner (see the how-to
"Write a batch-system subclass"). ``_start()`` submits the job with ``sbatch`` and waits while it
is queued, reporting the queue state as progress events; the job's start script
(examples/remote-start/) posts its own events, starts Jupyter and calls SetupTunnel; the Hub then
opens the forward through the login node. The job id is kept in the server's state, so poll and
stop find the job after a Hub restart.

Every command is an argv list (no shell on the Hub); the API token reaches the job through the
environment of ``sbatch`` (Slurm's default ``--export=ALL``), never through a command line.
"""

import asyncio
import shlex

from forwardbasespawner import ForwardBaseSpawner
from traitlets import Float, List, Unicode

QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED"}
ACTIVE = QUEUED | {"RUNNING", "COMPLETING"}


class SlurmSpawner(ForwardBaseSpawner):
    sbatch_command = List(Unicode(), ["sbatch"], config=True, help="sbatch, as an argv prefix.")
    squeue_command = List(Unicode(), ["squeue"], config=True, help="squeue, as an argv prefix.")
    scancel_command = List(Unicode(), ["scancel"], config=True, help="scancel, as an argv prefix.")
    sbatch_options = List(
        Unicode(), ["--time=08:00:00"], config=True,
        help='Further sbatch options, e.g. ["--partition=interactive", "--time=04:00:00"].',
    )  # fmt: skip
    start_script = Unicode(
        "/opt/jupyter/start-jupyter.sh", config=True,
        help="The remote start script on the cluster (a copy of examples/remote-start/start-jupyter.sh).",
    )  # fmt: skip
    batch_script = Unicode(
        "#!/bin/bash\n{prologue}\nexec {start_script} {server_command}\n", config=True,
        help="The job script; {start_script} and {server_command} are quoted for the shell.",
    )  # fmt: skip
    batch_prologue = Unicode(
        "", config=True, help='Lines before the start script runs, e.g. "module load jupyter".'
    )  # fmt: skip
    queue_poll_seconds = Float(5, config=True, help="How often _start() asks squeue while the job is queued.")
    command_timeout = Float(30, config=True, help="Seconds one sbatch, squeue or scancel call may take.")

    job_id = ""

    async def _run(self, argv, stdin=None, env=None):
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(stdin), self.command_timeout)
        except BaseException:  # a timeout or a cancelled start: never leave the command behind
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        return process.returncode, out.decode(errors="replace").strip(), err.decode(errors="replace").strip()

    def _job_script(self):
        server_command = " ".join(shlex.quote(word) for word in [*self.cmd, *self.get_args()])
        return self.batch_script.format(
            prologue=self.batch_prologue, start_script=shlex.quote(self.start_script), server_command=server_command
        )

    async def _job_state(self):
        """The job's state ("RUNNING", ...) and reason, "" if Slurm no longer knows it, or None if
        squeue failed (the controller is busy or down: no reason to give up on the job)."""
        code, out, err = await self._run([*self.squeue_command, "--noheader", "--format=%T %r", f"--jobs={self.job_id}"])
        if code != 0:
            if "Invalid job id" in err:
                return "", ""
            self.log.warning("squeue for %s failed: %s", self._log_name, err[-200:])
            return None, ""
        state, _, reason = out.partition(" ")
        return state, reason

    async def _start(self):
        name = f"jupyter-{self.user.name}-{self.name or 'default'}"
        argv = [*self.sbatch_command, "--parsable", f"--job-name={name}", "--export=ALL", *self.sbatch_options]
        # the server's environment (with its API token) reaches the job through sbatch's own
        code, out, err = await self._run(argv, stdin=self._job_script().encode(), env=self.get_env())
        if code != 0 or not out.split(";")[0].isdigit():
            raise RuntimeError(f"sbatch refused the job: {(err or out)[-300:] or f'exit code {code}'}")
        self.job_id = out.split(";")[0]
        self.log.info("Submitted %s as Slurm job %s", self._log_name, self.job_id)
        self.events.append({"progress": 10, "message": f"Submitted as job {self.job_id}"})
        last = None
        while True:  # JupyterHub's start_timeout bounds the time in the queue
            state, reason = await self._job_state()
            if state == "":
                raise RuntimeError(f"job {self.job_id} ended before it started")
            if state is not None and state not in QUEUED:
                break
            if state is not None and (state, reason) != last:
                self.events.append({"progress": 15, "message": f"Job {self.job_id} is {state.lower()} ({reason})"})
                last = (state, reason)
            await asyncio.sleep(self.queue_poll_seconds)
        self.events.append({"progress": 30, "message": f"Job {self.job_id} is running; starting Jupyter"})
        return None  # the start script calls SetupTunnel when the server listens

    async def _poll(self):
        if not self.job_id:
            return 0
        state, _ = await self._job_state()
        if state is None or state in ACTIVE:
            return None
        return 0

    async def _stop(self, now=False, **kwargs):
        if not self.job_id:
            return
        code, _, err = await self._run([*self.scancel_command, self.job_id])
        if code != 0:
            self.log.warning("scancel %s for %s: %s", self.job_id, self._log_name, err[-200:])

    def get_state(self):
        state = super().get_state()
        if self.job_id:
            state["job_id"] = self.job_id
        return state

    def load_state(self, state):
        super().load_state(state)
        self.job_id = str(state.get("job_id") or "")

    def clear_state(self):
        super().clear_state()
        self.job_id = ""
