"""The engine and what runs in it: the API seam, images, helpers, locks, records."""
