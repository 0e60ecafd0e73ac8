"""Times and sizes as a reader says them, for the consoles."""


def duration(seconds: float) -> str:
    """4.2 s, 3 min 12 s, 1 h 04 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def size(n_bytes: int) -> str:
    """812 bytes, 25.3 MB, 1.9 GB (decimal units, as downloads are counted)."""
    if n_bytes < 1000:
        return f"{n_bytes} bytes"
    for unit in ("kB", "MB", "GB"):
        n_bytes /= 1000
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.1f} {unit}"
    raise AssertionError("unreachable")
