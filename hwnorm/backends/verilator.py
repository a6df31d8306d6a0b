"""The `rtl` backend: the generated Verilog, Verilated and driven in-process through a small C++
harness (harness.cpp) loaded with ctypes. Whole channels run in C++; Python only packs arguments.

Builds are cached per configuration (and per Verilog/harness text) under build/rtl/, under an
exclusive file lock, and published by an atomic rename, so concurrent processes never see a
half-written library.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..cache import BUILD_ROOT, build_once
from ..config import NormConfig
from ..constants import channel_params
from ..emit import backward_verilog_text, verilog_text
from ..fields import from_words, pack, to_words, unpack, width
from ..toolchain import VERILATOR_WARNINGS, setup_verilator_env, verilator_root

HARNESS = Path(__file__).resolve().parent / "harness.cpp"
VERILATOR_FLAGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert", *VERILATOR_WARNINGS]
# -O1: a third less compile time per build than -O2 (topk 16-bit x 4: 11 s of CPU against 18), the model 5-10 % slower
CXXFLAGS = ["-O1", "-fPIC"]


class BuildError(RuntimeError):
    """Verilator or the C++ compiler failed; the message carries their output."""


def _run(cmd, cwd, env, what):
    try:
        r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise BuildError(f"{what} failed: {cmd[0]!r} not found ({e}). Install a C++ compiler "
                         f"(e.g. apt-get install g++) or set CXX") from e
    if r.returncode != 0:
        out = (r.stdout + r.stderr)[-6000:]
        raise BuildError(f"{what} failed (exit {r.returncode}): {' '.join(map(str, cmd))}\n{out}")
    return r


def library_path(cfg: NormConfig) -> Path:
    """Build (once) and return the shared library of cfg's Verilated datapath."""
    return build_library(cfg.name, verilog_text(cfg), cfg.describe())


def build_library(top: str, text: str, what: str) -> Path:
    """Build (once) and return the shared library of the Verilog `text` (top module `top`) with the harness; `what`
    names it in the messages. Cached under build/rtl/ by the text, the harness, the compiler and the flags."""
    cxx = os.environ.get("CXX", "g++")
    key = hashlib.sha256("\n".join([text, HARNESS.read_text(), cxx, *VERILATOR_FLAGS, *CXXFLAGS]).encode()).hexdigest()[:12]
    out_dir = BUILD_ROOT / "rtl" / f"{top}-{key}"
    lib = out_dir / "libhwnorm.so"

    def make(lib: Path):
        print(f"hwnorm: first use of this rtl configuration: building its Verilator model ({what})",
              file=sys.stderr, flush=True)
        t0 = time.monotonic()
        env = setup_verilator_env(dict(os.environ))
        root = verilator_root()
        work = Path(tempfile.mkdtemp(prefix="build-", dir=out_dir.parent))
        try:
            (work / "top.v").write_text(text)
            cmd = ["verilator", "--cc", "top.v", "--top-module", top, "--prefix", "Vtop", "-Mdir", "obj",
                   *VERILATOR_FLAGS, "-CFLAGS", " ".join(CXXFLAGS), "--build", "-j", str(os.cpu_count() or 1)]
            _run(cmd, work, env, f"Verilator build of {what}")
            _run([cxx, "-shared", *CXXFLAGS, "-I", "obj", "-I", str(root / "include"),
                  "-I", str(root / "include" / "vltstd"), str(HARNESS), "obj/Vtop__ALL.a", "obj/libverilated.a",
                  "-o", "libhwnorm.so", "-pthread"], work, env, f"C++ build of the harness for {what}")
            out_dir.mkdir(exist_ok=True)
            tmp = out_dir / f".libhwnorm.so.{os.getpid()}"
            shutil.copy2(work / "libhwnorm.so", tmp)
            os.replace(tmp, lib)                       # atomic: readers see all of it or nothing
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"hwnorm: built the Verilator model in {time.monotonic() - t0:.1f} s (cached in {out_dir})",
              file=sys.stderr, flush=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return build_once(lib, make)


def _load(lib: Path):
    so = ctypes.CDLL(str(lib))
    vp, i32, u64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64
    ptr = np.ctypeslib.ndpointer
    so.hw_new.restype = vp
    so.hw_free.argtypes = [vp]
    so.hw_cycles.argtypes = [vp]
    so.hw_cycles.restype = u64
    so.hw_run.restype = i32
    so.hw_run.argtypes = [vp, i32, i32, i32, ptr(np.uint32, flags="C"), i32, ptr(np.int32, flags="C"),
                          ptr(np.int32, flags="C"), ptr(np.uint32, flags="C"), i32, i32, i32, i32, i32, i32, i32,
                          u64, ctypes.POINTER(i32), vp, vp, i32, i32]
    so.hw_bench.restype = ctypes.c_double
    so.hw_bench.argtypes = [vp, i32, i32, ptr(np.uint32, flags="C"), i32, i32, i32, i32, i32, i32, i32, i32, i32,
                            ctypes.POINTER(ctypes.c_double)]
    return so


class VerilatedDatapath:
    """One Verilated instance of cfg's datapath, running whole channels per call."""

    def __init__(self, cfg: NormConfig):
        if cfg.overlap:
            raise ValueError("overlap=True is not supported by the rtl backend (its harness sends one channel at a "
                             "time, not the interleaved order): allowed overlap=False")
        self.cfg = cfg
        self.lib = _load(library_path(cfg))
        self.handle = self.lib.hw_new()
        self.desc_bits = width(cfg.channel_fields)
        self.desc_nw = len(to_words(0, self.desc_bits))
        self.stats_nw = len(to_words(0, width(cfg.stats_fields)))
        ew_bits = cfg.gamma_fmt.bits + cfg.beta_fmt.bits if cfg.elementwise else 0     # gamma/beta lanes per beat
        self.in_nw = len(to_words(0, (cfg.in_fmt.bits + ew_bits) * cfg.lanes))
        self.out_nw = len(to_words(0, cfg.out_fmt.bits * cfg.lanes))

    def __del__(self):
        if getattr(self, "handle", None):
            self.lib.hw_free(self.handle)
            self.handle = None

    @property
    def cycles(self) -> int:
        return int(self.lib.hw_cycles(self.handle))

    def _desc_words(self, descs: list[dict]) -> np.ndarray:
        words = [to_words(pack(self.cfg.channel_fields, d), self.desc_bits) for d in descs]
        return np.ascontiguousarray(np.array(words, dtype=np.uint32).reshape(len(descs), self.desc_nw))

    def run(self, x: np.ndarray, descs: list[dict], passes: int, affine=None):
        """x: (C, n) int codes; descs: one descriptor dict per channel; `affine`: an elementwise build's (gamma,
        beta) codes per value, broadcast to x. Returns (y codes, stats dicts)."""
        cfg = self.cfg
        for c, d in enumerate(descs):         # the core would answer with an error word and take no value: refuse here
            err = cfg.descriptor_error(d)
            if err is not None:
                raise ValueError(f"channel {c}: {err} (the core refuses this descriptor)")
        x = np.ascontiguousarray(x, dtype=np.int32)
        nch, n = x.shape
        if cfg.elementwise:
            g, b = (np.ascontiguousarray(np.broadcast_to(a, x.shape), dtype=np.int32) for a in affine)
            ew = (g.ctypes.data, b.ctypes.data, cfg.gamma_fmt.bits, cfg.beta_fmt.bits)
        else:
            ew = (None, None, 0, 0)
        y = np.zeros_like(x)
        stats = np.zeros((nch, self.stats_nw), dtype=np.uint32)
        failed = ctypes.c_int(-1)
        limit = (passes + 2) * (n + 1000) * 4 + 10000
        rc = self.lib.hw_run(self.handle, nch, n, passes, self._desc_words(descs), self.desc_nw, x, y, stats,
                             self.stats_nw, cfg.lanes, cfg.in_fmt.bits, cfg.out_fmt.bits, int(cfg.out_fmt.signed),
                             self.in_nw, self.out_nw, limit, ctypes.byref(failed), *ew)
        if rc != 0:
            raise RuntimeError(f"the Verilated datapath hung on channel {failed.value} ({cfg.describe()})")
        return y, [unpack(cfg.stats_fields, from_words(row)) for row in stats]

    def _with_tau(self, descs: list[dict], tau) -> list[dict]:
        """FRN kinds: each descriptor's TLU threshold (output codes; None = the output minimum, no threshold)."""
        if not self.cfg.frn:
            return descs
        taus = [self.cfg.out_fmt.min_int] * len(descs) if tau is None else [int(t) for t in np.reshape(tau, -1)]
        return [dict(d, tau=t) for d, t in zip(descs, taus)]

    def _affine(self, x, gamma, beta):
        """-> (descriptor gamma, beta per channel, per-value codes or None): an elementwise build streams gamma/beta
        per value (x's shape) and sends 1.0 / 0 in the descriptor, which it ignores."""
        if not self.cfg.elementwise:
            return gamma, beta, None
        c = x.shape[0]
        return [1 << self.cfg.gamma_fmt.frac] * c, [0] * c, (gamma, beta)

    def train(self, x, gamma, beta, seed=None, tau=None, eps=None):
        """`seed`: a dropout build's per-channel seeds (None: 0); `tau`: the FRN kinds' TLU codes (None: none);
        `eps`: the FRN kinds' descriptor eps in the input format's units (None: cfg.eps). An elementwise build:
        gamma/beta per value."""
        n = x.shape[1]
        base = channel_params(self.cfg, n, eps=eps)
        gamma, beta, affine = self._affine(x, gamma, beta)
        seeds = seed if seed is not None else [0] * len(gamma)
        descs = [dict(base, gamma=int(g), beta=int(b), seed=int(s)) for g, b, s in zip(gamma, beta, seeds)]
        return self.run(x, self._with_tau(descs, tau), self.cfg.passes, affine)

    def infer(self, x, gamma, beta, mean, scale_m, scale_exp, tau=None):
        n = x.shape[1]
        gamma, beta, affine = self._affine(x, gamma, beta)
        descs = [dict(infer=1, count=n, gamma=int(g), beta=int(b), mean=int(m), scale_m=int(s), scale_exp=int(e))
                 for g, b, m, s, e in zip(gamma, beta, mean, scale_m, scale_exp)]
        return self.run(x, self._with_tau(descs, tau), 1, affine)

    def bench(self, n: int, reps: int) -> tuple[float, float]:
        """Raw rate of this model without Python: (values per second, cycles per second)."""
        cfg = self.cfg
        desc = self._desc_words(self._with_tau([dict(channel_params(cfg, n), gamma=1 << cfg.gamma_fmt.frac, beta=0)], None))
        cps = ctypes.c_double(0.0)
        vps = self.lib.hw_bench(self.handle, n, cfg.passes, desc, self.desc_nw, reps, cfg.lanes, cfg.in_fmt.bits,
                                cfg.out_fmt.bits, int(cfg.out_fmt.signed), self.in_nw, self.out_nw, self.stats_nw,
                                ctypes.byref(cps))
        return vps, cps.value


class VerilatedBackward:
    """One Verilated instance of the backward datapath of (cfg, gcfg) (hwnorm.hdl.backward.BackwardDatapath), running
    whole channels per call through harness.cpp's hw_run: the descriptor, then the (x, g) beats twice (the reduction
    pass, the dx pass), dx beats and one statistics word back (hwnorm/backends/rtl_backward.py)."""

    def __init__(self, cfg: NormConfig, gcfg):
        from .rtl_backward import backward_top, describe       # the generator refuses what it cannot build
        self.cfg, self.gcfg = cfg, gcfg
        top = backward_top(cfg, gcfg)
        self.lib = _load(build_library(top, backward_verilog_text(cfg, gcfg, top), describe(cfg, gcfg)))
        self.handle = self.lib.hw_new()
        self.desc_fields = cfg.backward_channel_fields(gcfg)
        self.stats_fields = cfg.backward_stats_fields(gcfg)
        self.desc_nw = len(to_words(0, width(self.desc_fields)))
        self.stats_nw = len(to_words(0, width(self.stats_fields)))
        beat_bits = (cfg.in_fmt.bits + gcfg.grad_fmt.bits) * cfg.lanes
        # one word more than the beat needs: hw_run packs its (absent, 0-bit) beta lanes at the beat's top bit
        self.in_nw = len(to_words(0, beat_bits)) + 1
        self.out_nw = len(to_words(0, gcfg.dx_fmt.bits * cfg.lanes))

    def __del__(self):
        if getattr(self, "handle", None):
            self.lib.hw_free(self.handle)
            self.handle = None

    @property
    def cycles(self) -> int:
        return int(self.lib.hw_cycles(self.handle))

    def run(self, x, g, gamma, seeds=None):
        """x (C, n) in_fmt codes, g (C, n) grad_fmt codes, gamma (C,) gamma_fmt codes, seeds the dx pass's per-channel
        LFSR seeds (None: 0) -> (dx codes (C, n), statistics dicts per channel)."""
        from .rtl_backward import channel_stats, descriptor, pack_fields
        cfg, gcfg = self.cfg, self.gcfg
        x = np.ascontiguousarray(x, dtype=np.int32)
        g = np.ascontiguousarray(g, dtype=np.int32)
        nch, n = x.shape
        if not 1 <= n <= cfg.max_count:
            raise ValueError(f"count={n} is out of range: allowed [1, max_count={cfg.max_count}]")
        seeds = [0] * nch if seeds is None else [int(s) for s in seeds]
        s, den = channel_stats(cfg, x)
        descs = [descriptor(cfg, n, s[c], den[c], gamma[c], seeds[c]) for c in range(nch)]
        for c, d in enumerate(descs):         # the core would answer with an error word and take no value: refuse here
            err = cfg.backward_descriptor_error(gcfg, d)
            if err is not None:
                raise ValueError(f"channel {c}: {err} (the backward core refuses this descriptor)")
        words = [to_words(pack_fields(self.desc_fields, d, "backward descriptor"), width(self.desc_fields))
                 for d in descs]
        desc = np.ascontiguousarray(np.array(words, dtype=np.uint32).reshape(nch, self.desc_nw))
        dx = np.zeros_like(x)
        stats = np.zeros((nch, self.stats_nw), dtype=np.uint32)
        failed = ctypes.c_int(-1)
        limit = 4 * (2 * n + 4000) + 100_000          # two passes and the per-channel arithmetic, with room to spare
        rc = self.lib.hw_run(self.handle, nch, n, 2, desc, self.desc_nw, x, dx, stats, self.stats_nw, cfg.lanes,
                             cfg.in_fmt.bits, gcfg.dx_fmt.bits, 1, self.in_nw, self.out_nw, limit,
                             ctypes.byref(failed), g.ctypes.data, g.ctypes.data, gcfg.grad_fmt.bits, 0)
        if rc != 0:
            raise RuntimeError(f"the Verilated backward datapath hung on channel {failed.value} "
                               f"({self.cfg.describe()})")
        return dx, [unpack(self.stats_fields, from_words(row)) for row in stats]
