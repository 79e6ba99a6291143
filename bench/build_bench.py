#!/usr/bin/env python3
"""Build speed at fleet scale against the targets of the speed issue, measured in one run.

    python3 bench/build_bench.py                          # 10,000 nodes
    python3 bench/build_bench.py --nodes 10000 100000     # edit and watch rows at both sizes
    python3 bench/build_bench.py --publish                # also the publish rows (SeaweedFS)
    python3 bench/build_bench.py --large 1000000          # by hand: a cold build of a million nodes
    python3 bench/build_bench.py --large 1000000 --large-only   # that run and its base alone

Generates synthetic nodes of realistic shape (the example site's profiles in
turn, one or two interfaces, static addresses) and prints one row per target:
what was measured, the reference it is compared with, the ratio, the target
and PASS or FAIL. Every build is a fresh `bootgen build` process, as a user
runs it. The references are measured in the same run, interleaved with the
builds they are compared with, so a loaded machine slows both:

- the write floor: a bare Python loop writing the cold build's files, with
  the same bytes, into a fresh directory (what any generator must at least do);
- a minimal edit: a script that starts Python, imports PyYAML and Jinja2,
  parses one node file, writes that node's files (the ones the last edit
  wrote), flushes them and renames a link into place (what one edit must do);
- a steady-state edit: the median of several edits once old trees are
  recycled, for the edits right after a cold build.

The first size given to --nodes is the base: its cold build is compared with
the write floor and a later size's edit with its edit. The publish rows come
from bench/publish_bench.py (bytes and requests counted by the server).
Peak memory is the largest sum of the proportional set sizes (/proc/PID/smaps_rollup)
of a build and its workers, sampled; a build past --rss-limit is stopped.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bootgen.write import wait_for_spare  # noqa: E402

PASSWORD = "$6$r5BaaYkys3XBVgNs$Il5bJI//lEMZmj6zNvVY2l1ZKOcmOGuF5XvjX9QoCKlyJZS8v/YWNwf.C9kVvfqbAeqYguXWn1SablhvwT9NI/"
PROFILES = ("flatcar-install", "coreos-cloud-config", "flatcar-install", "ubuntu-autoinstall")
EDITED = 42  # the node every edit changes
STEADY_EDITS = 5  # edits whose median is the steady state
GIB = 1 << 30


LEAN = "boot_configs: [ipxe], no Pixiecore or Tinkerbell exports"  # the large run's site, as printed


def make_site(directory: Path, count: int, lean: bool = False) -> None:
    """The example site with `count` nodes; `lean`: iPXE as the only boot config and no
    Pixiecore or Tinkerbell files (the fewest files per node a site can choose)."""
    shutil.copytree(ROOT / "site", directory / "site")
    if lean:
        lean_site(directory / "site" / "site.yaml")
    nodes = directory / "nodes"
    nodes.mkdir()
    for i in range(count):
        nodes.joinpath(f"n{i:06d}.yaml").write_text(node_text(i))


def lean_site(site_yaml: Path) -> None:
    import yaml

    config = yaml.safe_load(site_yaml.read_text())
    config["boot_configs"] = ["ipxe"]
    config.pop("exports", None)
    site_yaml.write_text(yaml.safe_dump(config, sort_keys=False))


def node_text(i: int, extra: str = "") -> str:
    profile = PROFILES[i % len(PROFILES)]
    mac = f"02:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
    lines = [f"hostname: n{i:06d}", f"profile: {profile}", "interfaces:",
             f"  - mac: {mac}:01", f"    address: 10.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}/8",
             "    gateway: 10.0.0.1"]
    if i % 3 == 0:
        lines.append(f"  - mac: {mac}:02")
    if profile == "ubuntu-autoinstall":
        lines += ["cloud_init:", f"  password_hash: {PASSWORD}"]
    return "\n".join(lines) + "\n" + extra


# Builds run as an installed bootgen does: Python may cache bytecode (some CI
# images turn that off, which would time compiling bootgen on every run).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
CHILD_ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


@dataclass
class Run:
    seconds: float
    peak_bytes: int  # largest sampled PSS sum of the process and its descendants


class MemoryLimit(Exception):
    pass


def run_timed(argv: list[str], cwd: Path, rss_limit: int = 0, sample: bool = False, env: dict | None = None) -> Run:
    """Run a fresh process; with `sample`, watch the memory of it and its workers (and stop
    the whole group past `rss_limit` bytes)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, env=env or CHILD_ENV, start_new_session=True)
    peak = 0
    while proc.poll() is None:
        if sample:
            peak = max(peak, _group_pss(proc.pid))
            if rss_limit and peak > rss_limit:
                os.killpg(proc.pid, 9)
                proc.wait()
                raise MemoryLimit(f"stopped {' '.join(argv[2:])} at {peak / GIB:.1f} GiB")
        time.sleep(_sample_interval(time.perf_counter() - started) if sample else 0.001)
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv)
    return Run(seconds, peak)


def _sample_interval(elapsed: float) -> float:
    """Seconds between memory samples: often in a short build, rarely in a long one, where
    reading the page tables of gigabytes (smaps_rollup) every 0.2 s took a third of a core
    from the build it measured; memory that grows with the fleet grows slowly."""
    return 0.2 if elapsed < 30 else 1.0 if elapsed < 300 else 3.0


def _group_pss(session: int) -> int:
    """Sum of the proportional set size of every process of a session (a build and its pool)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            if int(fields[3]) != session:  # field 6, the session id, counted after the name
                continue
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                total += next(int(line.split()[1]) * 1024 for line in handle if line.startswith("Pss:"))
        except (OSError, StopIteration, IndexError, ValueError):
            continue  # gone meanwhile
    return total


def run_build(site: Path, rss_limit: int = 0, sample: bool = False, resident: bool = True) -> Run:
    """`bootgen build` as a fresh process; `resident=False`: without the resident builder."""
    env = CHILD_ENV if resident else {**CHILD_ENV, "BOOTGEN_RESIDENT": "0"}
    return run_timed([sys.executable, "-m", "bootgen", "build", "--offline"], site, rss_limit, sample, env)


def edit(site: Path, round_: int) -> None:
    node = site / "nodes" / f"n{EDITED:06d}.yaml"
    node.write_text(node_text(EDITED, f"kernel_args: [bench={round_}]\n"))


def edit_and_build(site: Path, round_: int, resident: bool = True) -> float:
    edit(site, round_)
    return run_build(site, resident=resident).seconds


def write_floor(tree: Path, target: Path) -> tuple[float, int]:
    """Write the tree's files (bytes read beforehand) with a bare loop: the floor."""
    files = [(str(p.relative_to(tree)), p.read_bytes()) for p in tree.rglob("*") if p.is_file()]
    started = time.perf_counter()
    made = set()
    for rel, data in files:
        parent = os.path.dirname(rel)
        if parent not in made:
            os.makedirs(target / parent, exist_ok=True)
            made.add(parent)
        with open(target / rel, "wb") as handle:
            handle.write(data)
    return time.perf_counter() - started, len(files)


MINIMAL_EDIT = """
import marshal, os, sys
import jinja2, yaml
node = yaml.load(open(sys.argv[1]).read(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
files = marshal.loads(open(sys.argv[2], "rb").read())
tree = sys.argv[3]
for rel, data in files:
    os.makedirs(os.path.join(tree, os.path.dirname(rel)), exist_ok=True)
    fd = os.open(os.path.join(tree, rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
link = os.path.join(os.path.dirname(tree), "current")
os.symlink(tree, link + ".new")
os.rename(link + ".new", link)
"""


class MinimalEdit:
    """The reference for one edit: the files the last edit wrote, written by a bare script."""

    def __init__(self, site: Path, work: Path):
        import marshal

        self.site, self.work = site, work
        work.mkdir()
        (work / "edit.py").write_text(MINIMAL_EDIT)
        files = edited_files((site / "build").resolve())
        (work / "files").write_bytes(marshal.dumps(files))
        self.count = len(files)
        self.runs = 0

    def run(self) -> float:
        self.runs += 1
        tree = self.work / f"tree-{self.runs}"
        node = self.site / "nodes" / f"n{EDITED:06d}.yaml"
        return run_timed([sys.executable, str(self.work / "edit.py"), str(node), str(self.work / "files"),
                          str(tree)], self.work).seconds


def edited_files(tree: Path) -> list[tuple[str, bytes]]:
    """The node files the last build wrote: files under a directory of the tree that no kept
    tree shares (every unchanged file is a hard link to the previous tree's), except the
    tree's index, which is no node's."""
    from bootgen.plan import is_index_path

    found = []
    for directory, _, names in os.walk(tree):
        for name in names:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, tree)
            if "/" in rel and not is_index_path(rel) and os.stat(path).st_nlink == 1:
                found.append((rel, open(path, "rb").read()))
    return found


def resident_memory(site: Path) -> str:
    """The resident set of the site's resident builder (bootgen.resident), which outlives the builds."""
    for lock in (site / ".bootgen" / "resident").glob("*.sock.lock"):
        try:
            pid = int(lock.read_text())
            with open(f"/proc/{pid}/status") as status:
                kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
            return f"{kib / 1024 / 1024:.2f} GiB"
        except (OSError, ValueError, StopIteration):
            continue
    return "none running"


def watch_latency(site: Path, saves: int) -> list[float]:
    """Seconds from saving a node file to the output link pointing at a new tree."""
    from bootgen.build import Paths
    from bootgen.watch import watch

    paths = Paths(site / "site", site / "nodes", site / "build")
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=watch, args=(paths, lambda line: None),
                              kwargs={"fetch": False, "stop": stop, "ready": ready}, daemon=True)
    cwd = os.getcwd()
    os.chdir(site)
    thread.start()
    ready.wait(600)
    times = []
    try:
        for k in range(saves):
            before = os.readlink(paths.out)
            node = paths.nodes / f"n{k:06d}.yaml"
            started = time.perf_counter()
            node.write_text(node_text(k, f"kernel_args: [watch={k}]\n"))
            deadline = started + 60
            while os.readlink(paths.out) == before and time.perf_counter() < deadline:
                time.sleep(0.001)
            times.append(time.perf_counter() - started)
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(60)
        os.chdir(cwd)
    return times


def remove_in_background(directory: str) -> None:
    """Delete the benchmark's million files after it reports (that takes minutes on some disks)."""
    subprocess.Popen(["rm", "-rf", directory], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class Row:
    case: str
    measured: str
    reference: str = ""
    ratio: str = ""
    target: str = ""
    ok: bool | None = None  # None: shown for information, no target


def ratio_row(case: str, value: float, reference: float, reference_name: str, limit: float,
              unit: str = "s", low: float = 0.0) -> Row:
    ratio = value / reference
    target = f"{low:.1f}x to {limit:.1f}x" if low else f"<= {limit:.1f}x"
    return Row(case, f"{value:.3f} {unit}" if unit == "s" else f"{value:,.0f} {unit}",
               f"{reference_name} {reference:.3f} {unit}" if unit == "s" else f"{reference_name} {reference:,.0f} {unit}",
               f"{ratio:.2f}x", target, low <= ratio <= limit)


def limit_row(case: str, value: float, limit: float, unit: str, note: str = "") -> Row:
    shown = f"{value * 1000:.0f} ms" if unit == "ms" else f"{value:g} {unit}"
    target = f"< {limit * 1000:.0f} ms" if unit == "ms" else f"<= {limit:g} {unit}"
    return Row(case, shown, note, "", target, value < limit if unit == "ms" else value <= limit)


class Fleet:
    """One synthetic site of `nodes` nodes and what was measured on it."""

    def __init__(self, tmp: Path, nodes: int, lean: bool = False):
        self.nodes = nodes
        self.site = tmp / f"site-{nodes}{'-lean' if lean else ''}"
        make_site(self.site, nodes, lean)
        self.builds = self.site / ".bootgen" / "builds"

    def cold(self) -> Run:
        run = run_build(self.site, sample=True)
        wait_for_spare(self.builds, timeout=3600)  # the copies made for the next edits, off the clock
        return run

    def edits(self, minimal: MinimalEdit | None) -> dict:
        """First edit after the cold build, one at once after it, then the steady state, with
        the minimal edit run between the steady edits."""
        first = edit_and_build(self.site, 1)
        second = edit_and_build(self.site, 2)  # at once: no pause between the two processes
        for round_ in (3, 4):  # until the oldest kept tree is recycled
            edit_and_build(self.site, round_)
        minimal = minimal or MinimalEdit(self.site, self.site.parent / f"minimal-{self.nodes}")
        steady, references = [], []
        for round_ in range(5, 5 + STEADY_EDITS):
            steady.append(edit_and_build(self.site, round_))
            references.append(minimal.run())
        alone = [edit_and_build(self.site, round_, resident=False) for round_ in range(20, 20 + STEADY_EDITS)]
        edit_and_build(self.site, 30)  # the resident builder loads the state those builds saved
        return {"first": first, "second": second, "steady": statistics.median(steady),
                "minimal": statistics.median(references), "minimal_files": minimal.count,
                "alone": statistics.median(alone)}


def edit_at_once_after_cold(fleet: Fleet) -> float:
    """A cold build from nothing, then an edit at once, while its copies are still being made:
    the edit makes its tree itself instead of waiting. The edit's seconds."""
    for name in ("build", ".bootgen"):
        path = fleet.site / name
        if path.is_symlink():
            path.unlink()
        elif path.exists():
            path.rename(fleet.site.parent / f"old-{name.strip('.')}")
    run_build(fleet.site)
    seconds = edit_and_build(fleet.site, 100)
    wait_for_spare(fleet.builds, timeout=3600)
    return seconds


def fleet_rows(fleet: Fleet, results: dict, base: dict | None, saves: list[float]) -> list[Row]:
    n = f"{fleet.nodes:,} nodes"
    rows = [
        ratio_row(f"one-node edit, fresh process, {n}", results["steady"], results["minimal"],
                  f"minimal edit ({results['minimal_files']} files)", 2.5),
        ratio_row(f"first edit after a cold build, {n}", results["first"], results["steady"], "steady edit", 1.5),
        ratio_row(f"second edit, at once after the first, {n}", results["second"], results["steady"],
                  "steady edit", 1.5),
    ]
    rows.append(Row(f"one-node edit, fresh process, BOOTGEN_RESIDENT=0 (for information), {n}",
                    f"{results['alone']:.3f} s", f"minimal edit {results['minimal']:.3f} s",
                    f"{results['alone'] / results['minimal']:.2f}x"))
    if base is not None:
        rows.append(ratio_row(f"one-node edit, {n} vs {base['nodes']:,}", results["steady"], base["steady"],
                              f"edit at {base['nodes']:,}", 1.2, low=0.8))
    rows += [
        limit_row(f"watch, save to switch, median of {len(saves)}, {n}", statistics.median(saves), 0.060, "ms"),
        limit_row(f"watch, save to switch, worst of {len(saves)}, {n}", max(saves), 0.250, "ms"),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10_000],
                        help="fleet sizes; the first is the base for the cold build and the edit comparison")
    parser.add_argument("--large", type=int, default=0, help="also a cold build of this many nodes (by hand)")
    parser.add_argument("--saves", type=int, default=20, help="saves in watch")
    parser.add_argument("--publish", action="store_true", help="also publish to SeaweedFS at every size")
    parser.add_argument("--large-only", action="store_true",
                        help="with --large: only the large run and its base (no edit, watch or publish rows)")
    parser.add_argument("--rss-limit", type=float, default=8.0, help="GiB: stop a build whose memory passes it")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bootgen-bench-"))
    rows: list[Row] = []
    try:
        rows = measure(tmp, args)
    finally:
        print_table(rows)
        remove_in_background(str(tmp))


def measure(tmp: Path, args) -> list[Row]:
    if args.large and args.large_only:
        return large_rows(tmp, args.large, args.nodes[0], int(args.rss_limit * GIB))
    rows, fleets, base, base_cold = [], [], None, 0.0
    for index, nodes in enumerate(args.nodes):
        fleet = Fleet(tmp, nodes)
        cold = fleet.cold()
        if index == 0:
            base_cold = cold.seconds
            floor, files = write_floor((fleet.site / "build").resolve(), tmp / "floor")
            os.sync()  # off the clock: a build's flush must not pay for the floor's writeback
            rows.append(ratio_row(f"cold build, {nodes:,} nodes ({files:,} files)", cold.seconds, floor,
                                  "write floor", 2.0))
            rows.append(Row(f"peak memory, cold build, {nodes:,} nodes", f"{cold.peak_bytes / GIB:.2f} GiB"))
            noop = run_build(fleet.site).seconds
            rows.append(Row(f"no-op build, {nodes:,} nodes", f"{noop:.3f} s"))
        else:
            rows += scale_rows(nodes, cold, args.nodes[0], base_cold)
        results = fleet.edits(None)
        results["nodes"] = nodes
        rows.append(Row(f"resident builder, memory after the edits, {nodes:,} nodes", resident_memory(fleet.site)))
        saves = watch_latency(fleet.site, args.saves)
        rows += fleet_rows(fleet, results, base, saves)
        base = base or results
        fleets.append(fleet)
        print(f"measured {nodes:,} nodes", file=sys.stderr, flush=True)
    if args.publish:
        from publish_bench import fleet_publish_rows

        rows += fleet_publish_rows({fleet.nodes: fleet.site for fleet in fleets})
    at_once = edit_at_once_after_cold(fleets[0])
    rows.append(Row(f"edit at once after a cold build (copies not made yet), {fleets[0].nodes:,} nodes",
                    f"{at_once:.3f} s", "", "", "no wait for the copies"))
    if args.large:
        for fleet in fleets:  # the disk is the large fleet's now
            shutil.rmtree(fleet.site)
        rows += large_rows(tmp, args.large, fleets[0].nodes, int(args.rss_limit * GIB))
    return rows


def scale_rows(nodes: int, run: Run, base_nodes: int, base_seconds: float, target: bool = False) -> list[Row]:
    """A cold build's time per node against the base size's, and its peak memory (targets for
    a million nodes; shown for information at other sizes)."""
    per_node, base_per_node = run.seconds / nodes, base_seconds / base_nodes
    return [
        Row(f"cold build, {nodes:,} nodes ({run.seconds:.0f} s), per node", f"{per_node * 1e3:.3f} ms",
            f"at {base_nodes:,} nodes {base_per_node * 1e3:.3f} ms", f"{per_node / base_per_node:.2f}x",
            "<= 1.5x" if target else "", per_node / base_per_node <= 1.5 if target else None),
        Row(f"peak memory, cold build, {nodes:,} nodes", f"{run.peak_bytes / GIB:.2f} GiB", "", "",
            "< 4 GiB" if target else "", run.peak_bytes < 4 * GIB if target else None),
    ]


def large_rows(tmp: Path, nodes: int, base_nodes: int, rss_limit: int) -> list[Row]:
    """A cold build of `nodes` nodes of the lean site (the fewest files per node a site can
    choose) against one of `base_nodes` nodes of the same site: per-node time, peak memory,
    and the base's ratio to its write floor."""
    base = Fleet(tmp, base_nodes, lean=True)
    base_run = run_build(base.site, sample=True)
    stop_spares(base.site)
    floor, files = write_floor((base.site / "build").resolve(), tmp / "floor-lean")
    rows = [Row(f"site of the large run: {LEAN}", "")]
    rows.append(ratio_row(f"cold build, {base_nodes:,} nodes, that site ({files:,} files, "
                          f"{files / base_nodes:.2f} per node)", base_run.seconds, floor, "write floor", 2.0))
    rows.append(Row(f"peak memory, cold build, {base_nodes:,} nodes, that site", f"{base_run.peak_bytes / GIB:.2f} GiB"))
    shutil.rmtree(base.site)
    shutil.rmtree(tmp / "floor-lean")
    fleet = Fleet(tmp, nodes, lean=True)
    print(f"generated {nodes:,} nodes", file=sys.stderr, flush=True)
    try:
        run = run_build(fleet.site, rss_limit=rss_limit, sample=True)
    except MemoryLimit as exc:
        return rows + [Row(f"cold build, {nodes:,} nodes", str(exc), "", "", "peak < 4 GiB", False)]
    finally:
        stop_spares(fleet.site)
    count = tree_files(fleet.site / "build")
    rows.append(Row(f"files, cold build, {nodes:,} nodes", f"{count:,}", f"{count / nodes:.2f} per node"))
    return rows + scale_rows(nodes, run, base_nodes, base_run.seconds, target=True)


def tree_files(out: Path) -> int:
    """The files a tree lists, from its root (the full listing's, if it keeps a private one)."""
    import json

    from bootgen.plan import MANIFEST, listing_dir

    return json.loads((listing_dir(out.resolve()) / MANIFEST).read_bytes())["file_count"]


def stop_spares(site: Path) -> None:
    """Stop the background copies a cold build started for the next edits (none follow here;
    at a million nodes they would be millions of links, and the site is deleted next)."""
    state = str((site / ".bootgen").absolute())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"make_spares" in arg for arg in argv) and state.encode() in argv:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass


def print_table(rows: list[Row]) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"bootgen benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load average at the end {load}")
    print("| case | measured | reference | ratio | target | result |\n| --- | ---: | --- | ---: | --- | --- |")
    for row in rows:
        result = "" if row.ok is None else ("PASS" if row.ok else "FAIL")
        print(f"| {row.case} | {row.measured} | {row.reference} | {row.ratio} | {row.target} | {result} |")


if __name__ == "__main__":
    main()
