# myspawner.py
from forwardbasespawner import ForwardBaseSpawner
from toybatch import cancel_job, job_address, job_running, submit_job  # your batch system's client


class MySpawner(ForwardBaseSpawner):
    job_id = ""

    async def _start(self):
        # the environment has JUPYTERHUB_API_TOKEN, JUPYTERHUB_EVENTS_URL, JUPYTERHUB_SETUPTUNNEL_URL
        self.job_id = await submit_job(self.cmd, self.get_env())
        return await job_address(self.job_id)  # "http://host:port" where the job's server listens

    async def _poll(self):
        if not self.job_id:
            return 0
        return None if await job_running(self.job_id) else 0

    async def _stop(self, now=False, **kwargs):
        if self.job_id:
            await cancel_job(self.job_id)

    # the job id must survive a Hub restart, or _poll() and _stop() lose the job
    def get_state(self):
        state = super().get_state()
        if self.job_id:
            state["job_id"] = self.job_id
        return state

    def load_state(self, state):
        super().load_state(state)
        self.job_id = state.get("job_id", "")

    def clear_state(self):
        super().clear_state()
        self.job_id = ""
