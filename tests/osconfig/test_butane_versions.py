"""Every translated field, for each Ignition spec version bootgen writes (3.0.0 to 3.4.0)."""
from __future__ import annotations

import copy

import pytest

from bootgen.errors import RenderError
from bootgen.osconfig.butane import ButaneLayer, build_ignition
from bootgen.passwords import hash_password

SHA512 = "sha512-" + "ab" * 64

EVERYTHING_3_0 = f"""\
ignition:
  variant: fcos
  version: 1.4.0
  storage:
    disks:
      - device: /dev/vda
        wipe_table: false
        partitions:
          - label: data
            number: 5
            size_mib: 1024
            start_mib: 0
            type_guid: 0FC63DAF-8483-4772-8E79-3D69D8477DE4
            wipe_partition_entry: true
            should_exist: true
    filesystems:
      - device: /dev/disk/by-partlabel/data
        format: xfs
        path: /var/data
        label: data
        wipe_filesystem: true
        options: [-m, reflink=1]
    files:
      - path: /etc/hostname
        overwrite: true
        mode: 0644
        user: {{id: 0}}
        group: {{name: root}}
        contents:
          inline: node-1
      - path: /opt/ignition.json
        contents:
          source: http://10.0.0.5:8080/node-1-ignite-boot.ign
          verification: {{hash: {SHA512}}}
        append:
          - source: tftp://10.0.0.5/extra
    directories:
      - path: /var/lib/app
        mode: 0750
        user: {{name: core}}
    links:
      - path: /etc/localtime
        target: ../usr/share/zoneinfo/UTC
      - path: /usr/local/bin/app
        target: /opt/app
        hard: true
        overwrite: true
  systemd:
    units:
      - name: installer.service
        enabled: true
        contents: "[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n"
        dropins:
          - name: 10-env.conf
            contents: "[Service]\\nEnvironment=A=1\\n"
      - name: docker.service
        mask: true
  passwd:
    users:
      - name: core
        uid: 500
        gecos: Core User
        home_dir: /home/core
        no_create_home: false
        primary_group: core
        groups: [wheel, docker]
        no_user_group: false
        no_log_init: true
        shell: /bin/bash
        system: false
        password_hash: "{hash_password('pw', salt='saltsalt')}"
    groups:
      - name: ops
        gid: 600
        system: true
"""

BUTANE_FOR = {"3.0.0": "1.0.0", "3.1.0": "1.1.0", "3.2.0": "1.3.0", "3.3.0": "1.4.0", "3.4.0": "1.5.0"}

NEWER = {
    "3.1.0": "        mount_options: [noatime]\n",
    "3.2.0": "        mount_options: [noatime]\n",
    "3.3.0": "        mount_options: [noatime]\n",
    "3.4.0": "        mount_options: [noatime]\n",
}


@pytest.mark.parametrize("version", ["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0"])
def test_every_field_validates(layer, tmp_path, assert_valid_ignition, version):
    text = EVERYTHING_3_0.replace("        options: [-m, reflink=1]\n",
                                  "        options: [-m, reflink=1]\n" + NEWER.get(version, ""))
    text = text.replace("version: 1.4.0", f"version: {BUTANE_FOR[version]}")
    config = build_ignition([layer(text)], files_dir=tmp_path, version=version, variant="fcos")
    assert config["ignition"] == {"version": version}
    assert config["storage"]["disks"][0]["partitions"][0]["sizeMiB"] == 1024
    assert config["storage"]["links"][0] == {"path": "/etc/localtime", "target": "../usr/share/zoneinfo/UTC"}
    assert config["passwd"]["users"][0]["homeDir"] == "/home/core"
    assert_valid_ignition(config)


def test_kernel_arguments_on_fcos_3_3(layer, tmp_path, assert_valid_ignition):
    text = "ignition:\n  kernel_arguments:\n    should_exist: [quiet]\n    should_not_exist: [debug]\n"
    config = build_ignition([layer(text)], files_dir=tmp_path, version="3.3.0", variant="fcos")
    assert config["kernelArguments"] == {"shouldExist": ["quiet"], "shouldNotExist": ["debug"]}
    assert_valid_ignition(config)


def test_newer_fields_on_3_2(layer, tmp_path, assert_valid_ignition):
    text = ("ignition:\n  passwd:\n    users:\n      - name: old\n        should_exist: false\n"
            "  storage:\n    files:\n      - path: /x\n        contents: {source: 'gs://bucket/x', "
            "http_headers: [{name: A, value: b}]}\n")
    with pytest.raises(RenderError) as info:
        build_ignition([layer(text)], files_dir=tmp_path, version="3.1.0")
    assert [p.message for p in info.value.problems] == [
        "'should_exist' needs Ignition 3.2.0 or newer, but this config is Ignition 3.1.0",
        "gs: URLs need Ignition 3.2.0 or newer",
    ]
    ok = text.replace("gs://bucket/x", "https://h/x")
    config = build_ignition([layer(ok)], files_dir=tmp_path, version="3.2.0")
    assert config["storage"]["files"][0]["contents"]["httpHeaders"] == [{"name": "A", "value": "b"}]
    assert_valid_ignition(config)


def test_3_4_is_written_as_asked(layer, tmp_path):
    text = EVERYTHING_3_0.replace("version: 1.4.0", "version: 1.5.0")
    config = build_ignition([layer(text)], files_dir=tmp_path, version="3.4.0", variant="fcos")
    assert config["ignition"] == {"version": "3.4.0"}
    assert config["storage"]["files"][0]["contents"] == {"source": "data:,node-1", "compression": ""}


def _leaf_paths(value, path=()):
    yield path
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _leaf_paths(child, path + (key,))


def test_any_wrong_value_is_refused_or_valid(layer, tmp_path, assert_valid_ignition):
    """Replace every value of the full config, one at a time, by values of the wrong shape.

    Each result is either a RenderError located in the layer, or a config Ignition accepts.
    """
    base = layer(EVERYTHING_3_0)
    for path in list(_leaf_paths(base.data))[1:]:
        for wrong in (None, 5, "x", [], {}, True, [None], {"zz": 1}, "/etc/x"):
            data = copy.deepcopy(base.data)
            parent = data
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = wrong
            try:
                config = build_ignition([ButaneLayer(data, base.doc, base.path)], files_dir=tmp_path, variant="fcos")
            except RenderError as exc:
                assert exc.problems and all(p.location.file == "nodes/node-1.yaml" for p in exc.problems)
            else:
                assert_valid_ignition(config)
