"""RawLanding in a folder (the lake's `_landing`): `<sha256>.csv`, or `.csv.gz` for gzipped content.

Written as the lake writes Parquet: hidden temp file, fsync, rename, fsync the folder. A file already there
is the same content (its name is its hash) and is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from ingest.intraday import GZIP_MAGIC


def landing_name(content: bytes, sha256: str) -> str:
    return f"{sha256}.csv.gz" if content[:2] == GZIP_MAGIC else f"{sha256}.csv"


class LandingDir:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, content: bytes, sha256: str) -> Path:
        return self.directory / landing_name(content, sha256)

    def find(self, sha256: str) -> Path | None:
        for name in (f"{sha256}.csv", f"{sha256}.csv.gz"):
            if (self.directory / name).is_file():
                return self.directory / name
        return None

    def keep(self, content: bytes, sha256: str) -> None:
        final = self.path_for(content, sha256)
        if final.is_file():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        temp = self.directory / f".{final.name}.{os.getpid()}.tmp"
        with open(temp, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, final)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
