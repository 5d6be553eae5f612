"""Tar streams: reading, validating, writing, and the export file format."""
