"""Hostile-input tests: malformed answers, transport abuse, secrets, read-only clients."""
