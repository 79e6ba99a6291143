"""The end-to-end boot rig: QEMU machines on a private LAN served by dnsmasq and nginx.

A `NamespaceLan` is a network namespace holding a bridge, one tap per VM and
the servers that `bootgen build` configured (server/dnsmasq.conf and
server/nginx.conf). Where no namespace can be made, `UserLan` falls back to
QEMU's user-mode network, whose built-in DHCP/TFTP serves the tree, with nginx
on loopback. Either way no packet leaves the machine.

`boot()` runs one VM with a hard timeout and returns its serial log; the test
payload (tests/e2e/payload/) prints `BOOTGEN-CMDLINE:` and
`BOOTGEN-CONFIG-SHA256:` lines there.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("BOOTGEN_E2E_CACHE", "/var/cache/bootgen-e2e"))
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot: the SMM build of OVMF and a variable store with Microsoft's keys enrolled
# (Secure Boot enforced). It needs q35 with SMM on, or it hangs without a word.
OVMF_CODE_SECBOOT = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_VARS_MS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
# arm64: QEMU's virt machine with Debian's AAVMF (qemu-efi-aarch64); 64 MiB flash images.
QEMU_AARCH64 = "qemu-system-aarch64"
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
QEMU = "qemu-system-x86_64"
# Words boot loaders add in front of the command line they were given.
LOADER_WORDS = re.compile(r"^(BOOT_IMAGE|initrd)=")
_NETNS_IDS = itertools.count()


def _netns_name() -> str:
    return f"bootgen-e2e-{os.getpid()}-{next(_NETNS_IDS)}"


class RigError(RuntimeError):
    """The rig itself could not be set up (not a finding about bootgen)."""


@dataclass(frozen=True)
class Machine:
    """One VM to boot: its firmware and its NIC's MAC address."""

    name: str
    mac: str
    # "bios" (SeaBIOS), "uefi" (OVMF), "uefi-http" (OVMF, HTTP Boot only), "uefi-sb" (OVMF, Secure Boot
    # enforced) or "aavmf" (arm64)
    firmware: str = "bios"
    nic: str = "virtio-net-pci"
    memory_mb: int = 256

    @property
    def nic_device(self) -> str:
        """The -device value. Under UEFI the NIC gets no option ROM: QEMU's ROMs are
        iPXE, which would take over the network boot and skip the tree's loaders;
        without one, OVMF's own PXE client fetches the loader the DHCP server names."""
        rom = ",romfile=" if self.firmware != "bios" else ""
        return f"{self.nic},netdev=n0,mac={self.mac}{rom}"


@dataclass(frozen=True)
class BootResult:
    """What one VM printed, and how its run ended."""

    machine: Machine
    serial: str
    seconds: float
    timed_out: bool
    stopped_on: str = ""

    @property
    def cmdline(self) -> str | None:
        """The kernel command line the payload reported, or None if no kernel of ours ran."""
        match = re.search(r"^BOOTGEN-CMDLINE: (.*?)\r?$", self.serial, re.M)
        return match.group(1) if match else None

    def cmdline_words(self, kernel_name: str = "vmlinuz") -> list[str]:
        """The command line less what boot loaders add: BOOT_IMAGE=, initrd=, and the
        kernel image's own name in front (iPXE under UEFI passes it as argv[0])."""
        words = (self.cmdline or "").split()
        if words and words[0] == kernel_name:
            words = words[1:]
        return [word for word in words if not LOADER_WORDS.match(word)]

    @property
    def config(self) -> tuple[str, int] | None:
        """(sha256, size) of the config the VM fetched, or None."""
        match = re.search(r"^BOOTGEN-CONFIG-SHA256: ([0-9a-f]{64}) (\d+)", self.serial, re.M)
        return (match.group(1), int(match.group(2))) if match else None

    def tail(self, lines: int = 40) -> str:
        """The end of the serial log, for failure messages."""
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1bc", "", self.serial)
        return "\n".join(text.splitlines()[-lines:])


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)


@functools.cache
def accel(kernel: Path) -> str:
    """'kvm' if KVM really runs a kernel here, else 'tcg'.

    Opening /dev/kvm is not enough: under some nested hypervisors KVM starts
    the firmware and then hangs in the kernel. A kernel with no root panics at
    once and, with panic=-1 and -no-reboot, QEMU exits: that is the probe.
    """
    forced = os.environ.get("BOOTGEN_E2E_ACCEL")
    if forced:
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    cmd = [QEMU, "-accel", "kvm", "-m", "128", "-nographic", "-no-reboot", "-monitor", "none",
           "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "tcg"
    return "kvm" if "Kernel panic" in done.stdout else "tcg"


def _firmware_args(machine: Machine, workdir: Path) -> list[str]:
    if machine.firmware == "bios":
        # SeaBIOS prints to the serial port only when told which one, as a
        # binary little-endian integer: `string=0x3f8` would be read as garbage.
        sercon = workdir / "sercon-port.bin"
        sercon.write_bytes((0x3F8).to_bytes(2, "little"))
        return ["-boot", "n", "-fw_cfg", f"name=etc/sercon-port,file={sercon}"]
    secure = machine.firmware == "uefi-sb"
    # HTTP Boot first: OVMF's PXE options would each wait a minute for an offer without a TFTP file.
    http_only = ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
                 "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"] if machine.firmware == "uefi-http" else []
    vars_copy = workdir / f"{machine.name}-OVMF_VARS.fd"  # a copy: QEMU writes to the variable store
    shutil.copyfile(OVMF_VARS_MS if secure else OVMF_VARS, vars_copy)
    smm = ["-global", "driver=cfi.pflash01,property=secure,value=on"] if secure else []
    return [*smm, "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE_SECBOOT if secure else OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}", "-boot", "n", *http_only]


def _machine_type(machine: Machine) -> str:
    return {"bios": "pc", "uefi": "q35", "uefi-http": "q35", "uefi-sb": "q35,smm=on"}[machine.firmware]


def _aarch64_command(machine: Machine, lan, serial_log: Path, workdir: Path) -> list[str]:
    """An arm64 machine: always TCG here (no arm64 host), cortex-a57 as measured."""
    vars_copy = workdir / f"{machine.name}-AAVMF_VARS.fd"
    shutil.copyfile(AAVMF_VARS, vars_copy)
    return [QEMU_AARCH64, "-accel", "tcg", "-M", "virt", "-cpu", "cortex-a57", "-m", str(machine.memory_mb),
            "-smp", "1", "-nographic", "-no-reboot", "-monitor", "none", "-serial", f"file:{serial_log}",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}", *lan.extra_args(machine),
            "-netdev", lan.netdev(machine), "-device", machine.nic_device]


def _qemu_command(machine: Machine, lan, serial_log: Path, workdir: Path) -> list[str]:
    if machine.firmware == "aavmf":
        return _aarch64_command(machine, lan, serial_log, workdir)
    netdev, kernel = lan.netdev(machine), lan.kernel
    return [QEMU, "-accel", accel(kernel), "-m", str(machine.memory_mb), "-smp", "1", "-nographic", "-no-reboot",
            "-monitor", "none", "-serial", f"file:{serial_log}",
            "-machine", _machine_type(machine),
            *_firmware_args(machine, workdir), *lan.extra_args(machine),
            "-netdev", netdev, "-device", machine.nic_device]


def boot(machine: Machine, lan: "NamespaceLan | UserLan", workdir: Path, timeout: float,
         stop_on: tuple[str, ...] = ()) -> BootResult:
    """Run one VM until it powers off, prints a stop_on text, or timeout seconds pass.

    The VM is killed in the last two cases; the serial log is returned either way.
    """
    serial_log = workdir / f"{machine.name}.serial.log"
    serial_log.write_text("")
    cmd = lan.wrap(_qemu_command(machine, lan, serial_log, workdir))
    started = time.monotonic()
    with open(workdir / f"{machine.name}.qemu.log", "w") as qemu_log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=qemu_log,
                                start_new_session=True)
    stopped_on = ""
    try:
        while proc.poll() is None and time.monotonic() - started < timeout:
            text = serial_log.read_text(errors="replace")
            stopped_on = next((marker for marker in stop_on if marker in text), "")
            if stopped_on:
                break
            time.sleep(0.5)
    finally:
        timed_out = proc.poll() is None and not stopped_on
        _stop(proc)
    return BootResult(machine, serial_log.read_text(errors="replace"), time.monotonic() - started,
                      timed_out, stopped_on)


def boot_all(machines: list[Machine], lan, workdir: Path, timeout: float,
             stop_on: tuple[str, ...] = (), stop_also: dict[str, tuple[str, ...]] | None = None
             ) -> dict[str, BootResult]:
    """Boot machines side by side (most of a boot is waiting on the network), by name.
    `stop_also` adds stop texts for single machines (by name)."""
    accel(lan.kernel)  # probe once, not once per thread
    stop_also = stop_also or {}
    for machine in machines:
        lan.netdev(machine)  # make taps one at a time, before the threads
    with ThreadPoolExecutor(max_workers=len(machines)) as pool:
        futures = {m.name: pool.submit(boot, m, lan, workdir, timeout, stop_on + stop_also.get(m.name, ()))
                   for m in machines}
        return {name: future.result() for name, future in futures.items()}


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@dataclass
class Server:
    """A server process started by the rig, with the log it writes."""

    name: str
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        _stop(self.proc)


def _nginx_main_config(site_conf: Path, workdir: Path, loopback_only: bool = False) -> Path:
    """A main nginx.conf around the generated one.

    The generated file is either a whole nginx.conf (it has an http block) or
    what goes inside http {}; the wrapper adds only what a test run needs:
    foreground, logs and pid under workdir, and root as worker user (pytest's
    tmp dirs are private to root).
    """
    site_conf = Path(os.path.abspath(site_conf))
    text = site_conf.read_text()
    head = (f"user root;\ndaemon off;\nworker_processes 1;\npid {workdir}/nginx.pid;\n"
            f"error_log {workdir}/nginx-error.log info;\n")
    if loopback_only:
        # Outside a namespace, keep the generated server off the host's other interfaces.
        text = re.sub(r"^(\s*listen\s+)(\d+)(\s*;)", r"\g<1>127.0.0.1:\2\3", text, flags=re.M)
        site_conf = workdir / "nginx-site.conf"
        site_conf.write_text(text)
    if re.search(r"^\s*http\s*\{", text, re.M):
        body = re.sub(r"^\s*(user|daemon|pid|worker_processes|error_log)\s[^;]*;\s*$", "", text, flags=re.M)
        main = head + body
    else:
        main = (head + "events { worker_connections 64; }\nhttp {\n"
                f"  access_log {workdir}/nginx-access.log;\n  include /etc/nginx/mime.types;\n"
                f"  include {site_conf};\n}}\n")
    path = workdir / "nginx-main.conf"
    path.write_text(main)
    return path


def _wait_for(check, what: str, server: Server, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.proc.poll() is None:
        if check():
            return
        time.sleep(0.2)
    state = "exited" if server.proc.poll() is not None else f"did not come up within {timeout:.0f} s"
    raise RigError(f"{what} {state}")


@dataclass
class NamespaceLan:
    """A network namespace with a bridge at `server_ip`, taps for VMs and the site's servers."""

    name: str
    server_ip: str
    prefix: int
    workdir: Path
    kernel: Path
    servers: list[Server] = field(default_factory=list)
    taps: dict[str, str] = field(default_factory=dict)
    extra_netns: list[str] = field(default_factory=list)
    mode: str = "namespace"

    @classmethod
    def create(cls, workdir: Path, kernel: Path, server_ip: str = "192.168.77.1", prefix: int = 24) -> "NamespaceLan":
        """Make the namespace, its loopback and the bridge br0 that holds server_ip."""
        name = _netns_name()
        _run(["ip", "netns", "add", name])
        lan = cls(name, server_ip, prefix, workdir, kernel)
        try:
            for cmd in (["ip", "link", "set", "lo", "up"],
                        ["ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0"],
                        ["ip", "addr", "add", f"{server_ip}/{prefix}", "dev", "br0"],
                        ["ip", "link", "set", "br0", "up"]):
                _run(lan.wrap(cmd))
        except BaseException:
            lan.close()
            raise
        return lan

    in_namespace = True

    def wrap(self, cmd: list[str]) -> list[str]:
        """cmd, run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def netdev(self, machine: Machine) -> str:
        """A tap on the bridge for this machine (made on first use)."""
        if machine.name not in self.taps:
            tap = f"tap{len(self.taps)}"
            _run(self.wrap(["ip", "tuntap", "add", "dev", tap, "mode", "tap"]))
            _run(self.wrap(["ip", "link", "set", tap, "master", "br0", "up"]))
            self.taps[machine.name] = tap
        return f"tap,id=n0,ifname={self.taps[machine.name]},script=no,downscript=no,vnet_hdr=off"

    def start_dnsmasq(self, conf: Path, extra: list[str] = ()) -> Server:
        """dnsmasq with the generated conf; the rig adds only logging, pid file and user."""
        log = self.workdir / "dnsmasq.log"
        cmd = self.wrap(["dnsmasq", "--keep-in-foreground", f"--conf-file={os.path.abspath(conf)}", f"--log-facility={log}",
                         "--log-queries", "--log-dhcp", f"--pid-file={self.workdir}/dnsmasq.pid",
                         "--user=root", "--group=root", *extra])
        server = self._start("dnsmasq", cmd, log)
        _wait_for(lambda: "started" in log.read_text(errors="replace") if log.exists() else False,
                  f"dnsmasq (log {log}, output {self.workdir}/dnsmasq.out)", server)
        return server

    def start_nginx(self, site_conf: Path, url: str) -> Server:
        """nginx with the generated conf, ready once url answers inside the namespace."""
        return _start_nginx(self, site_conf, url)

    def extra_args(self, machine: Machine) -> list[str]:
        return []

    def _start(self, name: str, cmd: list[str], log: Path) -> Server:
        return _start_server(self, name, cmd, log)

    def start_plain_dhcp(self, address: str, dhcp_range: tuple[str, str], hosts: dict[str, str]) -> Server:
        """The LAN's own DHCP server beside a proxyDHCP: addresses only, no boot options.

        It runs in a second namespace joined to the bridge by a veth pair, since
        two dnsmasq processes cannot both take port 67 in one namespace.
        """
        other = _netns_name()
        _run(["ip", "netns", "add", other])
        self.extra_netns.append(other)
        _run(self.wrap(["ip", "link", "add", "veth-dhcp", "type", "veth", "peer", "name", "eth0", "netns", other]))
        _run(self.wrap(["ip", "link", "set", "veth-dhcp", "master", "br0", "up"]))
        inside = ["ip", "netns", "exec", other]
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{address}/{self.prefix}", "dev", "eth0"],
                    ["ip", "link", "set", "eth0", "up"]):
            _run(inside + cmd)
        log = self.workdir / "dhcp-plain.log"
        cmd = inside + ["dnsmasq", "--keep-in-foreground", "--port=0", "--interface=eth0", "--bind-interfaces",
                        f"--dhcp-range={dhcp_range[0]},{dhcp_range[1]},12h", f"--log-facility={log}", "--log-dhcp",
                        f"--pid-file={self.workdir}/dhcp-plain.pid", "--user=root", "--group=root",
                        *[f"--dhcp-host={mac},{ip}" for mac, ip in hosts.items()]]
        server = self._start("dhcp-plain", cmd, log)
        _wait_for(lambda: log.exists() and "started" in log.read_text(errors="replace"),
                  f"plain DHCP dnsmasq (see {self.workdir}/dhcp-plain.out)", server)
        return server

    def dhcp_offer(self, mac: str, vendor_class: str, arch: int) -> dict:
        """The DHCP offer a client with this vendor class and architecture gets on the LAN, read
        from its bytes by tests/e2e/dhcp_probe.py in a namespace joined to the bridge."""
        other = _netns_name()
        _run(["ip", "netns", "add", other])
        self.extra_netns.append(other)
        veth = f"veth-p{len(self.extra_netns)}"
        _run(self.wrap(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", other]))
        _run(self.wrap(["ip", "link", "set", veth, "master", "br0", "up"]))
        inside = ["ip", "netns", "exec", other]
        _run(inside + ["ip", "link", "set", "lo", "up"])
        _run(inside + ["ip", "link", "set", "eth0", "address", mac, "up"])
        probe = Path(__file__).resolve().parent / "dhcp_probe.py"
        done = subprocess.run(inside + [sys.executable, str(probe), "eth0", mac, vendor_class, str(arch)],
                              capture_output=True, text=True, timeout=30)
        return json.loads(done.stdout or '{"error": %s}' % json.dumps(done.stderr))

    def close(self) -> None:
        """Stop the servers and delete the namespaces (taps, bridge and veths go with them)."""
        for server in self.servers:
            server.stop()
        for name in [self.name, *self.extra_netns]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@dataclass
class UserLan:
    """Fallback and pxelinux LAN: QEMU user-mode networking.

    QEMU's built-in DHCP hands out `bootfile` and its TFTP server serves
    tftp_root; the guest reaches the host's loopback as 10.0.2.2, where nginx
    runs with the generated conf. Inside a namespace (`netns`), that loopback
    is private to the test. A pcap of each VM's traffic records its TFTP requests.
    """

    tftp_root: Path
    bootfile: str
    workdir: Path
    kernel: Path
    netns: str = ""
    dhcp_start: dict[str, str] = field(default_factory=dict)  # machine name -> address QEMU's DHCP gives it
    bootfile_for: dict[str, str] = field(default_factory=dict)  # machine name -> its own bootfile
    servers: list[Server] = field(default_factory=list)
    mode: str = "user"

    @classmethod
    def create(cls, tftp_root: Path, bootfile: str, workdir: Path, kernel: Path, private: bool) -> "UserLan":
        """A user-mode LAN; private: inside a new namespace with its own loopback."""
        netns = ""
        if private:
            netns = _netns_name()
            _run(["ip", "netns", "add", netns])
            _run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"])
        return cls(tftp_root, bootfile, workdir, kernel, netns)

    @property
    def in_namespace(self) -> bool:
        return bool(self.netns)

    def wrap(self, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else cmd

    def netdev(self, machine: Machine) -> str:
        start = self.dhcp_start.get(machine.name, "")
        extra = f",dhcpstart={start}" if start else ""
        bootfile = self.bootfile_for.get(machine.name, self.bootfile)
        return f"user,id=n0,tftp={self.tftp_root},bootfile={bootfile}{extra}"

    def extra_args(self, machine: Machine) -> list[str]:
        pcap = self.workdir / f"{machine.name}.pcap"
        return ["-object", f"filter-dump,id=dump0,netdev=n0,file={pcap}"]

    def start_nginx(self, site_conf: Path, url: str) -> Server:
        """nginx with the generated conf, ready once url answers (from where QEMU runs)."""
        return _start_nginx(self, site_conf, url)

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)


def tftp_requests_from_pcap(pcap: Path) -> list[str]:
    """File names in the TFTP read requests (RRQ) of a pcap from QEMU's filter-dump."""
    data = pcap.read_bytes()
    names, offset = [], 24  # pcap global header
    while offset + 16 <= len(data):
        length = int.from_bytes(data[offset + 8:offset + 12], "little")
        frame = data[offset + 16:offset + 16 + length]
        offset += 16 + length
        name = _tftp_rrq(frame)
        if name is not None:
            names.append(name)
    return names


def _tftp_rrq(frame: bytes) -> str | None:
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:  # IPv4, UDP
        return None
    udp = 14 + (frame[14] & 0x0F) * 4
    if int.from_bytes(frame[udp + 2:udp + 4], "big") != 69 or frame[udp + 8:udp + 10] != b"\x00\x01":
        return None
    return frame[udp + 10:].split(b"\0", 1)[0].decode(errors="replace")


def _start_server(lan, name: str, cmd: list[str], log: Path) -> Server:
    out = open(lan.workdir / f"{name}.out", "w")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    server = Server(name, proc, log)
    lan.servers.append(server)
    return server


def _start_nginx(lan, site_conf: Path, url: str) -> Server:
    main = _nginx_main_config(site_conf, lan.workdir, loopback_only=not lan.in_namespace)
    server = _start_server(lan, "nginx", lan.wrap(["nginx", "-c", str(main), "-p", str(lan.workdir)]),
                           lan.workdir / "nginx-access.log")
    probe = lan.wrap([sys.executable, "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=2)"])
    _wait_for(lambda: subprocess.run(probe, capture_output=True, timeout=10).returncode == 0,
              f"nginx serving {url} (see {lan.workdir}/nginx.out)", server)
    return server


def namespaces_work() -> bool:
    """Whether this process may create network namespaces (root, no seccomp/userns limits)."""
    probe = f"bootgen-e2e-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=10)
    if made.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return True


def tftp_requests(dnsmasq_log: Path, client_ip: str) -> list[str]:
    """File names the client asked for over TFTP, in order, from dnsmasq's log (found or not)."""
    names = []
    pattern = re.compile(r"dnsmasq-tftp\[\d+\]: (?:sent|file) (\S+) (?:to (\S+)|not found(?: for (\S+))?)")
    for line in dnsmasq_log.read_text(errors="replace").splitlines():
        match = pattern.search(line)
        if match and client_ip in (match.group(2), match.group(3)):
            names.append(match.group(1))
    return names


def offered_boot_file(offer: dict) -> str | None:
    """The boot file as firmware reads it from an offer: option 67 (sent when asked for), else the
    BOOTP file field."""
    return offer.get("options", {}).get("67") or offer.get("file")


@contextlib.contextmanager
def lan_serving(workdir: Path, tree, kernel: Path, server_ip: str, *, http: bool = False):
    """A namespace LAN whose dnsmasq serves the built `tree`'s own dnsmasq.conf (and, with `http`,
    its nginx.conf); closed on exit."""
    lan = NamespaceLan.create(workdir, kernel, server_ip)
    try:
        lan.start_dnsmasq(tree.root / "server" / "dnsmasq.conf")
        if http:
            lan.start_nginx(tree.root / "server" / "nginx.conf", f"{tree.site.base_url}boot.ipxe")
        yield lan
    finally:
        lan.close()
