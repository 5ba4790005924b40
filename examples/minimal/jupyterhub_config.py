# jupyterhub_config.py
c.JupyterHub.spawner_class = "myspawner.MySpawner"
c.MySpawner.public_api_url = "https://jupyter.example.org/hub/api"  # how the remote side reaches the Hub
c.MySpawner.show_first_default_event = False
