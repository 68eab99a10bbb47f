"""Byte units, defined once for the engine (and the bench scripts), and the block entries are stored in."""

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

# Entries take whole 4 KiB blocks in every tier (O_DIRECT needs the alignment); datasize sizes them the same.
ALIGN = 4 * KIB


def mib_bytes(mib: float) -> int:
    """A size given in MiB (--io-chunk-mib 0.25) in bytes."""
    return round(mib * MIB)


def align_up(nbytes: int) -> int:
    return (nbytes + ALIGN - 1) // ALIGN * ALIGN
