"""Which process listens on which TCP port, read from Linux's /proc (no ssh call needed).

Used to tell whether an ssh master found after a Hub restart still carries a forward, and whose
listener holds a port that a forward needs.
"""

import os


def listening_inodes(port):
    """Socket inodes listening on TCP ``port`` (any address), from /proc/net/tcp and tcp6."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    # local address "ADDR:PORT" in hex, state 0A = LISTEN, inode in field 9
                    if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except OSError:
            continue
    return inodes


def holds_socket(pid, inodes):
    """Whether process ``pid`` has one of the socket ``inodes`` open."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def process_listens(pid, port):
    """Whether process ``pid`` itself listens on TCP ``port``."""
    inodes = listening_inodes(port)
    return bool(inodes) and holds_socket(pid, inodes)
