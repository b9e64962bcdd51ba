#!/usr/bin/env python3
"""Stdlib-only safetensors surgery for the CLI tests (independent of moerun's own reader/writer).

  st_tool.py names FILE                       print "name dtype shape" per tensor
  st_tool.py drop FILE NAME OUT               copy FILE without tensor NAME
  st_tool.py shard FILE PREFIX OUTDIR N       write OUTDIR/model-0000i-of-00000N.safetensors + index,
                                              every name prefixed with PREFIX, plus a decoy layer
  st_tool.py input OUT T H                    hidden_states [T, H] f32 (deterministic values)
  st_tool.py poison FILE NAME INDEX VALUE      in place: element INDEX ("all": every one) of F32 /
                                              BF16 / F16 tensor NAME set to VALUE (nan, inf, 1e30)
"""
import json
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", None)
    buf = data[8 + n:]
    tensors = {k: (v["dtype"], v["shape"], buf[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}
    return tensors, meta


def write(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, blob) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main(argv):
    cmd = argv[1]
    if cmd == "names":
        tensors, _ = read(argv[2])
        for name, (dtype, shape, _) in tensors.items():
            print(name, dtype, shape)
    elif cmd == "drop":
        tensors, _ = read(argv[2])
        del tensors[argv[3]]
        write(argv[4], tensors)
    elif cmd == "shard":
        tensors, _ = read(argv[2])
        prefix, outdir, n = argv[3], argv[4], int(argv[5])
        names = list(tensors)
        weight_map = {}
        decoy = prefix.replace(".1.", ".0.")
        for i in range(n):
            part = {}
            for name in names[i::n]:
                part[prefix + name] = tensors[name]
                part[decoy + name] = tensors[name]
            fname = f"model-{i + 1:05d}-of-{n:06d}.safetensors"
            write(f"{outdir}/{fname}", part)
            weight_map.update({k: fname for k in part})
        with open(f"{outdir}/model.safetensors.index.json", "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
    elif cmd == "input":
        t, h = int(argv[3]), int(argv[4])
        vals = [((i * 37) % 101) / 50.0 - 1.0 for i in range(t * h)]
        write(argv[2], {"hidden_states": ("F32", [t, h], struct.pack(f"<{t * h}f", *vals))})
    elif cmd == "poison":
        tensors, _ = read(argv[2])
        dtype, shape, blob = tensors[argv[3]]
        fmt = {"F32": "<f", "F16": "<e", "BF16": None}[dtype]
        size = 4 if dtype == "F32" else 2
        value = float(argv[5])
        if dtype == "BF16":
            one = struct.pack("<f", value)[2:]
        else:
            one = struct.pack(fmt, value)
        data = bytearray(blob)
        count = len(data) // size
        for i in range(count) if argv[4] == "all" else [int(argv[4])]:
            data[i * size:(i + 1) * size] = one
        tensors[argv[3]] = (dtype, shape, bytes(data))
        write(argv[2], tensors)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
