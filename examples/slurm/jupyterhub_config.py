# jupyterhub_config.py for SlurmSpawner (examples/slurm/slurmspawner.py on the Hub's PYTHONPATH)
c.JupyterHub.spawner_class = "slurmspawner.SlurmSpawner"

# the job: where the start script lies on the cluster, and the options of every job
c.SlurmSpawner.start_script = "/opt/jupyter/start-jupyter.sh"
c.SlurmSpawner.sbatch_options = ["--partition=interactive", "--time=04:00:00"]
c.SlurmSpawner.batch_prologue = "module load jupyter"
c.SlurmSpawner.cmd = ["/opt/jupyter/bin/jupyterhub-singleuser"]

# how long a user waits: in the queue (start_timeout), then for Jupyter to start and the tunnel
# to be up (http_timeout, counted from the end of the queue wait)
c.SlurmSpawner.start_timeout = 15 * 60
c.SlurmSpawner.http_timeout = 120

# the compute nodes reach the Hub at its public URL; the Hub reaches them through the login node
c.SlurmSpawner.public_api_url = "https://jupyter.example.org/hub/api"
c.SlurmSpawner.ssh_node = "login1.cluster.example.org"
c.SlurmSpawner.ssh_username = "jupyter-tunnel"
c.SlurmSpawner.ssh_key = "/srv/jupyterhub/ssh/tunnel_ed25519"
c.SlurmSpawner.ssh_known_hosts = "/srv/jupyterhub/ssh/known_hosts"
c.SlurmSpawner.show_first_default_event = False
