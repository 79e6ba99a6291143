#!/usr/bin/env python3
"""Compare `bootgen publish` with `aws s3 sync` and `rclone sync` against a local SeaweedFS.

Each tool gets its own bucket and runs three publishes of a synthetic tree
(default 10,000 nodes, about 30,000 files): the first publish, a no-op, and a
one-node change. Requests are counted on the server (SeaweedFS's Prometheus
counter SeaweedFS_s3_request_total, per bucket), so every tool is measured the
same way; bootgen's own botocore count is shown beside it as a cross-check.

The changed tree keeps the mtimes of unchanged files (as an in-place build
would), the most favourable case for mtime-based tools. rclone runs with
--checksum. The last column counts tree files missing or different in the
bucket afterwards (0 means the bucket serves the tree). Not part of pytest. Usage:

    python bench/publish_bench.py [--nodes 10000] [--tools bootgen,aws,rclone] [--jobs 16]

With --fleet, it measures the publish targets of the speed issue instead, on
real `bootgen build` trees of synthetic fleets (bench/build_bench.py's node
generator and example site, iPXE-only and without exports at every size, so
about 4.2 files per node) published by `bootgen publish` as a fresh process:
the bytes the server received (SeaweedFS_s3_bucket_traffic_received_bytes_total)
and the requests it served (SeaweedFS_s3_request_total) for a one-node change
at each fleet size (median over five nodes edited in turn, at the same places
in every fleet), and a no-op publish's requests and wall time (median of five).
build_bench.py --publish prints the same rows within its run, on its own sites.

    python bench/publish_bench.py --fleet 10000 100000
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "publish")]

from publish_servers import (ACCESS_KEY, SECRET_KEY, free_port, rclone_s3_args,  # noqa: E402
                             s3_client, start_seaweedfs)
from publish_synth import make_tree  # noqa: E402

from bootgen.publish import publish  # noqa: E402

STEPS = ("first", "no-op", "one node")
_COUNTER = re.compile(r'^SeaweedFS_s3_request_total\{bucket="([^"]+)",code="[^"]*",type="[^"]*"\} (\d+)', re.M)
_RECEIVED = re.compile(r'^SeaweedFS_s3_bucket_traffic_received_bytes_total\{bucket="([^"]+)"\} (\S+)', re.M)


def main() -> None:
    args = _arguments()
    if args.fleet:
        _fleet_main(args.fleet)
        return
    if args.index_bytes:
        for tree in args.index_bytes:
            print_index_bytes(tree.resolve())
        return
    work = Path(tempfile.mkdtemp(prefix="publish-bench-"))
    try:
        trees = _trees(work, args.nodes)
        metrics = free_port()
        server = start_seaweedfs(work / "seaweed", metrics_port=metrics)
        try:
            rows = [_run_tool(tool, trees, server.endpoint, metrics, args.jobs) for tool in args.tools]
        finally:
            server.stop()
        _print_table(args.nodes, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=16, help="bootgen workers; aws/rclone get as many")
    parser.add_argument("--tools", default="bootgen,aws,rclone", type=lambda s: [t for t in s.split(",") if t])
    parser.add_argument("--fleet", type=int, nargs="+", help="fleet sizes: the publish targets, on built sites")
    parser.add_argument("--index-bytes", type=Path, nargs="+", metavar="TREE",
                        help="built trees: the index bytes a one-node publish sends, as built and computed for larger pages")
    return parser.parse_args()


def _trees(work: Path, nodes: int) -> list[tuple[Path, list[Path]]]:
    """Tree a, then tree b (node 7 changed) whose unchanged files keep a's mtimes.

    Each step also names the files to touch just before it: a rebuild after the
    previous publish gives changed files a newer mtime than the uploaded objects.
    """
    a = make_tree(work / "a", nodes)
    b = make_tree(work / "b", nodes, revisions={7: 1})
    shared = set(os.listdir(a.root / "index"))  # content-addressed shards: same name, same bytes
    changed = [b.root / "manifest.json"] + [b.root / "index" / n for n in os.listdir(b.root / "index")
                                            if n not in shared]
    for path, content in b.files.items():
        if a.files.get(path) == content:
            stat = (a.root / path).stat()
            os.utime(b.root / path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        else:
            changed.append(b.root / path)
    return [(a.root, []), (a.root, []), (b.root, changed)]


def _run_tool(tool: str, trees: list[Path], endpoint: str, metrics: int, jobs: int) -> tuple[str, list]:
    bucket = f"bench-{tool}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    results = []
    for step, (tree, touch) in zip(STEPS, trees):
        for path in touch:
            os.utime(path)
        before = _server_requests(metrics, bucket)
        started = time.monotonic()
        own = RUNNERS[tool](tree, bucket, endpoint, jobs)
        elapsed = time.monotonic() - started
        requests = _server_requests(metrics, bucket) - before
        results.append((step, elapsed, requests, own, _differences(tree, bucket, endpoint)))
        print(f"{tool:8} {step:9} {elapsed:8.1f} s", file=sys.stderr)
    return tool, results


def _bootgen(tree: Path, bucket: str, endpoint: str, jobs: int) -> int:
    return publish(tree, f"s3://{bucket}/site", endpoint_url=endpoint, jobs=jobs, progress=False).requests


def _aws(tree: Path, bucket: str, endpoint: str, jobs: int) -> None:
    config = Path(tempfile.mkdtemp()) / "config"
    config.write_text(f"[default]\ns3 =\n  max_concurrent_requests = {jobs}\n")
    _run(["aws", "s3", "sync", str(tree), f"s3://{bucket}/site", "--delete", "--only-show-errors",
          "--endpoint-url", endpoint], {"AWS_CONFIG_FILE": str(config)})


def _rclone(tree: Path, bucket: str, endpoint: str, jobs: int) -> None:
    _run(["rclone", "sync", str(tree), f":s3:{bucket}/site", "--checksum", "--transfers", str(jobs),
          "--checkers", str(jobs), "--s3-no-check-bucket", *rclone_s3_args(endpoint)], {})


RUNNERS = {"bootgen": _bootgen, "aws": _aws, "rclone": _rclone}


def _run(argv: list[str], extra_env: dict[str, str], cwd: Path | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1",
               **extra_env)
    subprocess.run(argv, check=True, env=env, timeout=3600, stdout=subprocess.DEVNULL, cwd=cwd)


def _differences(tree: Path, bucket: str, endpoint: str) -> int:
    """Files of the tree that are missing from the bucket or differ (listing ETag vs local MD5)."""
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="site/")
    etags = {o["Key"][5:]: o["ETag"].strip('"') for page in pages for o in page.get("Contents", [])}
    paths = [p for p in tree.rglob("*") if p.is_file()]
    return sum(etags.get(str(p.relative_to(tree))) != hashlib.md5(p.read_bytes()).hexdigest() for p in paths)


def _server_requests(port: int, bucket: str) -> int:
    return _server_counts(port, bucket)[0]


def _server_counts(port: int, bucket: str) -> tuple[int, int]:
    """(requests served, bytes received) for `bucket`, from the server's own counters."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return (sum(int(n) for b, n in _COUNTER.findall(text) if b == bucket),
            sum(int(float(n)) for b, n in _RECEIVED.findall(text) if b == bucket))


def _fleet_main(sizes: list[int]) -> None:
    from build_bench import print_table, remove_in_background, run_build

    work = Path(tempfile.mkdtemp(prefix="publish-fleet-"))
    rows = []
    try:
        sites = {}
        for nodes in sizes:
            sites[nodes] = work / f"site-{nodes}"
            make_fleet_site(sites[nodes], nodes)
            run_build(sites[nodes])
        rows = fleet_publish_rows(sites)
    finally:
        print(f"sites: build_bench's fleet and example site with `{FLEET_SITE.strip()}` and no `exports:`, "
              f"{', '.join(f'{n:,}' for n in sizes)} nodes")
        print_table(rows)
        remove_in_background(str(work))


FLEET_SITE = "boot_configs: [ipxe]\n"  # and no `exports:` (Pixiecore, Tinkerbell): about 4 files per node


def make_fleet_site(directory: Path, nodes: int) -> None:
    """build_bench's site and fleet, iPXE-only and without exports: the same site at every fleet size,
    with fewer files per node than the example's default, so a first publish of 100,000 nodes
    (some 420,000 objects instead of 1.06 million) fits in a benchmark run."""
    from build_bench import make_site

    make_site(directory, nodes)
    site_yaml = directory / "site" / "site.yaml"
    text = site_yaml.read_text()
    site_yaml.write_text(text.split("\nexports:", 1)[0].rstrip("\n") + "\n" + FLEET_SITE)


EDITED_AT = (0.1, 0.3, 0.5, 0.7, 0.9)  # the nodes edited one at a time, as fractions of the fleet
NOOP_RUNS = 5  # no-op publishes timed; the median is reported


def fleet_publish_rows(sites: dict[int, Path]) -> list:
    """The publish rows of the targets table for built sites of several fleet sizes (see --fleet).

    A one-node change is measured on several nodes, each edited, built and published in turn, at the
    same places in every fleet (EDITED_AT): which index shard a node's files fall in is chance (the
    shards' cuts depend on the paths), so one node's cost says little; the rows give the median and
    the range. The no-op publish is timed NOOP_RUNS times, median reported."""
    work = Path(tempfile.mkdtemp(prefix="publish-fleet-seaweed-"))
    metrics = free_port()
    server = start_seaweedfs(work, metrics_port=metrics)
    measured = {}
    try:
        for nodes, site in sorted(sites.items()):
            bucket = f"bench-fleet-{nodes}"
            s3_client(server.endpoint).create_bucket(Bucket=bucket)
            step = _FleetStep(site, bucket, server.endpoint, metrics)
            first = step.publish()
            print(f"published {nodes:,} nodes in {first.seconds:.0f} s", file=sys.stderr, flush=True)
            noops = [step.publish() for _ in range(NOOP_RUNS)]
            release = (site / "build").resolve().name  # named: publish skips the check of the inputs
            named = [step.publish("--release", release) for _ in range(NOOP_RUNS)]
            measured[nodes] = (first, noops, list(_one_node_changes(step, site, nodes)), named)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return _fleet_rows(measured)


def _one_node_changes(step: "_FleetStep", site: Path, nodes: int):
    """Edit, build and publish each node of EDITED_AT in turn."""
    from build_bench import node_text, run_build

    for round_, fraction in enumerate(EDITED_AT):
        node = int(nodes * fraction)
        (site / "nodes" / f"n{node:06d}.yaml").write_text(node_text(node, f"kernel_args: [bench={900 + round_}]\n"))
        run_build(site)
        yield step.publish()


def _fleet_rows(measured: dict) -> list:
    from build_bench import Row

    rows = []
    for nodes, (first, noops, changes, _named) in measured.items():
        rows.append(Row(f"publish, first, {nodes:,} nodes", f"{first.seconds:.1f} s, {first.requests:,} requests, "
                        f"{first.received / 1e6:,.1f} MB"))
        received = sorted(c.received for c in changes)
        requests = sorted(c.requests for c in changes)
        rows.append(Row(f"publish of a one-node change, {nodes:,} nodes, median of {len(changes)} nodes",
                        f"{_median([c.seconds for c in changes]):.2f} s, {_median(requests):,} requests "
                        f"({requests[0]}-{requests[-1]}), {_median(received):,} bytes "
                        f"({received[0]:,}-{received[-1]:,})"))
    small, large = min(measured), max(measured)
    for what in ("received", "requests"):
        a, b = (_median([getattr(c, what) for c in measured[n][2]]) for n in (small, large))
        name = "bytes uploaded" if what == "received" else "requests made"
        if small == large:
            rows.append(Row(f"publish of a one-node change, {name}", f"{b:,}", "", "", "needs two fleet sizes"))
            continue
        ratio = b / a if a else float("inf")
        rows.append(Row(f"publish of a one-node change, {name} (median), {large:,} vs {small:,} nodes", f"{b:,}",
                        f"at {small:,} nodes {a:,}", f"{ratio:.2f}x", "0.9x to 1.1x", 0.9 <= ratio <= 1.1))
    noops = measured[large][1]
    most = max(n.requests for n in noops)
    rows.append(Row(f"no-op publish, requests, {large:,} nodes (most of {len(noops)})", f"{most}", "", "", "<= 3",
                    most <= 3))
    seconds = _median([n.seconds for n in noops])
    rows.append(Row(f"no-op publish, wall time of the command, {large:,} nodes (median of {len(noops)})",
                    f"{seconds * 1000:.0f} ms", f"range {min(n.seconds for n in noops) * 1000:.0f}-"
                    f"{max(n.seconds for n in noops) * 1000:.0f} ms, CPU {_median([n.cpu for n in noops]) * 1000:.0f} ms",
                    "", "< 300 ms", seconds < 0.3))
    named = measured[large][3]
    rows.append(Row(f"no-op publish of the tree named with --release (no check of the inputs), {large:,} nodes "
                    f"(median of {len(named)})", f"{_median([n.seconds for n in named]) * 1000:.0f} ms, "
                    f"{max(n.requests for n in named)} requests", f"CPU {_median([n.cpu for n in named]) * 1000:.0f} ms"))
    return rows


def _median(values: list):
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]  # the lower median: a value that was measured


@dataclass
class _Counted:
    seconds: float
    requests: int
    received: int
    cpu: float = 0.0


@dataclass
class _FleetStep:
    site: Path
    bucket: str
    endpoint: str
    metrics: int

    def publish(self, *options: str) -> _Counted:
        """`bootgen publish` of the site's live tree, as a fresh process, counted by the server."""
        requests, received = _server_counts(self.metrics, self.bucket)
        cpu = _children_cpu()
        started = time.perf_counter()
        _run([sys.executable, "-m", "bootgen", "publish", f"s3://{self.bucket}/site", "--endpoint-url",
              self.endpoint, *options], {"PYTHONPATH": str(ROOT)}, cwd=self.site)
        seconds = time.perf_counter() - started
        after_requests, after_received = _server_counts(self.metrics, self.bucket)
        return _Counted(seconds, after_requests - requests, after_received - received, _children_cpu() - cpu)


def _children_cpu() -> float:
    """CPU seconds (user and system) of the finished child processes: the load of other processes on
    the machine stretches a command's wall time much more than its CPU time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_REF_BYTES = 150  # one shard reference in a root or page: {"count": ..., "first": "<path>", "id": "<64 hex>"}


def print_index_bytes(tree: Path) -> None:
    """What the index part of a one-node publish weighs, taking each entry point of the tree in turn as
    the changed file: the shard it falls in (JSON and .sha256), the page naming that shard and the root,
    as built (index format 3); then computed for pages of twice as many shard references."""
    from bootgen.publish.manifest import load_tree

    manifest = load_tree(tree)
    root = manifest.root
    shard_sizes = [_file_size(tree / f"index/{ref.id}.json") + _file_size(tree / f"index/{ref.id}.sha256")
                   for ref in root.shards]
    page_sizes = [_file_size(tree / f"index/{page.id}.page.json") for page in root.pages]
    print(f"{tree}: {len(manifest.files):,} files, {len(shard_sizes)} shards in {len(page_sizes)} pages, "
          f"root {len(manifest.raw):,} bytes")
    page_of_shard = [size for page, size in zip(root.pages, page_sizes) for _ in range(page.shards)]
    per_file = [shard + page for ref, shard, page in zip(root.shards, shard_sizes, page_of_shard)
                for _ in range(ref.count)]
    _print_layout("as built", per_file, manifest, len(manifest.raw))
    lines = [_entry_bytes(entry) for entry in manifest.files]
    for floor, chance, fanout in ((448, 64, 64),):
        chunks = _cut(lines, floor, chance)
        pages = _cut([(chunk[0][0], 0) for chunk in chunks], fanout // 2, fanout // 2)  # by first path
        page_of_shard = [len(page) * _REF_BYTES for page in pages for _ in page]
        per_file = [sum(b for _, b in chunk) + page_of_shard[i] for i, chunk in enumerate(chunks) for _ in chunk]
        _print_layout(f"computed: shards cut after {floor} files at 1 in {chance}, pages of ~{fanout} shards",
                      per_file, manifest, 200 + (_REF_BYTES + 12) * len(pages))


def _print_layout(name: str, per_file: list[int], manifest, root: int) -> None:
    entry_points = sorted(size for size, entry in zip(per_file, manifest.files) if not entry.immutable)
    at = lambda q: entry_points[int(q * (len(entry_points) - 1))]  # noqa: E731
    print(f"  {name}: shard (and page) of an entry point: median {at(0.5):,} bytes (10th percentile "
          f"{at(0.1):,}, 90th {at(0.9):,}); root {root:,}; a one-node publish's index: about {at(0.5) + root:,}")


def _entry_bytes(entry) -> tuple[bytes, int]:
    from bootgen.plan import listing_lines

    json_line, sum_line = listing_lines(entry.path, entry.sha256, entry.size, entry.immutable, entry.node,
                                        entry.target)
    return entry.path.encode(), len(json_line) + 6 + len(sum_line)  # 6: the separator between entries


def _cut(items: list, floor: int, chance: int, key=lambda item: zlib.crc32(item[0])) -> list[list]:
    """Content-defined runs, as bootgen/plan.py cuts shards: after an item whose hash says so, once a run
    holds `floor` items (or at 8 times the mean)."""
    runs, run = [], []
    for item in items:
        run.append(item)
        if len(run) >= 8 * (floor + chance) or (len(run) >= floor and key(item) % chance == 0):
            runs.append(run)
            run = []
    return runs + [run] if run else runs


def _file_size(path: Path) -> int:
    return path.stat().st_size


def _print_table(nodes: int, rows: list[tuple[str, list]]) -> None:
    print(f"\npublish of a {nodes}-node tree ({nodes * 3 + 6} files) to SeaweedFS on loopback\n")
    print(f"{'tool':10}{'step':11}{'seconds':>9}{'requests':>10}{'(own count)':>13}{'files differing':>17}")
    for tool, results in rows:
        for step, elapsed, requests, own, differing in results:
            own_text = "" if own is None else str(own)
            print(f"{tool:10}{step:11}{elapsed:9.1f}{requests:10d}{own_text:>13}{differing:>17}")


if __name__ == "__main__":
    os.environ.pop("AWS_CA_BUNDLE", None)
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1")
    main()
