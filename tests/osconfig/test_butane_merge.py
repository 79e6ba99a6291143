"""Merging site, profile and node layers, and reporting problems in the layer they came from."""
from __future__ import annotations

import textwrap

from bootgen.osconfig.butane import build_ignition

KEY_B = ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQBD2R+EUQWKcG9yc/Jh9IHeAiEE2X+x05Fq8OOXsgJk7n1XTu5lAz0E0QVYmHV4RxXueFBdyd6G"
         "MlbpZvri2YQfQ9kfhFEFinBvcnPyYfSB3gIhBNl/sdORavDjl7ICZO59V07uZQM9BNEFWJh1eEcV7nhQXcnehjJW6Wb64tmEH0PZH4RRBYpwb3Jz8mH0gd4CIQTZ"
         "f7HTkWrw45eyAmTufVdO7mUDPQTRBViYdXhHFe54UF3J3oYyVulm+uLZhB9D2R+EUQWKcG9yc/Jh9IHeAiEE2X+x05Fq8OOXsgJk7n1XTu5lAz0E0QVYmHV4RxXu"
         "eFBdyd6GMlbpZvri2YQf")

UNIT = "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"


def site(key: str) -> str:
    return textwrap.dedent(f"""\
        defaults:
          ignition:
            passwd:
              users:
                - name: core
                  shell: /bin/bash
                  ssh_authorized_keys:
                    - {key}
            storage:
              files:
                - path: /etc/motd
                  mode: 0644
                  contents:
                    inline: site motd
                - path: /etc/site-only
                  contents:
                    inline: kept
            systemd:
              units:
                - name: app.service
                  enabled: true
                  contents: "{UNIT.encode('unicode_escape').decode()}"
                  dropins:
                    - name: 10-site.conf
                      contents: "[Service]\\nEnvironment=A=1\\n"
        """)


def profile(key: str) -> str:
    return textwrap.dedent(f"""\
        ignition:
          passwd:
            users:
              - name: core
                groups: [wheel]
                ssh_authorized_keys:
                  - {KEY_B}
                  - {key}
          storage:
            files:
              - path: /etc/motd
                contents:
                  inline: profile motd
          systemd:
            units:
              - name: app.service
                contents: "{UNIT.encode('unicode_escape').decode()}"
                dropins:
                  - name: 10-site.conf
                    contents: "[Service]\\nEnvironment=A=2\\n"
                  - name: 20-profile.conf
                    contents: "[Service]\\nEnvironment=B=1\\n"
        """)


NODE = textwrap.dedent("""\
    name: node-1
    ignition:
      passwd:
        users:
          - name: core
            shell: /bin/sh
            groups: [wheel, docker]
          - name: ops
      storage:
        directories:
          - path: /var/lib/app
            mode: 0750
    """)


def three_layers(layer, key, node=NODE, site_text=None, profile_text=None):
    return [
        layer(site_text or site(key), "site/site.yaml", ("defaults", "ignition")),
        layer(profile_text or profile(key), "site/profiles/flatcar.yaml"),
        layer(node, "nodes/node-1.yaml"),
    ]


def test_three_layers_merge(layer, ed25519_key, tmp_path, assert_valid_ignition):
    config = build_ignition(three_layers(layer, ed25519_key), files_dir=tmp_path)
    assert config["passwd"]["users"] == [
        # scalars from the most specific layer, key lists appended without repeats, other lists appended
        {"name": "core", "shell": "/bin/sh", "sshAuthorizedKeys": [ed25519_key, KEY_B], "groups": ["wheel", "docker"]},
        {"name": "ops"},
    ]
    files = config["storage"]["files"]
    assert [f["path"] for f in files] == ["/etc/motd", "/etc/site-only"]
    # the profile's /etc/motd replaces the site's whole: the site's mode is gone
    assert files[0] == {"path": "/etc/motd", "contents": {"source": "data:,profile%20motd", "compression": ""}}
    assert config["storage"]["directories"] == [{"path": "/var/lib/app", "mode": 0o750}]
    (unit,) = config["systemd"]["units"]
    # the profile's unit replaced the site's (enabled is gone), drop-ins merged by name
    assert unit == {"name": "app.service", "contents": UNIT, "dropins": [
        {"name": "10-site.conf", "contents": "[Service]\nEnvironment=A=2\n"},
        {"name": "20-profile.conf", "contents": "[Service]\nEnvironment=B=1\n"}]}
    assert_valid_ignition(config)


def test_problems_point_at_the_layer_that_supplied_the_value(layer, ed25519_key, problems_of):
    site_text = site(ed25519_key).replace("inline: kept", "local: missing.txt")
    profile_text = profile(ed25519_key).replace("groups: [wheel]", "grups: [wheel]")
    node = NODE.replace("mode: 0750", "mode: 750")
    problems = problems_of(three_layers(layer, ed25519_key, node, site_text, profile_text))
    found = [(p.location.file, p.location.line, p.location.column, p.path, p.message) for p in problems]
    assert found == [
        ("nodes/node-1.yaml", 12, 15, "$.ignition.storage.directories[0].mode",
         "mode 750 is decimal (octal 1356), which is not a sensible permission"),
        ("site/profiles/flatcar.yaml", 5, 9, "$.ignition.passwd.users[0].grups", "unknown key 'grups'"),
        ("site/site.yaml", 17, 20, "$.defaults.ignition.storage.files[1].contents.local",
         "local file 'missing.txt' not found"),
    ]
    assert problems[1].hint == "did you mean 'groups'?"


def test_replaced_entry_is_not_read(layer, ed25519_key, tmp_path):
    """A bad local file in a site entry that the node replaces is never read, so it is no problem."""
    site_text = site(ed25519_key).replace("inline: kept", "local: missing.txt")
    node = NODE + "    files:\n      - path: /etc/site-only\n        contents:\n          inline: node\n"
    config = build_ignition(three_layers(layer, ed25519_key, node, site_text), files_dir=tmp_path)
    assert config["storage"]["files"][1]["contents"]["source"] == "data:,node"


def test_same_path_as_file_and_directory_across_layers(layer, ed25519_key, problems_of):
    node = NODE.replace("path: /var/lib/app", "path: /etc/site-only")
    (problem,) = problems_of(three_layers(layer, ed25519_key, node))
    assert problem.message == ("'/etc/site-only' is defined twice: as a directory here and as a file at "
                               "site/site.yaml:15:17")
    assert (problem.location.file, problem.location.line, problem.location.column) == ("nodes/node-1.yaml", 11, 15)


def test_same_path_twice_in_one_layer(layer, problems_of):
    text = textwrap.dedent("""\
        ignition:
          storage:
            files:
              - path: /etc/a
              - path: /etc/a
        """)
    (problem,) = problems_of([layer(text)])
    assert problem.message == "duplicate entry for path '/etc/a' (first defined on line 4)"
    assert (problem.location.line, problem.location.column) == (5, 15)


def test_unit_in_node_keeps_profile_dropins(layer, tmp_path):
    base = "ignition:\n  systemd:\n    units:\n      - name: a.service\n        dropins:\n          - name: 1.conf\n            contents: x\n"
    top = "ignition:\n  systemd:\n    units:\n      - name: a.service\n        mask: true\n"
    config = build_ignition([layer(base, "p.yaml"), layer(top, "n.yaml")], files_dir=tmp_path)
    assert config["systemd"]["units"] == [{"name": "a.service", "mask": True,
                                           "dropins": [{"name": "1.conf", "contents": "x"}]}]
