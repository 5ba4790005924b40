"""SSH tunnels: specs and validation, OpenSSH ControlMasters, supervision and port allocation."""
