"""The template repository's own tests: its README, copier, make and the benchmarks. Not copied into a project."""
