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

ORIGINAL_PATH="$PATH"  # python-env.sh adds .venv/bin, which a new shell will not have
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

# On Debian, bootgen lives in .venv/ (see python-env.sh): link it from a directory on
# everyone's PATH (BOOTGEN_BIN_DIR, default /usr/local/bin) and say how to run it.
BIN_DIR="${BOOTGEN_BIN_DIR:-/usr/local/bin}"
RUN="bootgen"
if [ "$PY" != python3 ]; then
    if $SUDO mkdir -p "$BIN_DIR" && $SUDO ln -sfn "$PWD/.venv/bin/bootgen" "$BIN_DIR/bootgen"; then
        case ":$ORIGINAL_PATH:" in
            *":$BIN_DIR:"*) RUN="bootgen   ($BIN_DIR/bootgen -> $PWD/.venv/bin/bootgen)" ;;
            *) RUN="$BIN_DIR/bootgen   ($BIN_DIR is not on your PATH)" ;;
        esac
    else
        RUN="$PWD/.venv/bin/bootgen   (or '. $PWD/.venv/bin/activate' first, then bootgen)"
    fi
fi
echo "bootgen is installed; run it as: $RUN"
