#!/usr/bin/env python3
"""Edits one metadata key of a GGUF file in place of its bytes (the file keeps its size and layout),
to make malformed files for the error tests.
  gguf_edit.py IN OUT --rename KEY NEWKEY   same-length new name (the key is then missing)
  gguf_edit.py IN OUT --retype KEY f32      a 4-byte value's type becomes f32 (6), bytes unchanged
  gguf_edit.py IN OUT --set-u32 KEY VALUE   a u32 key's value
Finds the key by its serialised form (u64 length + bytes)."""
import struct
import sys


def main():
    src, dst, op, key, arg = sys.argv[1:6]
    data = bytearray(open(src, "rb").read())
    k = key.encode()
    pos = data.find(struct.pack("<Q", len(k)) + k)
    if pos < 0:
        sys.exit(f"key {key} not found")
    vt = pos + 8 + len(k)  # u32 value type, then the value
    if op == "--rename":
        n = arg.encode()
        assert len(n) == len(k), "same length only"
        data[pos + 8:vt] = n
    elif op == "--retype":
        assert struct.unpack_from("<I", data, vt)[0] in (4, 5), "4-byte integer keys only"
        data[vt:vt + 4] = struct.pack("<I", {"f32": 6}[arg])
    elif op == "--set-u32":
        assert struct.unpack_from("<I", data, vt)[0] == 4, "u32 keys only"
        data[vt + 4:vt + 8] = struct.pack("<I", int(arg))
    else:
        sys.exit(f"unknown op {op}")
    open(dst, "wb").write(data)


if __name__ == "__main__":
    main()
