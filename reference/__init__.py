"""The stored goldens and their generator, `reference.generate` (also run as a script by tox)."""
