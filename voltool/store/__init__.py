"""Snapshots at rest: both formats, the catalog, manifests, retention."""
