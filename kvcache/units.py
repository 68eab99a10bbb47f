"""Byte units, defined once for the engine (and the bench scripts)."""

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
