"""Declarations and checks that need no torch: errors, the one schema of every key, key types,
TOML loading, merging and export, opening input files (regular files of a bounded size; the
shape of IC files), feature widths, and the memory budget of a config."""
