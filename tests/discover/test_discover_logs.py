"""`bootgen discover` over the captured logs (fixtures/): joining, known machines, --since, JSON, errors."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from bootgen.cli import main
from bootgen.discover import discover
from bootgen.errors import LogError
from lan_rig import FIXTURES

import sites

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
KNOWN = sites.NodeSpec("known-1", "52:54:00:aa:00:01", "192.168.77.11/24")


@pytest.fixture
def lab(tmp_path, monkeypatch) -> Path:
    """The site the fixture logs were served from (test_real_servers.py), with cwd in it."""
    (tmp_path / "kernel").write_bytes(b"k")
    (tmp_path / "initrd").write_bytes(b"i")
    spec = sites.SiteSpec("http://192.168.77.1/", "192.168.77.1", "http",
                          {"mode": "full", "subnet": "192.168.77.0/24", "range": ["192.168.77.100", "192.168.77.199"]})
    sites.write_site(tmp_path, spec, (KNOWN,), tmp_path / "kernel", tmp_path / "initrd")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _found(dnsmasq=("dnsmasq-full.log",), nginx=("nginx-full.log",), **options):
    result = discover(Path("site"), Path("nodes"), [str(FIXTURES / n) for n in dnsmasq],
                      [str(FIXTURES / n) for n in nginx], now=NOW, **options)
    return {m.mac or m.serial or m.addresses[-1]: m for m in result.machines}


def test_unknown_machines_with_what_they_fetched(lab):
    found = _found()
    assert set(found) == {"52:54:00:d1:00:01", "52:54:00:d1:00:02", "dc:a6:32:d1:00:03", "52:54:00:d1:00:04",
                          "192.168.77.60"}
    uefi = found["52:54:00:d1:00:01"]
    assert uefi.architectures == ["x86_64-efi"]
    assert [(f.via, f.path, f.result) for f in uefi.fetched_in_order()] == [
        ("tftp", "ipxe.efi", "sent"), ("http", "boot.ipxe", "200"), ("http", "ipxe/52-54-00-d1-00-01.ipxe", "404"),
        ("http", "ipxe/default.ipxe", "200")]
    assert uefi.first_seen <= uefi.last_seen
    pi = found["dc:a6:32:d1:00:03"]
    assert (pi.serial, pi.architectures) == ("7092246e", ["raspberry-pi"])


def test_known_machines_are_left_out_or_marked(lab):
    assert KNOWN.mac not in _found()
    marked = _found(include_known=True)
    assert marked[KNOWN.mac].node == "known-1"
    assert all(m.node is None for mac, m in marked.items() if mac != KNOWN.mac)


def test_a_known_mac_in_another_spelling_and_a_known_address(lab):
    (lab / "nodes" / "web.yaml").write_text("interfaces:\n  - mac: 5254.00D1.0001\n  - mac: 52-54-00-D1-00-02\n"
                                            "  - mac: 52:54:00:d1:00:99\n    address: 192.168.77.60/24\n")
    found = _found(include_known=True)
    assert found["52:54:00:d1:00:01"].node == found["52:54:00:d1:00:02"].node == "web"
    assert found["192.168.77.60"].node == "web"  # seen by address only: known by the node's static address
    assert not {"52:54:00:d1:00:01", "52:54:00:d1:00:02", "192.168.77.60"} & set(_found())


def test_a_machine_that_is_added_is_no_longer_listed(lab):
    result = CliRunner().invoke(main, ["add", "52:54:00:d1:00:02", "--name", "rack-2"])
    assert result.exit_code == 0, result.output
    assert "52:54:00:d1:00:02" not in _found()
    assert _found(include_known=True)["52:54:00:d1:00:02"].node == "rack-2"


def test_proxy_dhcp_joins_by_the_file_name_that_spells_the_mac(lab):
    found = _found(("dnsmasq-proxy.log",), ("nginx-proxy.log",))
    assert set(found) == {"52:54:00:d2:00:01", "52:54:00:d2:00:02"}
    uefi = found["52:54:00:d2:00:02"]
    assert uefi.addresses == ["192.168.77.52"]
    assert {(f.via, f.path) for f in uefi.fetched.values()} == {
        ("tftp", "ipxe.efi"), ("http", "boot.ipxe"), ("http", "ipxe/52-54-00-d2-00-02.ipxe")}


def test_syslog_files_join_like_dnsmasqs_own(lab):
    for name in ("dnsmasq-syslog-rfc3339.log", "dnsmasq-syslog-traditional.log"):
        found = _found((name,), ())
        assert set(found) == {"52:54:00:d1:00:02"}
        assert {f.path for f in found["52:54:00:d1:00:02"].fetched.values()} == {
            "lpxelinux.0", "ldlinux.c32", "pxelinux.cfg/01-52-54-00-d1-00-02", "pxelinux.cfg/default"}


def test_since(lab):
    assert set(_found(since="2026-11-30T21:18:09")) == set(_found()) - {"52:54:00:d1:00:01"}
    assert _found(since="2026-11-30T21:18:10") == {}
    assert set(_found(since="1d")) == set(_found())


def test_repeated_fetches_are_counted(lab, tmp_path):
    doubled = tmp_path / "twice.log"
    doubled.write_text((FIXTURES / "nginx-full.log").read_text() * 2)
    found = discover(Path("site"), Path("nodes"), ["none"], [str(doubled)], now=NOW).machines
    (address_only,) = [m for m in found if m.addresses == ["192.168.77.60"]]
    assert [(f.path, f.count) for f in address_only.fetched.values()] == [("boot.ipxe", 2)]


def test_damaged_lines_never_stop_the_run(lab):
    result = discover(Path("site"), Path("nodes"), [str(FIXTURES / "malformed-dnsmasq.log")],
                      [str(FIXTURES / "malformed-nginx.log")], now=NOW)
    (machine,) = result.machines
    assert (machine.mac, machine.architectures) == ("52:54:00:d1:00:09", ["arm64-efi"])
    assert [(f.path, f.count) for f in machine.fetched.values()] == [("boot.ipxe", 2)]
    assert any("6 lines not in nginx's combined format were skipped" in note for note in result.notes)


def test_cli_text_and_json(lab):
    args = ["discover", "--dnsmasq-log", str(FIXTURES / "dnsmasq-full.log"), "--nginx-log",
            str(FIXTURES / "nginx-full.log")]
    text = CliRunner().invoke(main, args)
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0].split() == ["MACHINE", "ARCH", "ADDRESS", "FIRST", "SEEN", "LAST", "SEEN", "NODE"]
    assert any(line.startswith("dc:a6:32:d1:00:03 (serial 7092246e)  raspberry-pi") for line in lines)
    assert "    tftp  pxelinux.cfg/01-52-54-00-d1-00-02  not found" in lines
    assert lines[-1] == "add one with: bootgen add 52:54:00:d1:00:01 --profile PROFILE"
    as_json = CliRunner().invoke(main, args + ["--format", "json"])
    machines = json.loads(as_json.output)["machines"]
    assert {m["mac"] for m in machines} >= {"52:54:00:d1:00:01", "dc:a6:32:d1:00:03"}
    assert all(set(m) == {"mac", "serial", "addresses", "architectures", "node", "first_seen", "last_seen",
                          "fetched"} for m in machines)


def test_standard_input(lab):
    log = (FIXTURES / "dnsmasq-syslog-rfc3339.log").read_text()
    result = CliRunner().invoke(main, ["discover", "--dnsmasq-log", "-", "--nginx-log", "none", "--format", "json"],
                                input=log)
    assert result.exit_code == 0, result.output
    assert [m["mac"] for m in json.loads(result.output)["machines"]] == ["52:54:00:d1:00:02"]


@pytest.mark.parametrize("option", ["--dnsmasq-log", "--nginx-log"])
@pytest.mark.parametrize("bad", ["missing.log", "a-directory"])
def test_unreadable_logs_are_a_clear_error(lab, option, bad):
    (lab / "a-directory").mkdir()
    other = "--nginx-log" if option == "--dnsmasq-log" else "--dnsmasq-log"
    result = CliRunner().invoke(main, ["discover", option, bad, other, "none"])
    assert result.exit_code == 1
    reason = "No such file or directory" if bad == "missing.log" else "Is a directory"
    assert result.output.startswith(f"{bad}: error at {option}: cannot read this log: {reason}\n  hint: ")
    assert "Traceback" not in result.output
    with pytest.raises(LogError):
        discover(Path("site"), Path("nodes"), [bad] if option == "--dnsmasq-log" else [],
                 [bad] if option == "--nginx-log" else [], now=NOW)


def test_a_log_its_user_may_not_read(lab, monkeypatch):
    import bootgen.serverlogs

    def refuse(path, mode="r", *args, **kwargs):  # root reads any file: refuse as the kernel would a user
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(bootgen.serverlogs, "open", refuse, raising=False)
    result = CliRunner().invoke(main, ["discover", "--dnsmasq-log", "none", "--nginx-log", "/var/log/nginx/x.log"])
    assert result.exit_code == 1
    assert result.output.startswith("/var/log/nginx/x.log: error at --nginx-log: cannot read this log: "
                                    "Permission denied\n  hint: pass --nginx-log FILE (or --nginx-log none")


def test_a_bad_since_is_a_user_error(lab):
    result = CliRunner().invoke(main, ["discover", "--dnsmasq-log", "none", "--nginx-log", "none",
                                       "--since", "yesterday"])
    assert result.exit_code == 1
    assert "error at --since: 'yesterday' is neither a duration nor a time" in result.output


def test_a_node_file_with_problems_is_a_note(lab):
    (lab / "nodes" / "broken.yaml").write_text("interfaces: [{mac: nope}]\n")
    result = discover(Path("site"), Path("nodes"), [str(FIXTURES / "dnsmasq-full.log")], [], now=NOW)
    assert result.notes[0].startswith("note: 1 node files have problems and were not read (nodes/broken.yaml)")


def test_since_keeps_leases_from_before_it(lab, tmp_path):
    """A machine leased its address before --since and fetched after: still joined to its MAC."""
    dnsmasq = tmp_path / "dnsmasq.log"
    dnsmasq.write_text("Nov 30 09:00:00 dnsmasq-tftp[7]: TFTP root is /srv/bootgen/current\n"
                       "Nov 30 10:00:00 dnsmasq-dhcp[7]: 9 vendor class: PXEClient:Arch:00007:UNDI:003016\n"
                       "Nov 30 10:00:00 dnsmasq-dhcp[7]: 9 DHCPACK(br0) 192.168.77.150 52:54:00:d1:00:20\n"
                       "Nov 30 12:00:00 dnsmasq-tftp[7]: sent /srv/bootgen/current/ipxe.efi to 192.168.77.150\n"
                       "Nov 30 10:30:00 dnsmasq-dhcp[7]: 8 DHCPACK(br0) 192.168.77.151 52:54:00:d1:00:21\n")
    result = discover(Path("site"), Path("nodes"), [str(dnsmasq)], [], since="2026-11-30T11:00", now=NOW)
    (machine,) = result.machines
    assert (machine.mac, machine.first_seen.hour, list(machine.fetched)) == (
        "52:54:00:d1:00:20", 12, [("tftp", "ipxe.efi")])


def test_http_requests_count_under_the_environments_base_url(lab):
    """With environments, nginx's log is one environment's server's: --env picks its base_url."""
    import yaml

    site = yaml.safe_load((lab / "site" / "site.yaml").read_text())
    site["base_url"] = "http://10.0.0.5:8080/boot/"
    site["environments"] = {"lab": {"base_url": "http://192.168.77.1/"}}
    (lab / "site" / "site.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    everywhere = {mac: {f.via for f in m.fetched.values()} for mac, m in _found().items()}
    assert everywhere["52:54:00:d1:00:01"] == {"tftp"} and "192.168.77.60" not in everywhere  # not under /boot/
    in_lab = _found(env="lab")
    assert {f.via for f in in_lab["52:54:00:d1:00:01"].fetched.values()} == {"tftp", "http"}
    assert "192.168.77.60" in in_lab
    result = CliRunner().invoke(main, ["discover", "--env", "prod", "--dnsmasq-log", "none", "--nginx-log", "none"])
    assert result.exit_code == 1 and "unknown environment 'prod'" in result.output


def test_a_pi_known_only_by_its_serial(lab, tmp_path):
    """Behind proxyDHCP a Pi's address comes from the LAN's DHCP server: only its TFTP paths name it."""
    dnsmasq = tmp_path / "dnsmasq.log"
    dnsmasq.write_text("Nov 30 10:00:00 dnsmasq-tftp[7]: TFTP root is /srv/bootgen/current\n"
                       "Nov 30 10:00:01 dnsmasq-tftp[7]: file /srv/bootgen/current/7092246e/start4.elf not found "
                       "for 192.168.77.40\n"
                       "Nov 30 10:00:01 dnsmasq-tftp[7]: file /srv/bootgen/current/start4.elf not found "
                       "for 192.168.77.40\n")
    (machine,) = discover(Path("site"), Path("nodes"), [str(dnsmasq)], [], now=NOW).machines
    assert (machine.ident, machine.mac, machine.architectures) == ("serial 7092246e", None, ["raspberry-pi"])
    assert [f.path for f in machine.fetched_in_order()] == ["7092246e/start4.elf", "start4.elf"]


def test_a_log_without_log_dhcp_says_so(lab, tmp_path):
    dnsmasq = tmp_path / "dnsmasq.log"
    dnsmasq.write_text("Nov 30 10:00:00 dnsmasq-dhcp[7]: DHCPACK(br0) 192.168.77.150 52:54:00:d1:00:20 \n")
    result = discover(Path("site"), Path("nodes"), [str(dnsmasq)], [], now=NOW)
    assert [(m.mac, m.arch) for m in result.machines] == [("52:54:00:d1:00:20", "unknown")]
    assert result.notes == (f"note: {dnsmasq} has no log-dhcp lines, so no architectures: run dnsmasq with "
                            "log-dhcp (the generated dnsmasq.conf has it)",)
