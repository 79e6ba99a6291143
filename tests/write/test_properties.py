"""Properties: any sequence of edits, built incrementally, gives the bytes of a clean build."""
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootgen.build import Paths, build
from bootgen.errors import InputError
import bootgen.write as write_module

ROOT = Path(__file__).resolve().parents[2]


def _edit(nodes: Path, site: Path, kind: str, index: int) -> None:
    names = sorted(p.name for p in nodes.glob("*.yaml"))
    target = nodes / names[index % len(names)] if names else None
    if kind == "add":
        (nodes / f"extra-{index}.yaml").write_text(
            f"interfaces:\n  - mac: 02:00:00:00:01:{index % 256:02x}\n    address: 10.9.0.{index % 250 + 1}/24\n")
    elif kind == "delete" and target is not None and len(names) > 1:
        target.unlink()
    elif kind == "vars" and target is not None:
        data = yaml.safe_load(target.read_text())
        data["kernel_args"] = [f"edit={index}"]
        target.write_text(yaml.safe_dump(data))
    elif kind == "state" and target is not None:
        data = yaml.safe_load(target.read_text())
        data["boot"] = "live" if data.get("boot") == "local" else "local"
        target.write_text(yaml.safe_dump(data))
    elif kind == "profile":
        profile = site / "profiles" / "flatcar-install.yaml"
        profile.write_text(profile.read_text() + f"  - edit{index}=1\n")
    elif kind == "toggle" and target is not None:  # twice: back to a tree built before (maybe still kept)
        text, line = target.read_text(), "# toggled\nkernel_args: [toggled]\n"
        if text.endswith(line):
            target.write_text(text[:-len(line)])
        elif "kernel_args" not in text:
            target.write_text(text + line)


def _files(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()}


def _broken_build(paths: Paths, nodes: Path) -> None:
    """A build that fails (a node with a bad MAC) must change nothing the next builds rely on."""
    broken = nodes / "zz-broken.yaml"
    broken.write_text("interfaces:\n  - mac: not-a-mac\n")
    try:
        build(paths, fetch=False)
        raise AssertionError("a broken node must fail the build")
    except InputError:
        pass
    broken.unlink()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["add", "delete", "vars", "state", "profile", "toggle", "toggle", "broken"]),
                          st.integers(min_value=0, max_value=40)), min_size=1, max_size=8),
       st.booleans())
def test_incremental_equals_clean(tmp_path_factory, edits, background_copies):
    """Eight edits reach the builds that recycle the oldest kept tree several times (and, with
    `background_copies`, the copies made after builds that leave no old tree to recycle)."""
    with pytest.MonkeyPatch.context() as patch:
        if background_copies:
            patch.setattr(write_module, "SPARE_MIN_FILES", 0)  # the example site is far below the real threshold
        _check_edits(tmp_path_factory, edits)


def _check_edits(tmp_path_factory, edits) -> None:
    work = tmp_path_factory.mktemp("incremental")
    shutil.copytree(ROOT / "site", work / "site")
    shutil.copytree(ROOT / "nodes", work / "nodes")
    incremental = Paths(work / "site", work / "nodes", work / "build")
    build(incremental, fetch=False)
    for kind, index in edits:
        if kind == "broken":
            _broken_build(incremental, work / "nodes")
            continue
        _edit(work / "nodes", work / "site", kind, index)
        build(incremental, fetch=False)
    clean_dir = tmp_path_factory.mktemp("clean")
    clean = Paths(work / "site", work / "nodes", clean_dir / "build")
    build(clean, fetch=False)
    assert _files(incremental.out) == _files(clean.out)
    write_module.wait_for_spare(incremental.state / "builds", timeout=30)  # no copy outlives the test
