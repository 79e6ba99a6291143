#!/usr/bin/env python3
"""Build speed at fleet scale, measured in one run (ratios, not absolute times).

    python3 bench/build_bench.py                 # 10,000 nodes
    python3 bench/build_bench.py --nodes 2000    # quicker
    python3 bench/build_bench.py --large 100000  # also a cold build of 100,000 nodes

Generates N synthetic nodes of realistic shape (the example site's profiles in
turn, one or two interfaces, static addresses) and measures, each as a fresh
`bootgen build` process unless noted:

- the write floor: a minimal Python loop writing the same files with the same
  bytes into a fresh directory (what any generator must at least do);
- a cold build, and its ratio to the floor;
- a no-op rebuild; a rebuild after one node file is edited;
- in `bootgen watch`: from saving one node file to the output link switching
  (median of several edits);
- with --large: a cold build of that many nodes, its time per node against the
  10,000-node build, and peak memory.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bootgen.write import wait_for_spare  # noqa: E402

PASSWORD = "$6$r5BaaYkys3XBVgNs$Il5bJI//lEMZmj6zNvVY2l1ZKOcmOGuF5XvjX9QoCKlyJZS8v/YWNwf.C9kVvfqbAeqYguXWn1SablhvwT9NI/"
PROFILES = ("flatcar-install", "coreos-cloud-config", "flatcar-install", "ubuntu-autoinstall")


def make_site(directory: Path, count: int) -> None:
    shutil.copytree(ROOT / "site", directory / "site")
    nodes = directory / "nodes"
    nodes.mkdir()
    for i in range(count):
        nodes.joinpath(f"n{i:06d}.yaml").write_text(node_text(i))


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


def run_build(site: Path) -> tuple[float, int]:
    """Seconds and peak RSS (KiB) of one fresh `bootgen build` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bootgen", "build", "--offline"], cwd=site, check=True,
                   stdout=subprocess.DEVNULL, env=CHILD_ENV)
    seconds = time.perf_counter() - started
    return seconds, max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)


def edit_and_build(site: Path, index: int, round_: int) -> float:
    node = site / "nodes" / f"n{index:06d}.yaml"
    node.write_text(node_text(index, f"kernel_args: [bench={round_}]\n"))
    return run_build(site)[0]


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


def watch_latency(site: Path, edits: int) -> list[float]:
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
        for k in range(edits):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=0, help="also a cold build of this many nodes")
    parser.add_argument("--edits", type=int, default=7, help="edits for the watch latency median")
    args = parser.parse_args()
    rows = []
    tmp = tempfile.mkdtemp(prefix="bootgen-bench-")
    try:
        work = Path(tmp) / "site"
        make_site(work, args.nodes)
        cold, rss = run_build(work)
        tree = (work / "build").resolve()
        wait_for_spare(work / ".bootgen" / "builds")  # the copy started after a cold build, off the clock
        floor, files = write_floor(tree, Path(tmp) / "floor")
        os.sync()  # off the clock: a build's flush must not pay for the floor's writeback
        noop, _ = run_build(work)
        one = edit_and_build(work, 42, 1)  # recycles the copy made after the cold build
        two = edit_and_build(work, 42, 2)  # right after: waits for the copy started by the first edit
        edit_and_build(work, 42, 3)
        # then the oldest kept tree is reused as staging
        steady = statistics.median(edit_and_build(work, 42, round_) for round_ in (4, 5, 6))
        latencies = watch_latency(work, args.edits)
        rows += [
            (f"write floor, {files:,} files", floor, ""),
            (f"cold build, {args.nodes:,} nodes", cold, f"{cold / floor:.2f}x floor, peak RSS {rss / 1024:.0f} MiB"),
            (f"no-op rebuild, {args.nodes:,} nodes", noop, ""),
            (f"one node edited, first edit after a cold build, {args.nodes:,} nodes", one,
             "recycles the tree copy made in the background after the cold build"),
            (f"one node edited, second edit at once after the first, {args.nodes:,} nodes", two,
             "waits for the copy the first edit started"),
            (f"one node edited, later edits, {args.nodes:,} nodes", steady, "oldest kept tree reused; median of 3"),
            ("watch: save to switch (median)", statistics.median(latencies),
             f"min {min(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"),
        ]
        if args.large:
            big = Path(tmp) / "large"
            make_site(big, args.large)
            large, large_rss = run_build(big)
            per_node = (large / args.large) / (cold / args.nodes)
            rows.append((f"cold build, {args.large:,} nodes", large,
                         f"{per_node:.2f}x the per-node time at {args.nodes:,}, peak RSS {large_rss / 1024:.0f} MiB"))
    finally:
        remove_in_background(tmp)
    print(f"bootgen build benchmark on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("| case | seconds | notes |\n| --- | ---: | --- |")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds:.3f} | {note} |")


if __name__ == "__main__":
    main()
