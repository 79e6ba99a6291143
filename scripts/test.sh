#!/bin/sh
# Install everything the test suite needs (Debian packages, servers, Python
# test dependencies), then run every test: unit, golden, invalid-input corpus,
# ignition-validate and cloud-init schema checks, S3 (SeaweedFS, moto), nginx,
# dnsmasq and QEMU network boots. Run from the repository root; pytest
# arguments pass through (e.g. scripts/test.sh tests/render).
set -eu
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# cloud-init must never configure this machine: disable it before installing.
$SUDO mkdir -p /etc/cloud
$SUDO touch /etc/cloud/cloud-init.disabled

PACKAGES="pxelinux syslinux-common syslinux-efi ipxe grub-efi-amd64-bin shim-signed grub-efi-amd64-signed ignition cloud-init
nginx-light dnsmasq-base gnupg awscli rclone s3cmd openssh-client curl"
$SUDO apt-get update -q
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $PACKAGES
sh scripts/e2e-deps.sh

. scripts/python-env.sh
$PY -m pip install -q -e '.[test]'
exec $PY -m pytest "$@"
