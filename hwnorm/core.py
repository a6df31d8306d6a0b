"""One named core for integration: NAME.v, NAME.json, NAME.md (+ NAME.svg) and NAME.h, written all or nothing."""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from .config import NormConfig

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Verilog-2005 and SystemVerilog keywords, and C keywords (the name prefixes the C header's identifiers)
RESERVED = set("""
always and assign automatic begin buf bufif0 bufif1 case casex casez cell cmos config deassign default defparam design
disable edge else end endcase endconfig endfunction endgenerate endmodule endprimitive endspecify endtable endtask event
for force forever fork function generate genvar highz0 highz1 if ifnone incdir include initial inout input instance
integer join large liblist library localparam macromodule medium module nand negedge nmos nor noshowcancelled not notif0
notif1 or output parameter pmos posedge primitive pull0 pull1 pulldown pullup pulsestyle_ondetect pulsestyle_onevent
rcmos real realtime reg release repeat rnmos rpmos rtran rtranif0 rtranif1 scalared showcancelled signed small specify
specparam strong0 strong1 supply0 supply1 table task time tran tranif0 tranif1 tri tri0 tri1 triand trior trireg unsigned
use uwire vectored wait wand weak0 weak1 while wire wor xnor xor logic bit byte int longint shortint class interface
package program property sequence typedef struct union enum string void import export always_comb always_ff always_latch
auto break char const continue do double extern float goto long register return short sizeof static switch volatile
inline restrict bool
""".split())
NAME_RULE = "a letter or _ followed by letters, digits or _ (a legal Verilog and C identifier, not a keyword), e.g. my_norm"


def check_name(name) -> str:
    """`name` if it can name the Verilog top module and prefix the C header, else ValueError."""
    if not isinstance(name, str) or not IDENT.match(name) or name in RESERVED or len(name) > 64:
        raise ValueError(f"--name={name!r} is not allowed: allowed {NAME_RULE}, at most 64 characters")
    return name


def core_files(cfg: NormConfig, name: str, axi: bool = False, resources: dict | None = None) -> dict[str, str]:
    """{file name: text} of the core `name` (nothing is written)."""
    from .c_header import c_header
    from .datasheet import datasheet, markdown, render_svg, waveform
    from .emit import top_ports, verilog_text
    check_name(name)
    if axi:
        from .hdl.axi_stream import check_axi
        check_axi(cfg)
    body = verilog_text(cfg, name=name, axi=axi)
    ports = top_ports(body, name)
    ds = datasheet(cfg, name, ports, axi=axi, resources=resources)
    wave = waveform(cfg, axi=axi)
    svg = render_svg(wave)
    head = [f"// {name}: hwnorm core, {ds['interface']} interface: {cfg.describe()}",
            f"// Datasheet: {name}.md (for people), {name}.json (for programs); C packing helpers: {name}.h",
            f"// Descriptor {ds['descriptor']['width']} bits, statistics word {ds['stats']['width']} bits (fields in the datasheet).",
            "// Ports:"]
    head += [f"//   {d:6s} {f'[{w - 1}:0]' if w > 1 else '':9s} {p:22s} {ds['ports'][k]['doc']}"
             for k, (d, w, p) in enumerate(ports)]
    files = {f"{name}.v": "\n".join(head) + "\n" + body,
             f"{name}.json": json.dumps({**ds, "waveform": wave}, indent=1) + "\n",
             f"{name}.md": markdown(ds, wave, f"{name}.svg" if svg else None),
             f"{name}.h": c_header(cfg, name)}
    if svg:
        files[f"{name}.svg"] = svg
    return files


def check_out_dir(out_dir) -> Path:
    """The output directory, created if missing; ValueError (naming -o) if it cannot be written."""
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"-o={str(out_dir)!r} cannot be created ({e.strerror or e}): allowed a writable directory") from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"-o={str(out_dir)!r} is not a writable directory: allowed a writable directory")
    return path


def write_core(cfg: NormConfig, name: str, out_dir, axi: bool = False, resources: dict | None = None) -> list[Path]:
    """Write the core's files into out_dir: every file is generated first, then each is written to a
    temporary file and renamed in place; on any failure the temporaries are removed and no file is replaced."""
    return write_files(core_files(cfg, name, axi=axi, resources=resources), out_dir)


def write_files(files: dict[str, str], out_dir) -> list[Path]:
    """{file name: text} into out_dir, all or nothing (temporary files renamed in place)."""
    path = check_out_dir(out_dir)
    temps: list[tuple[str, Path]] = []
    try:
        for fname, text in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{fname}.", dir=path)
            temps.append((fname, Path(tmp)))
            with os.fdopen(fd, "w") as f:
                f.write(text)
    except OSError as e:
        for _, tmp in temps:
            tmp.unlink(missing_ok=True)
        raise ValueError(f"-o={str(out_dir)!r} cannot be written ({e.strerror or e}): allowed a writable directory") from None
    out = []
    for fname, tmp in temps:
        os.chmod(tmp, 0o644)
        os.replace(tmp, path / fname)
        out.append(path / fname)
    return out
