"""hwnorm.cache.build_once: parallel processes build a thing once; a half-made thing is made again."""
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from hwnorm.cache import build_once


def _build(target: str, log: str):
    def make(t: Path):
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.3)
        t.write_text("done")
    build_once(Path(target), make)


def test_parallel_processes_build_once(tmp_path):
    target, log = tmp_path / "sub" / "thing", tmp_path / "log"
    procs = [mp.get_context("fork").Process(target=_build, args=(str(target), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert log.read_text() == "built\n" and target.read_text() == "done"


def test_failed_build_is_redone_and_done_decides(tmp_path):
    target, calls = tmp_path / "d", []

    def failing(t: Path):
        calls.append("fail")
        t.mkdir()
        raise RuntimeError("half-way")
    stamp = target / ".built"
    with pytest.raises(RuntimeError):
        build_once(target, failing, done=lambda _: stamp.exists())

    def good(t: Path):
        calls.append("good")
        stamp.write_text("")
    assert build_once(target, good, done=lambda _: stamp.exists()) == target
    assert build_once(target, good, done=lambda _: stamp.exists()) == target
    assert calls == ["fail", "good"]
