"""Incremental builds: only what an edit touches is read and rendered again."""

from bootgen.build import build
from bootgen.plan import is_index_path, listing_dir
from bootgen.publish.manifest import load_tree, tree_sums


def _nodes_of(out):
    return {f.node for f in load_tree(out).files}


def test_nothing_changed_reads_nothing(example, monkeypatch):
    build(example, fetch=False)
    import bootgen.load as loader

    def boom(*args, **kwargs):
        raise AssertionError("a no-op build must not load the site")

    monkeypatch.setattr(loader, "load_site", boom)
    result = build(example, fetch=False)
    assert not result.write.changed and result.rendered == 0


def test_one_node_edit_renders_one_node(example):
    build(example, fetch=False)
    path = example.nodes / "node-2.yaml"
    path.write_text(path.read_text() + "kernel_args: [quiet]\n")
    result = build(example, fetch=False)
    assert result.rendered == 1 and result.write.changed
    assert "quiet" in (example.out / "pxelinux.cfg" / "01-00-1e-06-45-0a-02").read_text()


def test_profile_edit_renders_its_nodes_only(example):
    build(example, fetch=False)
    profile = example.site / "profiles" / "ubuntu-autoinstall.yaml"
    profile.write_text(profile.read_text().replace("ramdisk_size=1500000", "ramdisk_size=1600000"))
    assert build(example, fetch=False).rendered == 1  # only the Ubuntu node uses it


def test_site_or_template_edit_renders_everything(example):
    build(example, fetch=False)
    site = example.site / "site.yaml"
    site.write_text(site.read_text().replace("console=tty0", "console=tty1"))
    assert build(example, fetch=False).rendered == 7
    (example.site / "templates").mkdir()
    (example.site / "templates" / "node.ipxe.j2").write_text("#!ipxe\nexit\n")
    assert build(example, fetch=False).rendered == 7
    assert (example.out / "ipxe" / "00-1e-06-45-0a-01.ipxe").read_text() == "#!ipxe\nexit\n"


def test_deleted_node_disappears(example):
    build(example, fetch=False)
    (example.nodes / "tink-worker.yaml").unlink()
    result = build(example, fetch=False)
    assert result.rendered == 0
    assert "tink-worker" not in _nodes_of(example.out)
    assert not (example.out / "ipxe" / "08-00-27-00-00-01.ipxe").exists()


def test_broken_edit_keeps_last_good_tree_then_fix_builds(example):
    first = build(example, fetch=False)
    path = example.nodes / "node-1.yaml"
    good = path.read_text()
    path.write_text(good.replace("00:1e:06:45:0a:01", "00:1e:06:45:0a:zz"))
    try:
        build(example, fetch=False)
        raise AssertionError("a broken node must fail the build")
    except Exception as exc:  # InputError
        assert "is not a MAC address" in str(exc)
    assert example.out.resolve() == first.write.tree.resolve()
    path.write_text(good)
    again = build(example, fetch=False)
    assert again.write.build_id == first.write.build_id


def test_parallel_render_matches_serial(example, tmp_path, tree_files, monkeypatch):
    import bootgen.build as engine

    for i in range(30):
        (example.nodes / f"extra-{i}.yaml").write_text(
            f"interfaces:\n  - mac: 02:00:00:00:02:{i:02x}\n    address: 10.0.0.{100 + i}/24\n")
    serial = build(example, fetch=False, jobs=1)
    monkeypatch.setattr(engine, "PARALLEL_THRESHOLD", 1)
    other = type(example)(example.site, example.nodes, tmp_path / "out2" / "build")
    parallel = build(other, fetch=False, jobs=2)
    assert parallel.write.build_id == serial.write.build_id
    assert tree_files(other.out) == tree_files(example.out)


def test_a_file_missing_from_the_live_tree_is_rendered_again(example):
    first = build(example, fetch=False)
    victim = example.out / "pxelinux.cfg" / "0A000047"
    data = victim.read_bytes()
    path = example.nodes / "node-1.yaml"
    path.write_text(path.read_text() + "kernel_args: [x=1]\n")  # forces a new tree
    victim.unlink()  # someone damaged the live tree
    result = build(example, fetch=False)
    assert result.rendered == 2  # node-1 (edited) and node-2 (its file was missing)
    assert (example.out / "pxelinux.cfg" / "0A000047").read_bytes() == data
    assert result.write.build_id != first.write.build_id


def test_recycled_trees_never_touch_the_trees_still_kept(example):
    """From the fourth build on, the oldest tree is reused as the staging tree; the
    live one and the one before it must still match their own checksums."""
    import subprocess

    builds = example.state / "builds"
    for i in range(6):
        node = example.nodes / ("node-2.yaml" if i % 2 else "ubuntu-4f62c7.yaml")
        node.write_text(node.read_text() + f"kernel_args: [round={i}]\n" if "kernel_args" not in node.read_text()
                        else node.read_text().replace(f"round={i - 2}", f"round={i}"))
        result = build(example, fetch=False)
        assert result.write.changed
        for tree in (p for p in builds.iterdir() if not p.name.startswith(".")):
            full = tree_sums(listing_dir(tree))  # the public one leaves out the Ubuntu node's configs
            check = subprocess.run(["sha256sum", "--quiet", "-c"], input=full, cwd=tree, capture_output=True,
                                   text=True, timeout=60)
            assert check.returncode == 0, (i, tree.name, check.stdout)
            listed = {line.split("  ", 1)[1] for line in full.splitlines()}
            on_disk = {str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()}
            assert {path for path in on_disk - listed if not is_index_path(path)} == set()
            assert set(load_tree(tree).index_files()) <= on_disk


def test_the_inputs_digest_depends_on_values_only(example):
    """Publish compares a digest taken in another process with other objects holding equal values."""
    import json

    from bootgen.incremental import InputStamps

    stamps = InputStamps.take(example.site, example.nodes)
    shared = "lab"
    held = [shared, shared]  # noqa: F841  (more references to the same string)
    assert stamps.digest(shared, "") == stamps.digest(json.loads('"lab"'), "")
