"""Sizes as every page shows them: "12 bytes", "340 KB", "1.2 MB", "15 GB".

One helper for the drive, its quota line and the questions, and the mail pages'
attachments (the ``size`` template filter); static/drive.js writes the same for
files still uploading.  Units step by 1024 and are written KB, MB, GB as the
drives people know (Google Drive, Windows) write them; one decimal below 10 of a
unit, none above (docs/architecture.md, "Pages").
"""

from __future__ import annotations

UNITS = ("KB", "MB", "GB", "TB", "PB")


def human_size(count: int | float) -> str:
    """``count`` bytes as a short text in one unit style."""
    count = max(0, int(count))
    if count < 1024:
        return "1 byte" if count == 1 else f"{count} bytes"
    value = float(count)
    for unit in UNITS:
        value /= 1024
        if value < 1024 or unit == UNITS[-1]:
            break
    # Halves round up, as static/drive.js's Math.round does; 9.96 gives "10", like any
    # value from 10 up.
    tenths = f"{value:.1f}"
    text = tenths if float(tenths) < 10 else str(int(value + 0.5))
    if text.endswith(".0"):
        text = text[:-2]
    if text == "1024" and unit != UNITS[-1]:  # 1023.6 KB rounds up to the next unit
        return f"1 {UNITS[UNITS.index(unit) + 1]}"
    return f"{text} {unit}"
