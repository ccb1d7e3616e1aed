"""Faults and hostile input that must never pass silently (DESIGN.md, "Failure is never silent")."""
