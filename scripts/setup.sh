#!/bin/sh
# Install bootgen with the boot loaders it ships into every tree, then build
# the example site (site/ + nodes/ -> build/). Run from the repository root.
set -eu
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# Boot loader binaries come from Debian's packages (pxelinux.0, lpxelinux.0,
# syslinux.efi, undionly.kpxe, ipxe.efi, grubnetx64.efi).
LOADERS="pxelinux syslinux-common syslinux-efi ipxe grub-efi-amd64-bin"
missing=""
for pkg in $LOADERS; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q " installed$" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

. scripts/python-env.sh
$PY -m pip install -q -e .
bootgen build

# On Debian, bootgen lives in .venv/ (see python-env.sh): put it on everyone's PATH.
RUN="bootgen"
if [ "$PY" != python3 ]; then
    if $SUDO ln -sfn "$PWD/.venv/bin/bootgen" /usr/local/bin/bootgen 2>/dev/null; then
        RUN="bootgen (/usr/local/bin/bootgen -> $PWD/.venv/bin/bootgen)"
    else
        RUN="$PWD/.venv/bin/bootgen (or run '. $PWD/.venv/bin/activate' first, then bootgen)"
    fi
fi
echo "bootgen is installed; run it as: $RUN"
