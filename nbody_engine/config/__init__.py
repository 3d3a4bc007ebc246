"""Declarations and checks that need no torch: errors, the one schema of every key, key types,
TOML loading, merging and export, feature widths, and the memory budget of a config."""
