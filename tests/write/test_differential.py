"""Differential: after every edit of any input, incremental builds give the bytes of a clean build.

One sequence of edits (tests/write/edits.py: nodes, profiles, site.yaml,
template overrides, `.bu` files, a `contents.local` file, image declarations
and mirrored site files, the signing key, and broken inputs with their fixes)
drives two incremental builders side by side, each in its own copy of the
inputs:

- a fresh `bootgen build --offline` process after every edit;
- one `bootgen watch --offline` process for the whole sequence, then, after it
  is stopped, one more plain `bootgen build`.

After every edit the inputs are also built clean (a fresh directory and
process). Where the clean build succeeds, both live trees must equal it byte
for byte (manifest.json and SHA256SUMS included, and the tree's name); where
it fails, `bootgen build` must exit 1, watch must report the failure, and both
live trees must be exactly what they were before.

BOOTGEN_DIFF_EXAMPLES (default 8) and BOOTGEN_DIFF_STEPS (default 6) set the
number of sequences and their longest length; BOOTGEN_DIFF_SKIP leaves kinds of
edit out (comma-separated names from edits.KINDS and edits.BREAKS, e.g.
`image_file,break:key_other`); BOOTGEN_DIFF_VERBOSE=1 (with
pytest -s) prints every sequence as it runs. A failure is reported with the
shortest failing sequence found within BOOTGEN_DIFF_SHRINK_SECONDS (default
90) by dropping edits from the failing one. Examples are derandomized and
no example database is kept, so every run tries the same sequences.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the edits helper module beside this file
from edits import (  # noqa: E402
    BREAKS, FIX, KINDS, CleanBuilds, Edit, Tree, WatchProcess, apply_edit, broken_files, first_difference, fix_all,
    live_tree, make_baseline, make_key_material, outcome, run_build, write)

EXAMPLES = int(os.environ.get("BOOTGEN_DIFF_EXAMPLES", "8"))
MAX_STEPS = int(os.environ.get("BOOTGEN_DIFF_STEPS", "6"))
SKIP = set(filter(None, os.environ.get("BOOTGEN_DIFF_SKIP", "").split(",")))  # kinds of edit left out
SHRINK_SECONDS = float(os.environ.get("BOOTGEN_DIFF_SHRINK_SECONDS", "90"))
VERBOSE = bool(os.environ.get("BOOTGEN_DIFF_VERBOSE"))  # print every sequence and outcome (with -s)

FRESH = "bootgen build"
WATCH = "bootgen watch"
AFTER_WATCH = "bootgen build after watch stopped"


@pytest.fixture(scope="session")
def key_material():
    home = Path(tempfile.mkdtemp(prefix="bgd-"))  # short: gpg-agent's socket path is length-limited
    try:
        yield make_key_material(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def baseline(tmp_path_factory, key_material) -> Path:
    root = tmp_path_factory.mktemp("baseline")
    make_baseline(root, key_material)
    return root


@pytest.fixture(scope="session")
def clean_builds(tmp_path_factory) -> CleanBuilds:
    return CleanBuilds(tmp_path_factory.mktemp("clean"))


class Mismatch(AssertionError):
    """An incremental build that is not what a clean build makes; `category` says which check."""

    def __init__(self, message: str, category: str, edits_applied: int):
        super().__init__(message)
        self.category, self.edits_applied = category, edits_applied


class Sequence:
    """Two copies of the inputs, one edited and built by fresh processes, the other under watch."""

    def __init__(self, baseline: Path, keys, clean_builds: CleanBuilds, scratch: Path):
        self.keys, self.clean_builds = keys, clean_builds
        self.work = Path(tempfile.mkdtemp(prefix="diff-", dir=scratch))
        self.fresh, self.watched = self.work / "fresh", self.work / "watched"
        for root in (self.fresh, self.watched):
            shutil.copytree(baseline / "site", root / "site")
            shutil.copytree(baseline / "nodes", root / "nodes")
        self.steps: list[str] = []  # what each edit did, in words
        self.edits_applied = 0  # of the sequence's own edits (not the fix at its end)
        self.before = {FRESH: Tree(None, {}), WATCH: Tree(None, {})}

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def run(self, edits: list[Edit]) -> None:
        if VERBOSE:
            print(f"sequence of {len(edits)} edits:")
        try:
            self._run(edits)
        finally:
            self.close()

    def _run(self, edits: list[Edit]) -> None:
        expected = self.clean_builds.of(self.fresh)
        assert expected.ok, f"the starting site must build:\n{expected.output}"
        with WatchProcess(self.watched) as watch:
            self.check_fresh(expected)
            first = watch.started()
            self.check_watch(expected, outcome(first) == _want(expected), [first])
            for edit in edits:
                self.edits_applied += 1
                self.step(watch, lambda root: apply_edit(root, edit, self.keys))
            if broken_files(self.fresh):  # end with every broken file fixed
                self.step(watch, lambda root: _ended(fix_all(root, self.keys)))
            expected = self.clean_builds.of(self.fresh)
            stopping = watch.stop()
        done = run_build(self.watched)
        self.check_build(AFTER_WATCH, self.watched, expected, done, before=self.before[WATCH],
                         context=["watch printed when it stopped:", *stopping])

    def step(self, watch: WatchProcess, edit) -> None:
        mark = len(watch.lines)
        applied = edit(self.watched)  # watch starts on it while the others run
        assert edit(self.fresh) == applied
        self.steps.append(applied.description)
        expected = self.clean_builds.of(self.fresh)
        if VERBOSE:
            print(f"  {len(self.steps)}. {applied.description} -> clean build {'ok' if expected.ok else 'fails'}")
        self.check_fresh(expected)
        if applied.touched:
            matched, lines = watch.settle(mark, _want(expected), files=applied.touched)
        else:  # nothing was written: there is nothing for watch to report
            matched, lines = True, watch.lines[mark:]
        self.check_watch(expected, matched, lines)

    def check_fresh(self, expected) -> None:
        done = run_build(self.fresh)
        self.check_build(FRESH, self.fresh, expected, done, before=self.before[FRESH])
        self.before[FRESH] = live_tree(self.fresh)

    def check_build(self, who: str, root: Path, expected, done, *, before: Tree, context=()) -> None:
        output = [*context, f"`bootgen build` exited {done.returncode}:", *(done.stdout + done.stderr).splitlines()]
        tree = live_tree(root)
        if expected.ok and done.returncode != 0:
            self.fail(who, "fails where a clean build succeeds", "it failed; a clean build of the same inputs succeeds",
                      output)
        elif expected.ok:
            problem = _tree_difference(expected.tree, tree, who)
            if problem:
                self.fail(who, "tree differs", problem, output)
        elif done.returncode != 1:
            self.fail(who, "does not fail where a clean build fails", f"it exited {done.returncode}; a clean build "
                      f"of the same inputs fails:\n    {_indent(expected.output)}", output)
        else:
            problem = _unchanged(before, tree, who)
            if problem:
                self.fail(who, "live tree changed by a failed build", problem, output)

    def check_watch(self, expected, matched: bool, lines: list[str]) -> None:
        who = WATCH
        output = ["watch printed after the edit:", *lines]
        tree = live_tree(self.watched)
        if expected.ok:
            problem = _tree_difference(expected.tree, tree, who)
            if problem:
                self.fail(who, "tree differs", problem, output)
            if not matched:
                self.fail(who, "no report", f"the tree is right, but watch did not report build "
                          f"{expected.tree.build_id[:12]}", output)
        else:
            problem = _unchanged(self.before[WATCH], tree, who)
            if problem:
                self.fail(who, "live tree changed by a failed build", problem, output)
            if not matched:
                self.fail(who, "does not fail where a clean build fails", "a clean build of these inputs fails, "
                          f"but watch did not report a failed build; the clean build says:\n"
                          f"    {_indent(expected.output)}", output)
        self.before[WATCH] = tree

    def fail(self, who: str, category: str, problem: str, output: list[str]) -> None:
        lines = [f"{who} differs from a clean build of the same inputs.",
                 "Edits, each followed by a build, from the example site plus a lab image set (site files, "
                 "signed with site/keys/lab.asc), profile lab-live with butane/lab.bu, and node lab-1:"]
        lines += [f"  {i}. {step}" for i, step in enumerate(self.steps, 1)] or ["  (none: the first build)"]
        lines.append(f"After edit {len(self.steps)}, {who}: {problem}")
        shown = output if len(output) <= 25 else [*output[:1], "  ...", *output[-24:]]
        lines += ["  " + line for line in shown]
        raise Mismatch("\n".join(lines), f"{who}: {category}", self.edits_applied)


def minimize(edits: list[Edit], failure: Mismatch, attempt, budget: float) -> tuple[list[Edit], Mismatch, int]:
    """A shorter sequence failing the same check: the failing edit alone, else the sequence up to it
    with every edit dropped that the failure does not need (and saves by rename made plain writes).

    `attempt(edits)` runs a sequence and returns its Mismatch or None. Returns (edits, failure, runs)."""
    deadline = time.monotonic() + budget
    runs = 0

    def same(candidate: list[Edit]) -> Mismatch | None:
        nonlocal runs
        runs += 1
        found = attempt(candidate)
        return found if found is not None and found.category == failure.category else None

    best = edits[:max(failure.edits_applied, 1)]
    if len(best) > 1:
        found = same(best[-1:])
        if found is not None:
            best, failure = best[-1:], found
    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        for i in range(len(best)):
            if time.monotonic() >= deadline:
                break
            candidates = [best[:i] + best[i + 1:]] if len(best) > 1 else []
            if best[i].rename_save:
                candidates.append(best[:i] + [best[i]._replace(rename_save=False)] + best[i + 1:])
            for candidate in candidates:
                found = same(candidate)
                if found is not None:
                    best, failure, changed = candidate[:max(found.edits_applied, 1)], found, True
                    break
            if changed:
                break
    return best, failure, runs


def _ended(applied):
    return applied._replace(description=applied.description + " (end of sequence)")


def _want(expected) -> str:
    return f"ok {expected.tree.build_id[:12]}" if expected.ok else "failed"


def _indent(text: str) -> str:
    return "\n    ".join(text.splitlines()[:12])


def _tree_difference(clean: Tree, tree: Tree, who: str) -> str | None:
    if tree.build_id is None:
        return "there is no live tree"
    difference = first_difference(clean.files, tree.files, who)
    if difference:
        return f"the live tree differs from the clean one; first difference: {difference}"
    if tree.build_id != clean.build_id:
        return f"same files, but the live tree is named {tree.build_id[:12]}, not {clean.build_id[:12]}"
    return None


def _unchanged(before: Tree, tree: Tree, who: str) -> str | None:
    """A failed build must leave the live tree as it was."""
    if tree.build_id != before.build_id:
        return f"the build failed as it should, but the live tree moved from {before.build_id} to {tree.build_id}"
    difference = first_difference(before.files, tree.files, who)
    if difference:
        return ("the build failed as it should, but the live tree's bytes changed (compared with the tree "
                f"before the failing edit, shown as 'clean'): {difference}")
    return None


@st.composite
def edit_sequences(draw) -> list[Edit]:
    """Edits of every kind, evenly spread (Hypothesis's own list generation favours repeating one edit):
    about three in four change a valid input, one in eight breaks one; while something is broken,
    a fix comes with one chance in three."""
    rnd = draw(st.randoms(use_true_random=True))  # evenly spread; minimize() does the shrinking
    kinds, breaks = [k for k in KINDS if k not in SKIP], [k for k in BREAKS if k not in SKIP]
    edits, broken = [], False
    for _ in range(rnd.randint(max(1, MAX_STEPS // 2), MAX_STEPS)):
        roll = rnd.random()
        if broken and roll < 1 / 3:
            kind, broken = FIX, False
        elif breaks and roll > 7 / 8:
            kind, broken = rnd.choice(breaks), True
        else:
            kind = rnd.choice(kinds)
        edits.append(Edit(kind, rnd.randrange(8), rnd.randrange(10), rnd.random() < 0.3))
    return edits


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=False,
          phases=[Phase.explicit, Phase.generate],  # no shrinking: minimize() is cheaper (see there)
          suppress_health_check=list(HealthCheck))
@given(edits=edit_sequences())
def test_incremental_builds_equal_clean_builds(baseline, key_material, clean_builds, tmp_path_factory, edits):
    def attempt(sequence_edits: list[Edit]) -> Mismatch | None:
        try:
            Sequence(baseline, key_material, clean_builds, tmp_path_factory.getbasetemp()).run(sequence_edits)
        except Mismatch as failure:
            return failure
        return None

    failure = attempt(edits)
    if failure is None:
        return
    # Every sequence starts a watch process, so Hypothesis's shrinker (hundreds of runs) is too slow here.
    smallest, smallest_failure, runs = minimize(edits, failure, attempt, SHRINK_SECONDS)
    raise Mismatch(f"{smallest_failure}\n\n(the shortest failing sequence found in {runs} more runs, from the "
                   f"{len(edits)} edits generated; as Edit values: {smallest!r})",
                   smallest_failure.category, smallest_failure.edits_applied)


# --- deterministic regressions: one edit each, under a real `bootgen watch` -----------------------------

@pytest.fixture
def watched(tmp_path):
    make_baseline(tmp_path, None)
    with WatchProcess(tmp_path) as watch:
        watch.started()
        yield tmp_path, watch


def _settled(root: Path, watch: WatchProcess, mark: int, clean_builds: CleanBuilds):
    expected = clean_builds.of(root)
    matched, lines = watch.settle(mark, _want(expected))
    return expected, matched, lines


def _node_files(tree: Tree, node: str) -> bytes:
    return b"".join(data for path, data in tree.files.items() if path.startswith(f"configs/{node}/"))


def _check(ok: bool, what: str, lines: list[str], problem: str | None = None) -> None:
    if not ok:
        pytest.fail("\n".join([what, "watch printed after the edit:", *("  " + line for line in lines)]
                              + ([problem] if problem else [])), pytrace=False)


def test_watch_sees_a_profile_install_disk_edit(watched, clean_builds):
    """install.disk: /dev/sda -> /dev/vdb in site/profiles/flatcar-install.yaml, under a running watch."""
    root, watch = watched
    mark = len(watch.lines)
    profile = root / "site" / "profiles" / "flatcar-install.yaml"
    write(profile, profile.read_text().replace("disk: /dev/sda", "disk: /dev/vdb"))
    expected, matched, lines = _settled(root, watch, mark, clean_builds)
    assert b"/dev/vdb" in _node_files(expected.tree, "node-1")
    problem = _tree_difference(expected.tree, live_tree(root), WATCH)
    _check(problem is None, "the live tree is not what a clean build makes of the edited site", lines, problem)
    _check(matched, f"watch did not report build {expected.tree.build_id[:12]}", lines)


def test_watch_sees_a_new_profile(watched, clean_builds):
    """A new site/profiles/flatcar-lab.yaml, and nodes/node-2.yaml switched to it, under a running watch."""
    root, watch = watched
    mark = len(watch.lines)
    source = (root / "site" / "profiles" / "flatcar-install.yaml").read_text()
    write(root / "site" / "profiles" / "flatcar-lab.yaml",
          source.replace("flatcar.first_boot=1", "flatcar.first_boot=1\n  - lab=1"))
    node = root / "nodes" / "node-2.yaml"
    write(node, node.read_text() + "profile: flatcar-lab\n")
    expected, matched, lines = _settled(root, watch, mark, clean_builds)
    assert expected.ok and b"lab=1" in expected.tree.files["pxelinux.cfg/0A000047"], expected.output
    problem = _tree_difference(expected.tree, live_tree(root), WATCH)
    _check(problem is None, "the live tree is not what a clean build makes of the edited site", lines, problem)
    _check(matched, f"watch did not report build {expected.tree.build_id[:12]}", lines)


def test_watch_reports_a_broken_profile_and_keeps_the_tree(watched, clean_builds):
    """An unknown field in site/profiles/flatcar-install.yaml under a running watch, then the fix."""
    root, watch = watched
    before = live_tree(root)
    mark = len(watch.lines)
    profile = root / "site" / "profiles" / "flatcar-install.yaml"
    good = profile.read_text()
    write(profile, good + "instal:\n  disk: /dev/sdb\n")
    expected, matched, lines = _settled(root, watch, mark, clean_builds)
    assert not expected.ok and "unknown field 'instal'" in expected.output, expected.output
    _check(matched and any("unknown field 'instal'" in line for line in lines),
           "watch did not report the unknown field 'instal' and a failed build", lines)
    problem = _unchanged(before, live_tree(root), WATCH)
    _check(problem is None, "the live tree changed", lines, problem)
    mark = len(watch.lines)
    write(profile, good)
    expected, matched, lines = _settled(root, watch, mark, clean_builds)
    assert expected.tree.build_id == before.build_id
    problem = _tree_difference(expected.tree, live_tree(root), WATCH)
    _check(problem is None and matched, "after the fix, watch is not back on the first tree", lines, problem)


def test_a_build_after_watch_stopped_sees_what_watch_saw(watched, clean_builds):
    """install.disk edited in a profile under watch; watch stopped; then a plain `bootgen build`."""
    root, watch = watched
    mark = len(watch.lines)
    profile = root / "site" / "profiles" / "flatcar-install.yaml"
    write(profile, profile.read_text().replace("disk: /dev/sda", "disk: /dev/vdc"))
    expected, _, _ = _settled(root, watch, mark, clean_builds)
    watch.stop()
    done = run_build(root)
    output = (done.stdout + done.stderr).splitlines()
    problem = _tree_difference(expected.tree, live_tree(root), AFTER_WATCH)
    if done.returncode != 0 or problem:
        pytest.fail("\n".join(["`bootgen build` after watch stopped is not what a clean build makes:",
                               f"it exited {done.returncode} and printed:", *("  " + line for line in output),
                               problem or ""]), pytrace=False)


# --- deterministic regressions for what the differential test found, with fresh `bootgen build`s ---------

@pytest.fixture
def lab_site(tmp_path, key_material):
    """The example plus a mirrored image set from site files, its kernel signed with site/keys/lab.asc."""
    make_baseline(tmp_path, key_material)
    done = run_build(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp_path


def test_a_signing_key_replaced_by_another_fails_the_build_as_a_clean_build_does(lab_site, key_material,
                                                                                    clean_builds):
    """site/keys/lab.asc replaced by a key that is not the pinned one, after a build that verified the
    kernel with it: a clean build fails, so the incremental one must too (and keep the tree)."""
    before = live_tree(lab_site)
    write(lab_site / "site" / "keys" / "lab.asc", key_material.other_key)
    expected = clean_builds.of(lab_site)
    assert not expected.ok and "key lab unusable" in expected.output, expected.output
    done = run_build(lab_site)
    if done.returncode != 1:
        pytest.fail(f"`bootgen build` exited {done.returncode} ({(done.stdout + done.stderr).strip()}); a clean build "
                    f"of the same inputs fails:\n{expected.output}", pytrace=False)
    assert _unchanged(before, live_tree(lab_site), FRESH) is None


def test_writing_a_mirrored_site_file_in_place_leaves_the_live_tree_alone(lab_site, clean_builds):
    """site/images/lab-vmlinuz (an image with `file:`) overwritten in place with bytes its signature does
    not match: the build fails, and the live tree must still hold the kernel it was built with."""
    before = live_tree(lab_site)
    write(lab_site / "site" / "images" / "lab-vmlinuz", b"unsigned kernel\n" * 50)
    done = run_build(lab_site)
    assert done.returncode == 1, done.stdout + done.stderr
    problem = _unchanged(before, live_tree(lab_site), FRESH)
    if problem:
        pytest.fail(f"after a failed build: {problem}", pytrace=False)
