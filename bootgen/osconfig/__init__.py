"""OS configuration formats bootgen renders (Ignition from Butane-shaped YAML)."""
