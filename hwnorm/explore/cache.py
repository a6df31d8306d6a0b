"""Per-task result cache under build/explore/cache/<measurement>/<key>.json, written by the driver only,
atomically (temp file + os.replace), so an interrupted sweep resumes and a repeated one costs nothing."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..cache import BUILD_ROOT


def default_dir() -> Path:
    return BUILD_ROOT / "explore" / "cache"


def write_atomic(path: Path, text: str):
    """Write text to path through a temporary file in the same directory and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Cache:
    """Successful task results by key; failures are not cached (the next run retries them)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else default_dir()

    def path(self, measurement: str, key: str) -> Path:
        return self.root / measurement / f"{key}.json"

    def get(self, measurement: str, key: str) -> dict | None:
        p = self.path(measurement, key)
        try:
            return json.loads(p.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, outcome: dict):
        if outcome.get("ok"):
            write_atomic(self.path(outcome["measurement"], outcome["key"]), json.dumps(outcome, indent=1, sort_keys=True))
