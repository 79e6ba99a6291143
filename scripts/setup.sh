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
