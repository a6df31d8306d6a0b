"""The TOML sweep spec: axes crossed into NormConfig points and the measurements to take. Everything is
validated before any work, and an error names the key, the value and what is allowed."""
from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..config import KINDS, LANES, MANTISSA_MAX, ROUNDING_MODES, FixedFormat, NormConfig

AXES = ("kind", "formats", "lanes", "chunks", "k", "rounding", "max_count", "stat_frac_bits", "eps", "mantissa_bits")
AXIS_HELP = {"kind": ", ".join(KINDS), "formats": "'s<bits>' (e.g. 's8', 's16') or an 'in:out' pair such as 's6.2:s6.3'",
             "lanes": ", ".join(map(str, LANES)), "chunks": "integers in [1, 64] (range only)",
             "k": "integers in [1, 32] (topk only)", "rounding": ", ".join(ROUNDING_MODES),
             "max_count": "integers in [1, 1048576]", "stat_frac_bits": "integers in [0, 16]", "eps": "floats in (0, 1)",
             "mantissa_bits": f"integers in [the configuration's mantissa_min (14 at s8, 22 at s16), {MANTISSA_MAX}]"}
MEASUREMENTS = {"synth": {"pnr": bool, "cpus": (int, float)},
                "numerics": {"seed": int, "trials": int, "cpus": (int, float)},
                "accuracy": {"dataset": str, "seeds": list, "epochs": int, "train_limit": int, "cpus": (int, float)}}
MEASURE_DEFAULTS = {"synth": {"pnr": True, "cpus": 1}, "numerics": {"seed": 0, "trials": 4, "cpus": 1},
                    "accuracy": {"dataset": "digits", "seeds": [0], "epochs": None, "train_limit": None, "cpus": 1}}
OUTPUT_KEYS = {"area": str, "error": str, "target_pp": (int, float)}
TOP_KEYS = ("name", "description", "axes", "measure", "output")


def formats_of(value) -> dict:
    """The four formats of a 'formats' axis value: 's<b>' as hwnorm.torch.accuracy.formats(b) (16 bits: the project's
    FORMATS_16; up to 8 bits gamma s8.5, beta s8.5), or 'in:out' with gamma/beta as accuracy does; the same values as
    the accuracy run (tests/test_explore.py)."""
    text = str(value).strip().lower()
    if ":" in text:
        i, o = (FixedFormat.parse(t) for t in text.split(":", 1))
        wide = max(i.bits, o.bits) > 8
        g, b = (FixedFormat(16, 12), FixedFormat(16, 12)) if wide else (FixedFormat(8, 5), FixedFormat(8, 5))
        return dict(in_fmt=i, out_fmt=o, gamma_fmt=g, beta_fmt=b)
    if not (text.startswith("s") and text[1:].isdigit()):
        raise ValueError("not of the form 's<bits>' or 'in:out'")
    bits = int(text[1:])
    if not 2 <= bits <= 32:
        raise ValueError(f"bits={bits} is out of range [2, 32]")
    if bits > 8:
        return dict(in_fmt=FixedFormat(bits, bits // 2), out_fmt=FixedFormat(bits, bits - 4),
                    gamma_fmt=FixedFormat(16, 12), beta_fmt=FixedFormat(16, 12))
    return dict(in_fmt=FixedFormat(bits, max(bits - 4, 0)), out_fmt=FixedFormat(bits, bits - 3),
                gamma_fmt=FixedFormat(8, 5), beta_fmt=FixedFormat(8, 5))        # gamma s8.5: accuracy's GAMMA_FMT_8


def accuracy_bits(value) -> int | str:
    """The `bits` of hwnorm.torch.accuracy's Job for a formats value ('s8' -> 8, 's6.2:s6.3' unchanged)."""
    text = str(value).strip().lower()
    return text if ":" in text else int(text[1:])


@dataclass(frozen=True)
class Point:
    """One configuration of the sweep: its axis values (a label) and the NormConfig they make."""

    values: tuple            # ((axis, value), ...) in spec order
    config: NormConfig

    @property
    def label(self) -> str:
        return " ".join(f"{v}" if a in ("kind", "formats") else f"{a}={v}" for a, v in self.values)

    def get(self, axis, default=None):
        return dict(self.values).get(axis, default)


@dataclass
class Spec:
    """A validated spec: its points and the measurements (name -> parameters) to take on each."""

    name: str
    axes: dict
    measure: dict
    output: dict = field(default_factory=dict)
    points: list = field(default_factory=list)
    path: Path | None = None


class SpecError(ValueError):
    """A spec that cannot run; the message names the key, the value and what is allowed."""


def _type_name(t) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def _check_keys(where: str, got: dict, allowed):
    for k in got:
        if k not in allowed:
            raise SpecError(f"{where}: unknown key {k!r}: allowed {', '.join(allowed)}")


def _check_axis_value(axis: str, value):
    """A value of one axis alone (combinations are checked when the points are built)."""
    bad = SpecError(f"axes.{axis}: value {value!r} is not allowed: allowed {AXIS_HELP[axis]}")
    if axis == "kind" and value not in KINDS or axis == "rounding" and value not in ROUNDING_MODES:
        raise bad
    if axis == "lanes" and (isinstance(value, bool) or value not in LANES):
        raise bad
    if axis == "formats":
        try:
            formats_of(value)
        except ValueError as e:
            raise SpecError(f"axes.formats: value {value!r} is not allowed ({e}): allowed {AXIS_HELP['formats']}") from None
    if axis in ("chunks", "k", "max_count", "stat_frac_bits"):
        field_value = {"chunks": ("range", "chunks"), "k": ("topk", "k")}.get(axis)
        kw = {field_value[1]: value, "kind": field_value[0]} if field_value else {axis: value}
        try:
            NormConfig(**kw)
        except (ValueError, TypeError):
            raise bad from None
    if axis == "eps" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1):
        raise bad
    if axis == "mantissa_bits" and (isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= MANTISSA_MAX):
        raise bad


def _config(values: dict) -> NormConfig:
    """The NormConfig of one combination; chunks applies to range and k to topk only (else the kind's default)."""
    kw = {a: v for a, v in values.items() if a not in ("formats", "chunks", "k")}
    kw.update(formats_of(values.get("formats", "s8")))
    kind = values.get("kind", "range")
    if kind == "range" and "chunks" in values:
        kw["chunks"] = values["chunks"]
    if kind == "topk" and "k" in values:
        kw["k"] = values["k"]
    return NormConfig(**kw)


def build_points(axes: dict) -> list[Point]:
    """The cross product of the axes as points, one per distinct configuration (chunks/k collapse for other kinds)."""
    names = list(axes)
    points, seen = [], set()
    for combo in itertools.product(*(axes[n] for n in names)):
        values = dict(zip(names, combo))
        try:
            cfg = _config(values)
        except ValueError as e:
            raise SpecError(f"axes: the combination {values} is not a valid configuration: {e}") from None
        shown = tuple((n, v) for n, v in values.items()
                      if not (n == "chunks" and values.get("kind", "range") != "range")
                      and not (n == "k" and values.get("kind", "range") != "topk"))
        if cfg.hash not in seen:
            seen.add(cfg.hash)
            points.append(Point(shown, cfg))
    return points


def parse(data: dict, path: Path | None = None) -> Spec:
    """Validate a spec dict (as read from TOML) and build its points."""
    _check_keys("spec", data, TOP_KEYS)
    axes = data.get("axes")
    if not isinstance(axes, dict) or not axes:
        raise SpecError(f"axes: missing or empty: allowed a table of axes among {', '.join(AXES)}")
    _check_keys("axes", axes, AXES)
    for axis, values in axes.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"axes.{axis}: value {values!r} is not allowed: allowed a non-empty list of {AXIS_HELP[axis]}")
        for v in values:
            _check_axis_value(axis, v)
    measure = data.get("measure")
    if not isinstance(measure, dict) or not measure:
        raise SpecError(f"measure: missing or empty: allowed one or more of {', '.join(MEASUREMENTS)} "
                        f"(e.g. [measure.numerics])")
    _check_keys("measure", measure, MEASUREMENTS)
    params = {}
    for m, given in measure.items():
        if not isinstance(given, dict):
            raise SpecError(f"measure.{m}: value {given!r} is not allowed: allowed a table (e.g. [measure.{m}])")
        _check_keys(f"measure.{m}", given, MEASUREMENTS[m])
        for k, v in given.items():
            t = MEASUREMENTS[m][k]
            if isinstance(v, bool) and t is not bool or not isinstance(v, t):
                raise SpecError(f"measure.{m}.{k}: value {v!r} is not allowed: allowed a {_type_name(t)}")
        params[m] = {**MEASURE_DEFAULTS[m], **given}
    if "accuracy" in params:
        _check_accuracy(params["accuracy"], axes)
    if "numerics" in params and params["numerics"]["trials"] < 1:
        raise SpecError(f"measure.numerics.trials: value {params['numerics']['trials']} is not allowed: allowed >= 1")
    output = data.get("output", {})
    if not isinstance(output, dict):
        raise SpecError(f"output: value {output!r} is not allowed: allowed a table with {', '.join(OUTPUT_KEYS)}")
    _check_keys("output", output, OUTPUT_KEYS)
    for k, v in output.items():
        if isinstance(v, bool) or not isinstance(v, OUTPUT_KEYS[k]):
            raise SpecError(f"output.{k}: value {v!r} is not allowed: allowed a {_type_name(OUTPUT_KEYS[k])}")
    name = data.get("name") or (path.stem if path else "explore")
    return Spec(name=str(name), axes=axes, measure=params, output=output, points=build_points(axes), path=path)


def _check_accuracy(p: dict, axes: dict):
    from ..torch.accuracy import DATASETS
    if p["dataset"] not in DATASETS:
        raise SpecError(f"measure.accuracy.dataset: value {p['dataset']!r} is not allowed: allowed {', '.join(DATASETS)}")
    if not p["seeds"] or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in p["seeds"]):
        raise SpecError(f"measure.accuracy.seeds: value {p['seeds']!r} is not allowed: allowed a list of integers >= 0")
    for k in ("epochs", "train_limit"):
        if p[k] is not None and p[k] < 1:
            raise SpecError(f"measure.accuracy.{k}: value {p[k]!r} is not allowed: allowed an integer >= 1")


def load(path) -> Spec:
    """Read and validate a TOML spec file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"spec {path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"spec {path}: not valid TOML: {e}") from None
    return parse(data, path)
