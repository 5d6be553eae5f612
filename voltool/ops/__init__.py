"""The operations the CLI calls; they never import each other."""
