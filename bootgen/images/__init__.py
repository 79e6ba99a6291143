"""OS images: fetch, verify (OpenPGP signatures, checksum pins), content-address,
extract from ISOs, lay out installer mirrors and ship boot loaders.

The build calls, in order:
    config = parse_image_config(site_data, site_doc, site_dir)       # InputError
    sets = resolve_images(config, site_dir=..., cache_dir=..., needed={...})  # ImageError
    loaders = boot_loader_files()                                     # ImageError
and copies every `PlacedFile` (from `sets[...].files` and `loaders`) into the tree,
hashing it on the way against its verified sha256 (bootgen.write.copy_verified).
"""
from .fetch import FetchPolicy
from .loaders import boot_loader_files
from .model import ImageConfig, ImageSet, ImageSource, KeySpec, parse_image_config
from .placed import ImageRef, PlacedFile, ResolvedImageSet
from .resolve import declared_images, resolve_images

__all__ = [
    "FetchPolicy", "ImageConfig", "ImageRef", "ImageSet", "ImageSource", "KeySpec", "PlacedFile",
    "ResolvedImageSet", "boot_loader_files", "declared_images", "parse_image_config", "resolve_images",
]
