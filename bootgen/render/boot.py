"""Boot entries: what each node boots, spelled for each boot loader.

A `BootEntry` is loader-neutral (image references and kernel arguments);
`for_loader` turns it into the strings one loader needs: a TFTP path or an
HTTP URL for the kernel, `initrd=` names for iPXE under UEFI, and so on. The
limits of Debian's firmware builds (no HTTPS anywhere, pxelinux.0 has no HTTP)
are checked here so a config that cannot boot is an error, not a surprise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import quoting
from ..errors import Problem, RenderError
from ..model import Node, Profile, Site


@dataclass(frozen=True)
class BootEntry:
    node: Node
    profile: Profile
    local: bool  # boot the local disk instead of our kernel
    kernel: Any = None  # bootgen.images.ImageRef
    initrds: tuple = ()
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoaderEntry:
    """A boot entry as one loader's template needs it."""

    local: bool
    kernel: str = ""
    initrds: tuple[str, ...] = ()
    initrd_names: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    http: bool = False  # loader must fetch something over HTTP


LOCAL = LoaderEntry(local=True)


def image_url(site: Site, ref) -> str:
    """HTTP(S) URL of an image: upstream when referenced, our tree when mirrored."""
    return ref.url if ref.tree_path is None else site.url(ref.tree_path)


def for_loader(entry: BootEntry, loader: str, site: Site) -> LoaderEntry:
    """Spell `entry` for pxelinux, grub or ipxe; RenderError if that loader cannot fetch it."""
    if entry.local:
        return LOCAL
    refs = (entry.kernel,) + tuple(entry.initrds)
    spelled = tuple(_spell(ref, loader, site, entry) for ref in refs)
    result = LoaderEntry(
        local=False, kernel=spelled[0], initrds=spelled[1:],
        initrd_names=tuple(ref.name for ref in entry.initrds), args=entry.args,
        http=any(s.startswith("(http") for s in spelled))
    _check_words(result, loader, entry)
    return result


# How each loader's template writes a word (bootgen.quoting): a value it cannot
# write is refused here, where the problem can name the field it came from.
_WORD = {"pxelinux": quoting.pxelinux_arg, "grub": quoting.grub_word, "ipxe": quoting.ipxe_arg}


def _check_words(spelled: LoaderEntry, loader: str, entry: BootEntry) -> None:
    write = _WORD[loader]
    for arg in spelled.args:
        try:
            if quoting.has_space(arg):  # the kernel would read two arguments
                raise quoting.UnsafeValue(arg, f"a {loader} kernel command line", "it contains whitespace")
            write(arg)
        except quoting.UnsafeValue as exc:
            location, field = _arg_origin(entry, arg)
            raise RenderError(Problem(location, f"node '{entry.node.name}': kernel argument {exc}", field,
                                      "kernel arguments are words without control characters; "
                                      "iPXE cannot pass '${'")) from None
    images = [spelled.kernel, *spelled.initrds, *spelled.initrd_names]
    for value in images:
        try:
            write(value)
            if loader == "pxelinux" and value in spelled.initrds:
                quoting.pxelinux_initrd(value)
        except quoting.UnsafeValue as exc:
            raise RenderError(Problem(entry.profile.doc.locate(("images",)),
                                      f"profile '{entry.profile.name}' (node '{entry.node.name}'): image {exc}",
                                      "$.images", "rename the image file or change its URL in site.yaml")) from None


def _arg_origin(entry: BootEntry, arg: str):
    """Where a rendered kernel argument was most likely written: the string that holds it
    as written, else the templated word whose literal start it has (the most specific
    layer first), else any templated string, else the node file."""
    best, found = 0, None
    for written in getattr(entry.node, "kernel_args", ()):
        text = getattr(written, "text", "")
        score = 3 if arg in text.split() else 0
        for word in text.split() if not score else ():
            if "{" in word:
                prefix = word[:word.index("{")]
                score = max(score, 2 if prefix and arg.startswith(prefix) else 1)
        if score and score >= best and hasattr(written, "origin"):
            best, found = score, written.origin
    if found is not None:
        return found.location, found.field
    return entry.node.doc.locate(("kernel_args",)), "$.kernel_args"


def _spell(ref, loader: str, site: Site, entry: BootEntry) -> str:
    # Signed GRUB may not load http.mod under Secure Boot: it reads kernels over TFTP.
    tftp = site.kernel_transport == "tftp" or (loader == "grub" and entry.node.secure_boot)
    over_tftp = ref.tree_path is not None and tftp and loader != "ipxe"
    if over_tftp:
        return ref.tree_path if loader == "pxelinux" else "/" + ref.tree_path
    url = image_url(site, ref)
    if url.startswith("https://") and loader in ("pxelinux", "grub"):
        _refuse(entry, loader, f"{loader} cannot fetch HTTPS ({url})",
                "serve it over http://, mirror it (`mirror: true`), or drop this loader from the profile's `loaders`")
    if loader == "pxelinux" and site.kernel_transport == "tftp":
        _refuse(entry, loader, f"pxelinux.0 loads kernels over TFTP only, but {url} is not in the tree",
                "mirror the image set (`mirror: true`) or set `kernel_transport: http` to use lpxelinux.0")
    if loader == "grub":
        return _grub_http_path(url)
    return url


def _grub_http_path(url: str) -> str:
    """http://host:port/p/x -> (http,host:port)/p/x, GRUB's device syntax."""
    host, _, path = url.split("://", 1)[1].partition("/")
    return f"(http,{host})/{path}"


def _refuse(entry: BootEntry, loader: str, message: str, hint: str) -> None:
    where = entry.profile.doc.locate(("images",))
    raise RenderError(Problem(where, f"profile '{entry.profile.name}' (node '{entry.node.name}'): {message}",
                              "$.images", hint))


def node_image_set(ctx, spec):
    """The resolved image set `spec` boots: the profile's set for the node's architecture.
    An arm64 node of a profile without an arm64 set is an error at the node's `arch`: it must
    never be handed an x86 kernel. So is an arm64 UEFI node (no serial) whose set is a Raspberry
    Pi's: the site has no arm64 UEFI loader for such a set."""
    name = spec.profile.image_set(spec.arch)
    if name is None:
        raise RenderError(Problem(spec.doc.locate(("arch",)),
                                  f"node '{spec.name}' is {spec.arch}, but profile '{spec.profile.name}' has no "
                                  f"{spec.arch} image set", "$.arch",
                                  f"set `images_{spec.arch}` in site/profiles/{spec.profile.name}.yaml to an image "
                                  f"set with `arch: {spec.arch}`"))
    image_set = ctx.images[name]
    if spec.arch == "arm64" and not spec.serial and image_set.firmware:
        # site_arches places arm64 UEFI loaders for sets without firmware only
        raise RenderError(Problem(spec.doc.locate(("arch",)),
                                  f"node '{spec.name}' is an arm64 UEFI machine (it has no serial number), but "
                                  f"profile '{spec.profile.name}' boots arm64 machines from image set '{name}', a "
                                  "Raspberry Pi's (it has `firmware`)", "$.arch",
                                  "if it is a Pi, set its `serial`; else use a profile whose `images_arm64` is a "
                                  "set without `firmware`"))
    return image_set


# Debian ships boot loaders for arm64 UEFI only as GRUB (no arm64 iPXE or syslinux).
_ARM64_LOADERS = ("grub",)


def node_loaders(spec) -> tuple[str, ...]:
    """The profile's loaders this node's firmware can run (an arm64 machine only runs GRUB, a
    Raspberry Pi its own boot firmware from its serial directory)."""
    if spec.serial:
        if spec.arch != "arm64":
            raise RenderError(Problem(spec.doc.locate(("serial",)), f"node '{spec.name}' is a Raspberry Pi (it has a "
                                      "serial number) but not arch: arm64", "$.serial",
                                      "set `arch: arm64`: bootgen boots Pis with 64-bit (arm64) kernels"))
        return ("raspberrypi",)
    if spec.arch != "arm64":
        return spec.profile.loaders
    usable = tuple(loader for loader in spec.profile.loaders if loader in _ARM64_LOADERS)
    if not usable:
        raise RenderError(Problem(spec.doc.locate(("arch",)),
                                  f"node '{spec.name}' is arm64, which boots through GRUB only, but profile "
                                  f"'{spec.profile.name}' has no grub in its loaders", "$.arch",
                                  "add grub to the profile's `loaders`"))
    return usable


def written_loaders(spec, site) -> tuple[str, ...]:
    """The node's loaders whose configs the site writes (site.yaml `boot_configs`)."""
    return tuple(loader for loader in node_loaders(spec) if loader in site.boot_configs)
