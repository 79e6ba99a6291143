"""Log lines, one kind at a time: the lines dnsmasq 2.90 and nginx 1.22 wrote in test_real_servers.py
(fixtures/*-full.log, *-proxy.log), the same lines as syslog writes them, and damaged lines."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootgen.discover import Correlator, KnownNodes, architecture, mac_in_path, parse_since, pi_serial_in_path
from bootgen.errors import InputError
from bootgen.serverlogs import Fetch, parse_nginx_line, read_dnsmasq_log, read_lines, read_nginx_log

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def _dnsmasq(name: str, now: datetime = NOW):
    return read_dnsmasq_log(read_lines(str(FIXTURES / name), "--dnsmasq-log"), now)


def test_full_dhcp_transaction_lines():
    log = _dnsmasq("dnsmasq-full.log")
    kinds = {(e.kind, e.mac) for e in log.dhcp}
    assert ("DHCPDISCOVER", "52:54:00:d1:00:02") in kinds
    assert ("DHCPACK", "52:54:00:d1:00:02") in kinds
    ack = next(e for e in log.dhcp if e.kind == "DHCPACK" and e.mac == "52:54:00:d1:00:02")
    assert ack.ip.startswith("192.168.77.") and ack.xid.isdigit()
    assert ack.time == datetime(2026, 11, 30, 21, 18, 9, tzinfo=timezone.utc)
    assert not [e for e in log.dhcp if e.kind == "DHCPDISCOVER" and e.ip], "a DISCOVER carries no address"
    assert ack.vendor_class == "PXEClient:Arch:00000:UNDI:002001" and ack.user_class == ""
    assert {e.user_class for e in log.dhcp if e.mac == "52:54:00:d1:00:01"} == {"", "iPXE"}


def test_tftp_lines():
    log = _dnsmasq("dnsmasq-full.log")
    assert log.tftp_roots == ["/tmp/pytest-of-root/pytest-287/test_full_dhcp_site0/src/build"]
    results = {(Path(f.path).name, f.result) for f in log.fetches}
    assert ("lpxelinux.0", "sent") in results
    assert ("01-52-54-00-d1-00-02", "not found") in results
    assert ("start4.elf", "not found") in results
    assert all(f.via == "tftp" and f.ip.startswith("192.168.77.") for f in log.fetches)


def test_proxy_dhcp_lines():
    log = _dnsmasq("dnsmasq-proxy.log")
    pxe = [(e.mac, e.ip) for e in log.dhcp if e.kind == "PXE"]
    assert ("52:54:00:d2:00:01", None) in pxe  # the proxy's offer: no address yet
    assert ("52:54:00:d2:00:01", "192.168.77.51") in pxe  # the boot server request from the address
    assert all(ip is None for mac, ip in pxe if mac == "52:54:00:d2:00:02")  # UEFI: never an address


@pytest.mark.parametrize("name", ["dnsmasq-syslog-rfc3339.log", "dnsmasq-syslog-traditional.log"])
def test_syslog_spellings_read_like_dnsmasqs_own_file(name):
    log = _dnsmasq(name)
    own = _dnsmasq("dnsmasq-full.log")
    xid = "3607454342"
    assert [(e.kind, e.mac, e.ip) for e in log.dhcp] == [(e.kind, e.mac, e.ip) for e in own.dhcp if e.xid == xid]
    assert [e.vendor_class for e in log.dhcp] == [e.vendor_class for e in own.dhcp if e.xid == xid]
    assert [(f.path, f.result) for f in log.fetches] == [
        (f.path, f.result) for f in own.fetches if f.ip == log.fetches[0].ip]
    assert log.dnsmasq_lines == sum(1 for line in read_lines(str(FIXTURES / name), "x") if "dnsmasq" in line)
    assert all(e.time.date() == datetime(2026, 11, 30).date() for e in log.dhcp)


def test_rfc3339_keeps_its_zone_and_fraction():
    log = read_dnsmasq_log(["2026-11-30T22:18:09.5+01:00 bootsrv dnsmasq-tftp[7]: sent /srv/x/a to 10.0.0.9"], NOW)
    assert log.fetches[0].time == datetime(2026, 11, 30, 21, 18, 9, 500000, tzinfo=timezone.utc)


def test_dnsmasq_before_2_90_did_not_name_the_client_of_a_missing_file():
    log = read_dnsmasq_log(["Nov 30 21:18:09 dnsmasq-tftp[7]: file /srv/x/pxelinux.cfg/default not found"], NOW)
    assert log.fetches == [] and log.dnsmasq_lines == 1


def test_without_log_dhcp_the_transaction_lines_have_no_number():
    log = read_dnsmasq_log(["Nov 30 21:18:09 dnsmasq-dhcp[7]: DHCPACK(br0) 10.0.0.9 52:54:00:d1:00:09 web-1"], NOW)
    assert [(e.kind, e.mac, e.ip, e.xid) for e in log.dhcp] == [("DHCPACK", "52:54:00:d1:00:09", "10.0.0.9", None)]


def test_a_year_is_chosen_so_no_line_is_in_the_future():
    line = "Dec 31 23:59:59 dnsmasq-dhcp[7]: DHCPACK(br0) 10.0.0.9 52:54:00:d1:00:09"
    january = datetime(2027, 1, 2, tzinfo=timezone.utc)
    assert read_dnsmasq_log([line], january).dhcp[0].time.year == 2026
    assert read_dnsmasq_log([line], datetime(2026, 12, 31, 23, 0, tzinfo=timezone.utc)).dhcp[0].time.year == 2026


def test_damaged_dnsmasq_lines_are_skipped():
    log = _dnsmasq("malformed-dnsmasq.log")
    assert {(e.kind, e.mac, e.ip) for e in log.dhcp} == {("DHCPACK", "52:54:00:d1:00:09", "192.168.77.181")}
    assert len(log.dhcp) == 2  # the good line, and the same line at the end of the file without a newline
    assert log.fetches == []
    assert [architecture(e.vendor_class) for e in log.dhcp] == ["arm64-efi", "arm64-efi"]  # both are xid 42
    assert log.classes["51"] == {"vendor_class": "PXEClient:Arch:9999"} and log.classes["52"] == {"vendor_class": ""}


def test_nginx_combined_lines():
    fetches = read_nginx_log(read_lines(str(FIXTURES / "nginx-full.log"), "--nginx-log")).fetches
    assert [(f.path, f.result) for f in fetches if f.ip == "192.168.77.60"] == [("/boot.ipxe", "200")]
    assert ("/ipxe/52-54-00-d1-00-01.ipxe", "404") in [(f.path, f.result) for f in fetches]
    assert fetches[0].time == datetime(2026, 11, 30, 21, 18, 8, tzinfo=timezone.utc)


def test_nginx_request_paths_are_decoded_and_lose_their_query():
    fetch = parse_nginx_line('10.0.0.9 - - [30/Nov/2026:21:18:10 +0100] "GET /ipxe/a%2Db.ipxe?x=1 HTTP/1.1" 200 1')
    assert fetch == Fetch(datetime(2026, 11, 30, 20, 18, 10, tzinfo=timezone.utc), "http", "10.0.0.9",
                          "/ipxe/a-b.ipxe", "200")


def test_damaged_and_foreign_nginx_lines():
    log = read_nginx_log(read_lines(str(FIXTURES / "malformed-nginx.log"), "--nginx-log"))
    assert [(f.ip, f.path) for f in log.fetches] == [("192.168.77.181", "/boot.ipxe")] * 2
    assert log.skipped == 6  # TLS handshakes, POSTs and "-" are requests, not damage


@pytest.mark.parametrize("vendor_class, name", [
    ("PXEClient:Arch:00000:UNDI:002001", "bios"),
    ("PXEClient:Arch:00007:UNDI:003016", "x86_64-efi"),
    ("PXEClient:Arch:00009:UNDI:003016", "x86_64-efi"),
    ("PXEClient:Arch:00011:UNDI:003000", "arm64-efi"),
    ("HTTPClient:Arch:00016:UNDI:003001", "x86_64-efi-http"),
    ("HTTPClient:Arch:00019", "arm64-efi-http"),
    ("PXEClient:Arch:00099:UNDI:003000", "arch-99"),
    ("PXEClient", None),
    ("MSFT 5.0", None),
])
def test_architecture_from_the_vendor_class(vendor_class, name):
    assert architecture(vendor_class) == name


@pytest.mark.parametrize("path, mac", [
    ("pxelinux.cfg/01-52-54-00-d1-00-02", "52:54:00:d1:00:02"),
    ("grub/grub.cfg-01-52-54-00-D1-00-02", "52:54:00:d1:00:02"),
    ("ipxe/52-54-00-d1-00-02.ipxe", "52:54:00:d1:00:02"),
    ("pixiecore/v1/boot/52:54:00:d1:00:02", "52:54:00:d1:00:02"),
    ("pxelinux.cfg/C0A84D", None),
    ("pxelinux.cfg/default", None),
    ("configs/node-1/c18fe6eaf0c6b445/install.ign", None),
])
def test_macs_spelled_in_file_names(path, mac):
    assert mac_in_path(path) == mac


def test_pi_serials_in_tftp_paths():
    assert pi_serial_in_path("7092246e/start4.elf") == "7092246e"
    assert pi_serial_in_path("7092246e/config.txt") == "7092246e"
    assert pi_serial_in_path("start4.elf") is None
    assert pi_serial_in_path("configs/node-1/c18fe6eaf0c6b445/install.ign") is None


def test_since():
    assert parse_since("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("2026-11-30T21:00+01:00", NOW) == datetime(2026, 11, 30, 20, 0, tzinfo=timezone.utc)
    assert parse_since("2026-11-30", NOW) == datetime(2026, 11, 30, tzinfo=timezone.utc)


REAL_LINES = [line for name in ("dnsmasq-full.log", "dnsmasq-proxy.log", "nginx-full.log")
              for line in (FIXTURES / name).read_text().splitlines()]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.text(max_size=200),
    st.sampled_from(REAL_LINES).flatmap(lambda line: st.tuples(st.just(line), st.integers(0, len(line)),
                                                                st.text(max_size=20))).map(
        lambda cut: cut[0][:cut[1]] + cut[2] + cut[0][cut[1]:]),  # a real line with anything spliced in
    st.sampled_from(REAL_LINES).flatmap(lambda line: st.integers(0, len(line)).map(lambda n: line[:n])),
), max_size=30))
def test_no_line_stops_a_run(lines):
    dnsmasq = read_dnsmasq_log(lines, NOW)
    nginx = read_nginx_log(lines)
    assert all(e.mac and e.mac.count(":") == 5 for e in dnsmasq.dhcp)
    assert all(f.ip for f in dnsmasq.fetches + nginx.fetches)
    fetches = sorted(dnsmasq.fetches + nginx.fetches, key=lambda f: f.time)
    correlator = Correlator(KnownNodes({}, {}), frozenset())
    correlator.add_dhcp(dnsmasq.dhcp)
    correlator.bind_spelled_names(fetches, lambda f: f.path)
    correlator.add_fetches(fetches, lambda f: f.path)
    machines = correlator.finish()
    assert sum(f.count for m in machines for f in m.fetched.values()) == len(fetches)


@pytest.mark.parametrize("text", ["yesterday", "999999999w", "99999999999d", "2026-13-01", ""])
def test_since_that_is_no_time(text):
    with pytest.raises(InputError) as caught:
        parse_since(text, NOW)
    assert caught.value.problems[0].path == "--since"
