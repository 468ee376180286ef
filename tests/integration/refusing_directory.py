"""Run the daemon with one directory refused (EACCES) while a flag file exists: chmod 000 as root.

Root reads a chmod 000 directory, so the integration test of an unreadable directory starts the real
daemon through this module, which makes listing the directory, and stat or open of the paths in it,
fail with PermissionError exactly as chmod 000 does for another user. Forked children inherit it.
Usage: AD_TEST_REFUSE_DIR=/abs/dir python -m tests.integration.refusing_directory --config ...
"""
import os
import sys

BLOCKED = os.path.abspath(os.environ["AD_TEST_REFUSE_DIR"])
FLAG = BLOCKED + ".refuse"
_real = {name: getattr(os, name) for name in ("scandir", "listdir", "stat", "open")}


def _blocked(path, inside):
    if isinstance(path, int) or path is None:
        return False
    try:
        _real["stat"](FLAG)
    except OSError:
        return False
    path = os.path.abspath(os.fsdecode(path))
    return (os.path.dirname(path) if inside else path) == BLOCKED


def _refusing(name, inside):
    real = _real[name]

    def call(path=".", *args, **kwargs):
        if _blocked(path, inside):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path, *args, **kwargs)
    return call


os.scandir = _refusing("scandir", inside=False)
os.listdir = _refusing("listdir", inside=False)
os.stat = _refusing("stat", inside=True)
os.open = _refusing("open", inside=True)

if __name__ == "__main__":
    from anomaly_detector.cli import main
    sys.argv[0] = "anomaly_detector"
    main()
