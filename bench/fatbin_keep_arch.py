"""Zero the payload of every CUDA fatbin entry not built for one SM arch in a shared library (in place).

Used by bench/gpu_stage.sh to ship onnxruntime-gpu's CUDA provider to an sm_90 machine within a call's
64 MiB: entry headers stay (the CUDA runtime picks an entry by the arch in its header and never reads
the others), so the zeroed payloads compress away.  Layout read: the ``.nv_fatbin`` section holds
fatbin containers (magic 0xBA55ED50, u16 version, u16 header size, u64 body size), each a run of
entries (u16 kind: 2 = cubin, u16 version, u32 header size, u64 padded payload size, ..., u32 SM
arch at offset 28).  Usage: python bench/fatbin_keep_arch.py LIB.so 90
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys

MAGIC = 0xBA55ED50


def keep_arch(path: str, arch: int) -> tuple[int, int]:
    out = subprocess.run(["readelf", "-S", "-W", path], capture_output=True, text=True, check=True).stdout
    m = re.search(r"\.nv_fatbin\s+PROGBITS\s+\S+\s+(\S+)\s+(\S+)", out)
    if m is None:
        raise SystemExit(f"{path}: no .nv_fatbin section")
    off, size = int(m.group(1), 16), int(m.group(2), 16)
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    sec = memoryview(buf)[off:off + size]
    pos = kept = zeroed = 0
    while pos + 16 <= size:
        magic, _version, header, body = struct.unpack_from("<IHHQ", sec, pos)
        if magic != MAGIC:  # containers are 8-byte aligned
            pos += 8
            continue
        entry, end = pos + header, pos + header + body
        while entry < end:
            kind, _v, entry_header, padded = struct.unpack_from("<HHIQ", sec, entry)
            entry_arch = struct.unpack_from("<I", sec, entry + 28)[0]
            if kind == 2 and entry_arch != arch:
                sec[entry + entry_header:entry + entry_header + padded] = bytes(padded)
                zeroed += padded
            else:
                kept += padded
            entry += entry_header + padded
        pos = end
    sec.release()
    with open(path, "wb") as f:
        f.write(buf)
    return kept, zeroed


if __name__ == "__main__":
    kept, zeroed = keep_arch(sys.argv[1], int(sys.argv[2]))
    print(f"kept {kept / 1e6:.1f} MB of sm_{sys.argv[2]} (and non-cubin) entries, zeroed {zeroed / 1e6:.1f} MB")
