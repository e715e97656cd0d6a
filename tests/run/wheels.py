"""Wheels written by hand for tests: no build backend, no network.

A wheel is a zip file with the package's files, a `.dist-info` holding METADATA, WHEEL
and RECORD (each file's sha256). uv installs it from a find-links directory offline.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def write_wheel(
    directory: Path,
    name: str,
    version: str,
    files: dict[str, str],
    requires: tuple[str, ...] = (),
) -> Path:
    """Write `<name>-<version>-py3-none-any.whl` into `directory` and return its path."""
    dist = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    entries = dict(files)
    entries[f"{dist}/METADATA"] = meta
    entries[f"{dist}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: daycare-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, text in entries.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    entries[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, text in entries.items():
            z.writestr(path, text)
    return out


def tiny_wheels(directory: Path) -> Path:
    """`tinypkg` 1.0 (VALUE = 42) and `tinyplus` 2.0 (needs tinypkg) in `directory`."""
    write_wheel(directory, "tinypkg", "1.0", {"tinypkg/__init__.py": "VALUE = 42\n"})
    write_wheel(
        directory,
        "tinyplus",
        "2.0",
        {"tinyplus/__init__.py": "import tinypkg\nVALUE = tinypkg.VALUE + 1\n"},
        requires=("tinypkg>=1",),
    )
    return directory
