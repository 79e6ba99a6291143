"""bootgen: a static site generator for network-boot artifacts.

Data flows load → validate → model → render → write → publish:
`load` reads and validates site/ and nodes/ into the typed `model`,
`render` turns it into a `plan` of artifacts, `write` switches the output tree
atomically, and `publish` puts the tree on S3 or a docroot.
"""

__version__ = "0.1.0"
