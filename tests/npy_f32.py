#!/usr/bin/env python3
"""npy_f32.py OUT.npy SHAPE VALUE...: writes a little-endian float32 .npy (NumPy format 1.0, C
order) of SHAPE ("4,3,5") holding the VALUEs in row-major order, with the standard library only,
for shell tests that need small layer inputs without NumPy."""
import struct
import sys


def main(argv):
    out, shape = argv[1], [int(s) for s in argv[2].split(",")]
    vals = [float(v) for v in argv[3:]]
    count = 1
    for s in shape:
        count *= s
    if count != len(vals):
        sys.exit("npy_f32.py: shape %s holds %d values, %d given" % (argv[2], count, len(vals)))
    dims = ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "")
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % dims
    hdr += " " * ((64 - (10 + len(hdr) + 1) % 64) % 64) + "\n"
    with open(out, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
        f.write(struct.pack("<%df" % len(vals), *vals))


if __name__ == "__main__":
    main(sys.argv)
