#!/usr/bin/env python
"""Offline stand-in for the pip bootstrap script that ansible-test downloads (get-pip.py).

ansible-test fetches it from a host that is not reachable here, then runs it in each fresh venv as
``get_pip.py --disable-pip-version-check pip==X.Y [--no-setuptools] [--no-wheel]``. This does the
same with the standard library's ensurepip and PyPI: bootstrap pip, install the requested
packages, and remove setuptools/wheel when asked to go without them.
tests/ansible-test.sh copies it to ~/.ansible/test/cache/get_pip_X_Y.py.
"""

import subprocess
import sys

WITHOUT = {"--no-setuptools": "setuptools", "--no-wheel": "wheel"}


def main(argv):
    """Bootstrap pip into sys.executable's environment, then pip install the other arguments."""
    skipped = [WITHOUT[arg] for arg in argv if arg in WITHOUT]
    arguments = [arg for arg in argv if arg not in WITHOUT]
    python = sys.executable
    subprocess.check_call([python, "-m", "ensurepip", "--upgrade", "--default-pip"])
    if [arg for arg in arguments if not arg.startswith("-")]:
        subprocess.check_call([python, "-m", "pip", "install"] + arguments)
    for package in skipped:
        subprocess.call([python, "-m", "pip", "uninstall", "--yes", "--quiet", package])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
