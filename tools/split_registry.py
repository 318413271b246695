"""Split a multi-document YAML stream into registry/papers/<id>.yaml files (authoring helper)."""

import re
import sys
from pathlib import Path

out = Path(sys.argv[1])
text = sys.stdin.read()
for doc in re.split(r"^---\n", text, flags=re.M):
    if not doc.strip():
        continue
    m = re.search(r"^id: ([a-z0-9-]+)$", doc, flags=re.M)
    assert m, doc[:80]
    (out / f"{m.group(1)}.yaml").write_text(doc.rstrip() + "\n", encoding="utf-8")
    print(m.group(1))
