"""Build state in shards, and flushing only what a build changed: an edit's cost follows the edit."""
import marshal
import os

import bootgen.write as write_module
from bootgen.build import build
from bootgen.incremental import BuildState
from bootgen.shards import SHARDS, ShardedMap, shard_of


def _state_files(paths) -> set[str]:
    return set(os.listdir(paths.state / "records"))


def _edit(paths, name: str, n: int) -> None:
    node = paths.nodes / f"{name}.yaml"
    text = node.read_text().split("kernel_args:")[0]
    node.write_text(text + f"kernel_args: [edit={n}]\n")


def test_an_edit_rewrites_the_shard_of_its_node_only(example):
    build(example, fetch=False)
    before = _state_files(example)
    _edit(example, "node-2", 1)
    build(example, fetch=False)
    after = _state_files(example)
    written = sorted(after - before)
    # the node's record shard and the root; its claims (MAC, address, name) did not change
    assert [name for name in written if name.startswith("r")] == [
        name for name in written if name.startswith(f"r{shard_of('node-2'):04d}.")]
    assert len([name for name in written if name.startswith("r")]) == 1
    assert not [name for name in written if name.startswith("c")]
    assert len(after) == len(before)  # the shard's old file is gone


def test_state_reads_back_as_it_was_saved(example):
    build(example, fetch=False)
    state = BuildState.load_stamp(example.state)
    state.load_records(example.state)
    names = {path.stem for path in example.nodes.glob("*.yaml")}
    assert set(state.records) == names and len(state.records) == len(names)
    record = state.records["node-2"]
    assert record.file == "node-2.yaml" and record.paths
    assert ("MAC", "00:1e:06:45:0a:02") in {tuple(claim[:2]) for claim in record.claims}
    assert state.claims[("MAC", "00:1e:06:45:0a:02")] == "node-2"


def test_a_changed_address_moves_its_claim(example):
    build(example, fetch=False)
    node = example.nodes / "node-2.yaml"
    node.write_text(node.read_text().replace("10.0.0.71", "10.0.0.79"))
    build(example, fetch=False)
    state = BuildState.load_stamp(example.state)
    state.load_records(example.state)
    claimed = {key: value for key, value in state.claims.items() if "10.0.0.7" in str(key[1])}
    assert "node-2" in claimed.values()
    assert not any("10.0.0.71" == str(key[1]).split("/")[0] for key in claimed)
    # and another node may now take the old address
    other = example.nodes / "node-3.yaml"
    text = other.read_text()
    address = text.split("address: ")[1].split("/")[0]
    other.write_text(text.replace(address, "10.0.0.71"))
    assert build(example, fetch=False).rendered == 1


def test_sharded_map_round_trip_and_old_files_removed(tmp_path):
    records = ShardedMap()
    for i in range(3000):
        records.put(f"n{i}", i)
    table, counts, stale = records.write(tmp_path, "r")
    assert stale is None and sum(counts) == 3000 and len(os.listdir(tmp_path)) == sum(map(bool, table))
    again = ShardedMap(tmp_path, table, counts)
    assert again["n1234"] == 1234 and len(again) == 3000 and "n3000" not in again
    again.put("n1234", -1)
    again.remove("n7")
    table2, counts2, stale2 = again.write(tmp_path, "r")
    changed = {i for i in range(SHARDS) if table[i] != table2[i]}
    assert changed == {shard_of("n1234"), shard_of("n7")} and len(stale2) == len(changed)
    third = ShardedMap(tmp_path, table2, counts2)
    assert third["n1234"] == -1 and "n7" not in third and len(third) == 2999
    assert marshal.loads((tmp_path / table2[shard_of("n1")]).read_bytes())["n1"] == 1


def _count_syncs(monkeypatch) -> list:
    calls = []
    real = write_module.sync_filesystem
    monkeypatch.setattr(write_module, "sync_filesystem", lambda path: (calls.append(path), real(path)))
    return calls


def test_an_edit_on_a_tree_on_disk_flushes_only_its_changes(example, monkeypatch):
    build(example, fetch=False)
    for n in range(4):  # until an old tree can be recycled
        _edit(example, "node-2", n)
        build(example, fetch=False)
    flushed = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    syncs = _count_syncs(monkeypatch)
    _edit(example, "node-2", 9)
    result = build(example, fetch=False)
    assert result.write.changed and syncs == []
    staged = [path.split("/.partial-", 1)[1] for path in flushed if "/.partial-" in path]  # before the rename
    names = {path.split("/", 1)[1] for path in staged if "/" in path}
    assert "pxelinux.cfg/01-00-1e-06-45-0a-02" in names and "manifest.json" in names
    assert "ipxe/00-1e-06-45-0a-01.ipxe" not in names  # another node's file: not this build's to flush
    assert str(result.write.tree.parent) in flushed  # the rename into builds/


def test_a_tree_switched_to_without_a_flush_makes_the_next_build_flush_everything(example, monkeypatch):
    build(example, fetch=False)
    for n in range(4):
        _edit(example, "node-2", n)
        build(example, fetch=False)
    _edit(example, "node-2", 7)
    build(example, fetch=False, durable=False)  # as watch does
    syncs = _count_syncs(monkeypatch)
    _edit(example, "node-2", 8)
    build(example, fetch=False)
    assert len(syncs) == 1  # the tree it links from was never flushed
    write_module.make_live_durable(example.out, example.state)  # watch, when edits pause
    _edit(example, "node-2", 9)
    build(example, fetch=False)
    assert len(syncs) == 1
    markers = {p.name for p in (example.state / "builds").glob(".durable-*")}
    trees = {p.name for p in (example.state / "builds").iterdir() if not p.name.startswith(".")}
    assert {m[len(".durable-"):] for m in markers} <= trees


def test_a_build_from_scratch_flushes_the_file_system(example, monkeypatch):
    syncs = _count_syncs(monkeypatch)
    build(example, fetch=False)
    assert len(syncs) == 1


def test_a_scan_reads_only_the_record_shards_whose_stats_changed(example, monkeypatch):
    """Without a monitor, the node files are stat'ed, but the records of a shard are read only
    when the digest of that shard's stats differs from the saved one."""
    monkeypatch.setenv("BOOTGEN_MONITOR", "0")
    build(example, fetch=False)
    _edit(example, "node-2", 1)
    loaded = []
    real = ShardedMap._load

    def counting(self, index):
        if index not in self._loaded and self._table[index] is not None:
            loaded.append((self._directory.name if self._directory else None, index))
        return real(self, index)

    monkeypatch.setattr(ShardedMap, "_load", counting)
    assert build(example, fetch=False).rendered == 1
    assert shard_of("node-2") in {index for _, index in loaded}
    assert len(loaded) <= 4  # its record shard, and the shards of its three claims (7 nodes, 21 claims)
