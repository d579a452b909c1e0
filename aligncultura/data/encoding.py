"""Reading a file's bytes as text: an explicit encoding, or ``auto`` (a BOM, UTF-8, then the
legacy code page a detector finds)."""

from __future__ import annotations

import codecs
import re
import sys
from pathlib import Path

# the legacy single-byte code pages a detected encoding may be (UTF-16/32 need a BOM here)
_SINGLE_BYTE = ("cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1257", "latin_1",
                "iso8859_2", "iso8859_15", "mac_roman", "koi8_r")
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]+")
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def decode(raw: bytes, encoding: str, path: Path | None = None, key: str = "dataset",
            detect: bool = True) -> str:
    """The file's text. An explicit encoding is obeyed; ``auto`` reads a BOM (UTF-8, UTF-16
    LE/BE), then UTF-8, then (if `detect`: CSV; JSON is UTF-8 by definition), for a file with
    no UTF-8 at all, the single-byte code page charset-normalizer detects, if the whole file
    decodes with it (cp1252 is what Excel on Windows writes), with a one-line note.
    Undecodable bytes stay visible (surrogateescape) so that single rows can be quarantined."""
    if encoding != "auto":
        return raw.decode(encoding, errors="surrogateescape")
    for bom, name in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(name)
            except UnicodeDecodeError:
                break
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if not detect or _UTF8_MULTIBYTE.search(raw):  # UTF-8 with broken bytes: quarantine rows
        return raw.decode("utf-8", errors="surrogateescape")
    from charset_normalizer import from_bytes

    best = from_bytes(raw, cp_isolation=list(_SINGLE_BYTE)).best()
    if best is not None:
        name = best.encoding
        # the single-byte code pages agree on most bytes, and the detector cannot always tell
        # them apart (it reads the released CulturaX as cp1250): prefer cp1252, what Excel on
        # Windows writes, when the whole file decodes with it
        if name in ("cp1250", "latin_1", "iso8859_2", "iso8859_15", "mac_roman"):
            try:
                raw.decode("cp1252")
                name = "cp1252"
            except UnicodeDecodeError:
                pass
        try:
            text = raw.decode(name)
        except (UnicodeDecodeError, LookupError):
            text = None
        if text is not None:
            print(f"note: {path}: not valid UTF-8; read as {name} (detected; set "
                  f"{key}.encoding=... to choose another)", file=sys.stderr, flush=True)
            return text
    return raw.decode("utf-8", errors="surrogateescape")
