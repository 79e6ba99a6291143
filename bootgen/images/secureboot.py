"""Build-time checks of a Secure Boot site's image sets.

Under Secure Boot, Debian's signed network GRUB may not load modules from the
network (no http.mod), so kernels and initrds reach it over TFTP from the tree:
every image set must be mirrored. GRUB asks shim to verify the kernel; an
unsigned kernel would stop the machine at `error: bad shim signature`, so it
is refused here instead.
"""
from __future__ import annotations

from ..errors import Problem
from .authenticode import signature_problem


def secure_boot_problems(image_config, images: dict) -> list[Problem]:
    """Problems of the resolved image sets `images` for a Secure Boot site, at their declarations."""
    problems = []
    for name, resolved in sorted(images.items()):
        declared = image_config.images[name]
        kernel = resolved.kernel
        where = declared.kernel.location if declared.kernel is not None else declared.location
        field = f"$.images.{name}.kernel" if declared.kernel is not None else f"$.images.{name}"
        if kernel is None:
            continue
        if kernel.tree_path is None:
            problems.append(Problem(where, f"image set '{name}': under secure_boot GRUB loads kernels over TFTP "
                                           "from the tree only, but this kernel is not mirrored", field,
                                    "set `mirror: true` on the image set"))
            continue
        placed = resolved.placed(kernel)
        if placed is None:  # taken as declared: `check` reads no image bytes, `fetch` and `build` do
            continue
        problem = signature_problem(placed.source)
        if problem:
            problems.append(Problem(where, f"image set '{name}': the kernel {kernel.tree_path.rsplit('/', 1)[-1]} "
                                           f"{problem}; Secure Boot firmware would refuse to start it", field,
                                    "use a kernel signed by a key shim trusts (Debian's linux-image packages, "
                                    "or the major distributions'), or turn secure_boot off"))
    return problems
