"""Build once: the one cache helper of the Verilator sim builds, the rtl libraries and the synthesis rows, and where
they all go (BUILD_ROOT)."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _build_root() -> Path:
    """$HWNORM_BUILD_DIR, else build/ of the source checkout hwnorm sits in (pyproject.toml beside hwnorm/), else the
    user's cache directory ($XDG_CACHE_HOME/hwnorm, ~/.cache/hwnorm): an installed wheel never writes into
    site-packages."""
    if os.environ.get("HWNORM_BUILD_DIR"):
        return Path(os.environ["HWNORM_BUILD_DIR"])
    if (PACKAGE.parent / "pyproject.toml").exists():
        return PACKAGE.parent / "build"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hwnorm"


BUILD_ROOT = _build_root()       # Verilator sim builds, rtl libraries, synthesis rows, accuracy runs, explore's cache


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


def source_hash(files=(), dirs=(), salt: str = "") -> str:
    """12 hex digits of the package sources `files` and every .py of `dirs` (paths below hwnorm/): a cache key that
    changes when the code that defines a cached number does."""
    import hashlib
    names = list(files) + sorted(str(p.relative_to(PACKAGE)) for d in dirs for p in (PACKAGE / d).glob("*.py"))
    h = hashlib.sha256(salt.encode())
    for name in names:
        h.update(name.encode() + b"\0" + (PACKAGE / name).read_bytes() + b"\0")
    return h.hexdigest()[:12]
