"""``legacy_remote.py WAIT_FILE REMOTE_SERVER MARKER``: wait until WAIT_FILE exists, then become
``REMOTE_SERVER MARKER`` (same process, same environment): a batch job that is still queued."""

import os
import sys
import time


def main():
    wait_file, remote_server, marker = sys.argv[1:4]
    while not os.path.exists(wait_file):
        time.sleep(0.1)
    os.execv(sys.executable, [sys.executable, remote_server, marker])


if __name__ == "__main__":
    main()
