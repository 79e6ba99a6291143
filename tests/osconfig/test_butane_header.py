"""A layer's Butane `variant` and `version` against the profile, as Butane reads them."""
from __future__ import annotations

import pytest

from bootgen.osconfig.butane import ButaneLayer, build_ignition
from bootgen.source import SourceDoc, load_yaml_text


def bu(text: str, name: str = "site/butane/x.bu") -> ButaneLayer:
    """A .bu file as load.py passes it: the document's own mapping, at path ()."""
    doc = load_yaml_text(text, name)
    return ButaneLayer(doc.data if isinstance(doc.data, dict) else {}, doc, ())


@pytest.mark.parametrize("text,kw,line,message,hint", [
    ("", {}, 1, "the Butane file is empty", "start it with variant: flatcar and version: 1.0.0"),
    ("- a\n", {}, 1, "a Butane file must be a mapping", None),
    ("storage: {}\n", {"variant": "fcos", "version": "3.4.0"}, 1, "a Butane file needs variant and version",
     "add variant: fcos and version: 1.5.0"),
    ("variant: fcos\nversion: 1.4.0\n", {}, 1, "this config is for variant fcos, but the profile builds flatcar",
     "write variant: flatcar, or use it in a profile with variant: fcos"),
    ("variant: fcos\nversion: 1.5.0\n", {"variant": "fcos"}, 2,
     "Butane fcos 1.5.0 is Ignition 3.4.0, but the profile writes Ignition 3.3.0",
     "write version: 1.4.0, or set the profile's ignition_version: 3.4.0"),
    ("variant: flatcar\nversion: 1.0.0\n", {"version": "3.2.0"}, 2,
     "Butane flatcar 1.0.0 is Ignition 3.3.0, but the profile writes Ignition 3.2.0",
     "no Butane flatcar version writes Ignition 3.2.0, or set the profile's ignition_version: 3.3.0"),
    ("variant: fcos\nversion: 1.6.0\n", {"variant": "fcos", "version": "3.4.0"}, 2,
     "Butane fcos 1.6.0 is Ignition 3.5.0, but the profile writes Ignition 3.4.0",
     "write version: 1.5.0 (bootgen writes Ignition 3.0.0 to 3.4.0)"),
    ("variant: flatcar\nversion: 1.9.0\n", {}, 2, "Butane flatcar has no version 1.9.0",
     "flatcar versions: 1.0.0, 1.1.0"),
])
def test_bu_file_must_fit_the_profile(problems_of, text, kw, line, message, hint):
    (problem,) = problems_of([bu(text)], **kw)
    assert (problem.location.file, problem.location.line, problem.message) == ("site/butane/x.bu", line, message)
    if hint is not None:
        assert problem.hint == hint


def test_fragments_may_leave_out_variant_and_version(layer, tmp_path):
    config = build_ignition([layer("ignition:\n  storage:\n    directories: [{path: /srv}]\n")], files_dir=tmp_path)
    assert config["ignition"]["version"] == "3.3.0"


def test_a_fragment_that_names_them_must_fit(layer, problems_of):
    (problem,) = problems_of([layer("ignition:\n  variant: flatcar\n  version: 1.1.0\n")])
    assert (problem.location.line, problem.path) == (3, "$.ignition.version")
    assert problem.message == "Butane flatcar 1.1.0 is Ignition 3.4.0, but the profile writes Ignition 3.3.0"


def test_generated_layers_are_not_files(tmp_path):
    """What bootgen generates for a node sits at path () of the node's document, but is no .bu file."""
    doc = load_yaml_text("name: node-1\n", "nodes/node-1.yaml")
    generated = ButaneLayer({"storage": {"directories": [{"path": "/srv"}]}}, doc, ())
    assert not generated.is_document
    assert build_ignition([generated], files_dir=tmp_path)["storage"]["directories"] == [{"path": "/srv"}]
    assert ButaneLayer({}, SourceDoc("x.bu", None), ()).is_document


def test_kernel_arguments_on_flatcar(layer, tmp_path, assert_valid_ignition):
    """Butane's flatcar 1.0.0 spec has kernel_arguments (Ignition 3.3.0)."""
    text = "ignition:\n  kernel_arguments:\n    should_exist: [quiet]\n    should_not_exist: [debug]\n"
    config = build_ignition([layer(text)], files_dir=tmp_path, variant="flatcar", version="3.3.0")
    assert config["kernelArguments"] == {"shouldExist": ["quiet"], "shouldNotExist": ["debug"]}
    assert_valid_ignition(config)


def test_kernel_argument_repeated_across_layers(layer, problems_of, tmp_path):
    """Across layers a repeat in one list is dropped; wanted in one layer and unwanted in another is an error."""
    site = layer("ignition:\n  kernel_arguments:\n    should_exist: [quiet]\n", "site/site.yaml")
    same = layer("ignition:\n  kernel_arguments:\n    should_exist: [quiet]\n")
    config = build_ignition([site, same], files_dir=tmp_path)
    assert config["kernelArguments"] == {"shouldExist": ["quiet"]}
    other = layer("ignition:\n  kernel_arguments:\n    should_not_exist: [quiet]\n")
    (problem,) = problems_of([site, other])
    assert (problem.location.file, problem.location.line) == ("nodes/node-1.yaml", 3)
    assert problem.message == "kernel argument 'quiet' is listed in both should_exist and should_not_exist"


def test_ssh_key_repeated_across_layers_is_kept_once(layer, tmp_path, ed25519_key):
    text = f"ignition:\n  passwd:\n    users:\n      - name: core\n        ssh_authorized_keys: ['{ed25519_key}']\n"
    config = build_ignition([layer(text, "site/site.yaml"), layer(text)], files_dir=tmp_path)
    assert config["passwd"]["users"][0]["sshAuthorizedKeys"] == [ed25519_key]
