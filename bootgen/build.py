"""The build: load → validate → model → render → write, as one function.

`check` runs the same pipeline without writing, so it finds exactly the
problems a build would. Nothing touches the output until every input has been
validated, every image verified and every file rendered.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .images import boot_loader_files, resolve_images
from .load import load_inputs
from .model import Inputs
from .plan import Plan
from .render import render
from .write import WriteResult, write_tree


@dataclass(frozen=True)
class Paths:
    site: Path
    nodes: Path
    out: Path

    @property
    def state(self) -> Path:
        """Build history and the image cache live beside the output link."""
        return self.out.absolute().parent / ".bootgen"


@dataclass(frozen=True)
class BuildResult:
    write: WriteResult
    nodes: int
    files: int
    seconds: float

    def summary(self) -> str:
        if not self.write.changed:
            return f"{self.files} files for {self.nodes} nodes: unchanged (build {self.write.build_id[:12]})"
        return (f"{self.files} files for {self.nodes} nodes -> build {self.write.build_id[:12]} "
                f"({self.write.written} written, {self.write.linked} linked) in {self.seconds:.2f}s")


def plan_build(paths: Paths, *, fetch: bool = True, progress: bool | None = None) -> tuple[Inputs, Plan]:
    """Everything short of writing: the validated inputs and the full plan."""
    inputs = load_inputs(paths.site, paths.nodes)
    needed = {inputs.profiles[node.profile].images for node in inputs.nodes if node.boot != "local"}
    images = resolve_images(inputs.image_config, site_dir=paths.site, cache_dir=paths.state / "cache",
                            needed=needed, fetch=fetch, progress=progress)
    placed = [f for image_set in images.values() for f in image_set.files]
    placed.extend(boot_loader_files())
    return inputs, render(inputs, images, display_root=Path.cwd(), extra_files=placed)


def build(paths: Paths, *, fetch: bool = True, progress: bool | None = None) -> BuildResult:
    """Build the tree and switch `paths.out` to it atomically."""
    started = time.perf_counter()
    inputs, plan = plan_build(paths, fetch=fetch, progress=progress)
    result = write_tree(plan.artifacts, plan.manifest(), paths.out, paths.state)
    return BuildResult(result, len(inputs.nodes), len(plan.artifacts), time.perf_counter() - started)


def fetch_images(paths: Paths, *, progress: bool | None = None) -> tuple[int, int]:
    """Fetch and verify every mirrored image set the site declares; (mirrored, referenced) counts."""
    inputs = load_inputs(paths.site, paths.nodes)
    sets = inputs.image_config.images
    resolve_images(inputs.image_config, site_dir=paths.site, cache_dir=paths.state / "cache",
                   needed=set(sets), fetch=True, progress=progress)
    mirrored = sum(1 for image_set in sets.values() if image_set.mirror)
    return mirrored, len(sets) - mirrored
