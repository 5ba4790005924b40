"""Where the ssh masters' control sockets, logs and journals live by default."""

import os
import stat
import tempfile


def default_control_dir(log=None):
    """``<tmp>/fbs-ssh-<uid>`` if it is ours or free, else ``~/.cache/fbs-ssh``: a path that another
    local user created first (a directory of theirs, a symlink) must not stop every tunnel."""
    path = os.path.join(tempfile.gettempdir(), f"fbs-ssh-{os.getuid()}")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return path
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
        return path
    fallback = os.path.join(os.path.expanduser("~"), ".cache", "fbs-ssh")
    if log is not None:
        log.warning("%s is not a directory of this user (another user may have created it); using %s", path, fallback)
    return fallback


def control_dir(path):
    """Create (or check) the private directory of the control sockets: ours, 0700, no symlink."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeError(f"{path} must be a directory owned by this user")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path
