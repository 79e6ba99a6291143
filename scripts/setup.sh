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

# The example's Ubuntu node takes its password hash from a secrets file outside the
# repository (Git never holds it): made once, readable by this user only.
SECRETS="${XDG_CONFIG_HOME:-$HOME/.config}/bootgen/secrets.yaml"
if [ ! -e "$SECRETS" ]; then
    mkdir -p "$(dirname "$SECRETS")"
    (
        umask 077
        printf 'secrets:\n  ubuntu_password_hash: "%s"\npath_key: "%s"\n' \
            "$(bootgen hash-password --password ubuntu)" "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
            > "$SECRETS"
    )
    echo "made $SECRETS (the example's secrets; keep it out of Git)"
fi
bootgen build
