"""Secrets in anything bootgen serves are refused where they are written: private keys in any
value (Butane inline contents, systemd units, cloud-init user_data, vars), plaintext or
incomplete password hashes in cloud-init data and in Butane's password_hash."""
from __future__ import annotations

import pytest
import yaml

from bootgen.build import plan_build
from bootgen.errors import BootgenError
from bootgen.osconfig.butane_checks import HASH_HINT, check_password_hash
from bootgen.passwords import crypt_hash_problem, hash_password
from bootgen.secrets_scan import KEY_HINT, scan
from bootgen.sshkeys import contains_private_key

OPENSSH = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
           "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
           "-----END OPENSSH PRIVATE KEY-----\n")
PGP = ("-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\n"
       "lQOYBGVxyzABCADExampleExampleExampleExample\n-----END PGP PRIVATE KEY BLOCK-----\n")
PUTTY = ("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: k\nPublic-Lines: 2\n"
         "AAAAC3NzaC1lZDI1NTE5AAAAIBnVq1wTkq3Vb7oz\nJ0T1sJ2H2j4m8Qw9c0fJb6cQm2xv\n"
         "Private-Lines: 1\nAAAAIHSGa4q5uyyxU7dd6X0Kx1pcBvGYsD9cUjlNx8oXyGZR\n")
HASH = "$6$r5BaaYkys3XBVgNs$Il5bJI//lEMZmj6zNvVY2l1ZKOcmOGuF5XvjX9QoCKlyJZS8v/YWNwf.C9kVvfqbAeqYguXWn1SablhvwT9NI/"


# --- recognising key material ------------------------------------------------------------


@pytest.mark.parametrize("text", [
    OPENSSH,
    " ".join(OPENSSH.split()),  # folded onto one line
    OPENSSH.splitlines()[1],  # the body pasted without its armor
    "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0011\n\nMIIEpAIBAAKCAQEAx1\n",
    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ0sampleSampleSample\n-----END PRIVATE KEY-----",
    "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIsampleSampleSampleSample\n-----END EC PRIVATE KEY-----",
    "MIIEowIBAAKCAQEAxgkqhkiG9w0BAQEFAASC",  # a bare PKCS#1 RSA key body
    PGP,
    PUTTY,
    "#!/bin/sh\ncat > /etc/ssh/key <<EOF\n" + OPENSSH + "EOF\n",
])
def test_private_key_material_is_recognised(text):
    assert contains_private_key(text)


@pytest.mark.parametrize("text", [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBnVq1wTkq3Vb7ozJ0T1sJ2H2j4m8Qw9c0fJb6cQm2xv ops@example",
    '#!/bin/sh\ngrep -q "BEGIN OPENSSH PRIVATE KEY" /etc/ssh/ssh_host_ed25519_key\n',
    "-----BEGIN OPENSSH PRIVATE KEY-----\n",  # a header alone holds no secret
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUF\n-----END CERTIFICATE-----",
    "openssl genpkey -algorithm ed25519 -out /etc/tls/key.pem  # writes a PRIVATE KEY",
])
def test_words_public_keys_and_certificates_are_not_secrets(text):
    assert not contains_private_key(text)


def test_scan_walks_every_value_and_skips_fields_with_their_own_checks():
    data = {"vars": {"deep": [{"x": OPENSSH}]}, "ssh_authorized_keys": [OPENSSH],
            "ignition": {"passwd": {"users": [{"name": "core", "ssh_authorized_keys": [OPENSSH],
                                               "password_hash": "hunter2"}]}}}
    findings = list(scan(data))
    assert [(path, message) for path, message, _ in findings] == [
        (("vars", "deep", 0, "x"), "a private key would be served here: <OpenSSH private key, 141 characters, not shown>")]
    assert findings[0][2] == KEY_HINT


def test_password_rules_apply_to_cloud_init_data_only():
    vars_password = {"vars": {"password": "hunter2"}}
    assert list(scan(vars_password)) == []
    cloud = {"cloud_init": {"user_data": {"password": "hunter2", "users": [{"passwd": HASH}, {"passwd": "!"}]}}}
    assert [(p, m) for p, m, _ in scan(cloud)] == [
        (("cloud_init", "user_data", "password"), "'password' is not a crypt hash (it looks like a plaintext password)")]


@pytest.mark.parametrize("entries,expected", [
    ("root:hunter2\nops:RANDOM\n", [(("list",), "the chpasswd password of 'root' is not a crypt hash "
                                               "(it looks like a plaintext password)")]),
    (["root:" + HASH, "ops:R", "x:$6$"], [(("list", 2), "the chpasswd password of 'x' is not a complete SHA-512 "
                                                       "crypt hash ($6$, a salt, $ and 86 characters)")]),
])
def test_chpasswd_list(entries, expected):
    findings = scan({"chpasswd": {"list": entries}}, cloud_init=True)
    assert [(p[1:], m) for p, m, _ in findings] == expected


# --- crypt hashes -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    hash_password("pw"), hash_password("pw", rounds=6000), "!" + hash_password("pw"), "!", "*",
    "$5$rounds=5000$abc$aw8kcfRnzkuA1XFRzd1AgTNuyzM2RdMYKc3X22kKYc0",
    "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$PmNgGTLMFjJn.URBv11CpTEm5RwlKtPjRtztKe6.b33",
])
def test_complete_crypt_hashes(value):
    assert crypt_hash_problem(value) is None


@pytest.mark.parametrize("value,expected", [
    ("$6$", "it is not a complete SHA-512 crypt hash ($6$, a salt, $ and 86 characters)"),
    ("$6$$" + "a" * 86, "it is not a complete SHA-512 crypt hash ($6$, a salt, $ and 86 characters)"),
    ("$6$salt$" + "a" * 85, "it is not a complete SHA-512 crypt hash ($6$, a salt, $ and 86 characters)"),
    ("$6$salt$" + "a" * 86 + "\n", "it is not a complete SHA-512 crypt hash ($6$, a salt, $ and 86 characters)"),
    ("$5$salt$abc", "it is not a complete SHA-256 crypt hash ($5$, a salt, $ and 43 characters)"),
    ("$6$rounds=999$salt$" + "a" * 86, "the rounds= of it is outside 1000 to 999999999"),
    ("$y$", "it is not a complete yescrypt hash ($y$, parameters, $, a salt, $ and 43 characters)"),
    ("$y$j9T$salt$short", "it is not a complete yescrypt hash ($y$, parameters, $, a salt, $ and 43 characters)"),
    ("$2b$10$" + "a" * 53, "it is not a crypt hash of a scheme bootgen accepts ($6$, $5$ or $y$)"),
    ("$1$abc$q8UwIHmflFKbQfL3Jp6Al0", "MD5-crypt ($1$) password hashes are too weak"),
    ("hunter2", "it is not a crypt hash (it looks like a plaintext password)"),
    (1234, "it is not a crypt hash (it looks like a plaintext password)"),
])
def test_incomplete_or_weak_crypt_hashes(value, expected):
    assert crypt_hash_problem(value) == expected


def test_butane_password_hash_must_be_complete():
    assert check_password_hash("$6$", (3, 3, 0)) == [
        ("password_hash is not a complete SHA-512 crypt hash ($6$, a salt, $ and 86 characters)", HASH_HINT)]
    assert check_password_hash("$2b$10$" + "a" * 53, (3, 3, 0)) == []
    assert check_password_hash(HASH, (3, 3, 0)) == []


# --- through a build ----------------------------------------------------------------------


def _problems(example) -> list[str]:
    with pytest.raises(BootgenError) as err:
        plan_build(example, fetch=False)
    return [p.format().split("\n")[0] for p in err.value.problems]


def test_cloud_init_password_hash_of_just_the_prefix(example):
    node = example.nodes / "ubuntu-4f62c7.yaml"
    node.write_text(node.read_text().replace("{secret: ubuntu_password_hash}", "$6$"))
    assert _problems(example) == [
        "nodes/ubuntu-4f62c7.yaml:13:18: error at $.cloud_init.password_hash: password_hash is not a complete "
        "SHA-512 crypt hash ($6$, a salt, $ and 86 characters)"]


def test_butane_password_hash_of_just_the_prefix(example):
    with (example.nodes / "node-1.yaml").open("a") as out:
        out.write("ignition:\n  passwd:\n    users:\n      - name: core\n        password_hash: $6$\n")
    assert _problems(example) == [
        "nodes/node-1.yaml:13:24: error at $.ignition.passwd.users[0].password_hash: password_hash is not a "
        "complete SHA-512 crypt hash ($6$, a salt, $ and 86 characters)"]


def test_private_key_in_site_defaults_and_profile(example):
    site = example.site / "site.yaml"
    data = site.read_text()
    site.write_text(data.replace("defaults:\n", "defaults:\n  vars:\n    deploy_key: |\n"
                                 + "".join("      " + line + "\n" for line in OPENSSH.splitlines()), 1))
    profile = example.site / "profiles" / "flatcar-install.yaml"
    doc = yaml.safe_load(profile.read_text())
    doc["ignition"] = {"storage": {"files": [{"path": "/root/.ssh/id_ed25519", "contents": {"inline": OPENSSH}}]}}
    profile.write_text(yaml.safe_dump(doc, sort_keys=False))
    line = data.splitlines().index("defaults:") + 3
    problems = _problems(example)
    assert problems[0].startswith("site/profiles/flatcar-install.yaml:")
    assert problems[0].endswith("error at $.ignition.storage.files[0].contents.inline: "
                                "a private key would be served here: <OpenSSH private key, 141 characters, not shown>")
    assert problems[1:] == [f"site/site.yaml:{line}:17: error at $.defaults.vars.deploy_key: "
                            "a private key would be served here: <OpenSSH private key, 141 characters, not shown>"]


def test_private_key_in_a_butane_file(example):
    (example.site / "butane" / "key.bu").write_text(
        "storage:\n  files:\n    - path: /root/.ssh/id_ed25519\n      contents:\n        inline: |\n"
        + "".join("          " + line + "\n" for line in OPENSSH.splitlines()))
    profile = example.site / "profiles" / "flatcar-install.yaml"
    profile.write_text(profile.read_text() + "ignition_files: [butane/key.bu]\n")
    assert _problems(example) == [
        "site/butane/key.bu:5:17: error at $.storage.files[0].contents.inline: "
        "a private key would be served here: <OpenSSH private key, 141 characters, not shown>"]
