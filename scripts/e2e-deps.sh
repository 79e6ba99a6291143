#!/bin/sh
# Install and prepare what the end-to-end boot tests (tests/e2e/) need:
# QEMU and boot firmware from Debian, dnsmasq and nginx to serve the tree,
# busybox-static for the test initramfs, and an unpacked Debian kernel package
# (vmlinuz plus its modules) in a cache directory.
#
# Idempotent: packages already installed and a kernel already unpacked are
# left alone. The kernel cache path can be moved with BOOTGEN_E2E_CACHE.
set -eu

CACHE="${BOOTGEN_E2E_CACHE:-/var/cache/bootgen-e2e}"
PACKAGES="qemu-system-x86 ipxe-qemu ipxe pxelinux syslinux-common syslinux-efi
ovmf grub-efi-amd64-bin shim-signed grub-efi-amd64-signed dnsmasq-base nginx-light busybox-static kmod iproute2
qemu-system-arm qemu-efi-aarch64 grub-efi-arm64-bin:arm64"

SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi

missing_packages() {
    for pkg in $PACKAGES; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        case "$status" in
            *" installed") ;;
            *) echo "$pkg" ;;
        esac
    done
}

install_packages() {
    missing=$(missing_packages)
    if [ -z "$missing" ]; then
        echo "e2e-deps: all packages present"
        return
    fi
    echo "e2e-deps: installing" $missing
    $SUDO apt-get update -q
    # shellcheck disable=SC2086  # word splitting of the package list is wanted
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
}

# The versioned package that Debian's meta-package currently points at, such
# as linux-image-6.1.0-50-amd64.
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1
}

unpack_kernel() {
    if [ -f "$CACHE/kernel/READY" ] && ls "$CACHE"/kernel/lib/modules/*/modules.dep >/dev/null 2>&1; then
        echo "e2e-deps: kernel already unpacked in $CACHE/kernel ($(cat "$CACHE/kernel/READY"))"
        return
    fi
    pkg=$(kernel_package)
    if [ -z "$pkg" ]; then
        $SUDO apt-get update -q
        pkg=$(kernel_package)
    fi
    if [ -z "$pkg" ]; then
        echo "e2e-deps: cannot find the linux-image-*-amd64 package" >&2
        exit 1
    fi
    $SUDO mkdir -p "$CACHE"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "e2e-deps: downloading $pkg"
    # Sandbox user root: the private temp dir is not writable by _apt.
    (cd "$work" && apt-get download -o APT::Sandbox::User=root "$pkg")
    $SUDO rm -rf "$CACHE/kernel.new"
    $SUDO mkdir -p "$CACHE/kernel.new"
    $SUDO dpkg-deb -x "$work"/*.deb "$CACHE/kernel.new"
    # The package ships no modules.dep (the postinst makes it): make it here so
    # the test initramfs can pull in each NIC driver's dependencies.
    version=$(ls "$CACHE/kernel.new/lib/modules")
    $SUDO depmod -b "$CACHE/kernel.new" "$version"
    echo "$pkg" | $SUDO tee "$CACHE/kernel.new/READY" >/dev/null
    # Swap in the complete directory so a half-unpacked kernel is never used.
    $SUDO rm -rf "$CACHE/kernel"
    $SUDO mv "$CACHE/kernel.new" "$CACHE/kernel"
    echo "e2e-deps: unpacked $pkg into $CACHE/kernel"
}

# arm64: Debian's arm64 kernel and busybox for the aarch64 boot test, fetched with
# apt-get download (they are not installable here) and unpacked into $CACHE/arm64.
unpack_arm64() {
    if [ -f "$CACHE/arm64/READY" ]; then
        echo "e2e-deps: arm64 kernel already unpacked in $CACHE/arm64 ($(cat "$CACHE/arm64/READY"))"
        return
    fi
    pkg=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9].*-arm64\)\(:arm64\)\{0,1\}$/\1/p' | head -n 1)
    if [ -z "$pkg" ]; then
        echo "e2e-deps: cannot find the linux-image-*-arm64 package" >&2
        exit 1
    fi
    work=$(mktemp -d)
    (cd "$work" && apt-get download -o APT::Sandbox::User=root "$pkg:arm64" busybox-static:arm64)
    $SUDO rm -rf "$CACHE/arm64.new"
    $SUDO mkdir -p "$CACHE/arm64.new"
    for deb in "$work"/*.deb; do
        $SUDO dpkg-deb -x "$deb" "$CACHE/arm64.new"
    done
    rm -rf "$work"
    version=$(ls "$CACHE/arm64.new/lib/modules")
    $SUDO depmod -b "$CACHE/arm64.new" "$version"
    echo "$pkg" | $SUDO tee "$CACHE/arm64.new/READY" >/dev/null
    $SUDO rm -rf "$CACHE/arm64"
    $SUDO mv "$CACHE/arm64.new" "$CACHE/arm64"
    echo "e2e-deps: unpacked $pkg and busybox-static:arm64 into $CACHE/arm64"
}

enable_arm64() {
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        $SUDO dpkg --add-architecture arm64
        $SUDO apt-get update -q
    fi
}

enable_arm64
install_packages
unpack_kernel
unpack_arm64
