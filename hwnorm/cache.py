"""Build once: the one cache helper of the Verilator sim builds, the rtl libraries and the synthesis rows."""
from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive inter-process lock (flock) on `path`, so parallel processes build a thing once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_once(target: Path, build, done=None) -> Path:
    """`target` once `build(target)` has made it (`done(target)`, default: it exists). Concurrent callers wait on
    `<target>.lock` beside it and find it made; `build` must leave `done` false if it fails half-way."""
    done = done or (lambda p: p.exists())
    if done(target):
        return target
    with locked(target.parent / f"{target.name}.lock"):
        if not done(target):
            build(target)
    return target
