#!/bin/busybox sh
# /init of the e2e test initramfs: report the kernel command line, fetch the
# OS config it names, report that config's sha256 and power off. Markers go
# straight to the first serial port so they appear whatever console= says.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
OUT=/dev/ttyS0
[ -e /dev/ttyAMA0 ] && OUT=/dev/ttyAMA0  # arm64 (QEMU virt): the PL011 UART

say() {
    echo "$*" > "$OUT"
}

finish() {
    sync
    poweroff -f
}

say "BOOTGEN-CMDLINE: $(cat /proc/cmdline)"

# NIC drivers, in dependency order (written by the builder).
for module in $(cat /etc/modules.order); do
    insmod "/lib/modules/$module" 2> "$OUT" || say "BOOTGEN-WARN: insmod $module failed"
done

# The config URL, by the first convention the command line uses.
config_url() {
    for word in $(cat /proc/cmdline); do
        word=$(echo "$word" | tr -d '"'"'")
        case "$word" in
            ignition.config.url=*) echo "${word#ignition.config.url=}"; return ;;
            cloud-config-url=*) echo "${word#cloud-config-url=}"; return ;;
            bootgen.config=*) echo "${word#bootgen.config=}"; return ;;
            ds=nocloud*\;s=*) echo "${word#*;s=}user-data"; return ;;
            ds=nocloud*\;seedfrom=*) echo "${word#*;seedfrom=}user-data"; return ;;
        esac
    done
}

URL=$(config_url)
if [ -z "$URL" ]; then
    say "BOOTGEN-CONFIG-ERROR: no config URL on the command line"
    finish
fi

# The NIC shows up asynchronously after insmod.
IFACE=""
for _ in 1 2 3 4 5 6 7 8 9 10; do
    IFACE=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
    [ -n "$IFACE" ] && break
    sleep 1
done
if [ -z "$IFACE" ]; then
    say "BOOTGEN-CONFIG-ERROR: no network interface"
    finish
fi
ip link set lo up
ip link set "$IFACE" up
if ! udhcpc -i "$IFACE" -n -q -t 6 -T 2 -s /etc/udhcpc.script > "$OUT" 2>&1; then
    say "BOOTGEN-CONFIG-ERROR: no DHCP lease on $IFACE"
    finish
fi

say "BOOTGEN-FETCH: $URL"
# busybox 1.35's wget -T segfaults, so bound it with timeout instead.
if timeout 30 wget -q -O /tmp/config "$URL" 2> "$OUT"; then
    SUM=$(sha256sum /tmp/config | cut -d' ' -f1)
    SIZE=$(wc -c < /tmp/config | tr -d ' ')
    say "BOOTGEN-CONFIG-SHA256: $SUM $SIZE"
else
    say "BOOTGEN-CONFIG-ERROR: fetching $URL failed"
fi
finish
