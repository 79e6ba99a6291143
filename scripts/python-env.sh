# Sourced by setup.sh and test.sh: sets PY to a Python that may install bootgen.
# Debian's own python3 refuses `pip install` outside a virtual environment
# (PEP 668), so there we make .venv/ in the repository and use it.
PY=python3
if python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv 2>/dev/null || {
            $SUDO apt-get install -y -q python3-venv
            python3 -m venv .venv
        }
    fi
    PY=.venv/bin/python
    PATH="$PWD/.venv/bin:$PATH"
    export PATH
fi
