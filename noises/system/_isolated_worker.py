"""Worker for :mod:`robustbench_sys.noises.system.isolated`, run by the Python of an isolated venv.

Standalone: imports only the standard library, numpy and PIL, so that the same file runs
unchanged in every environment (Pillow 9, pillow-simd, ...).  Long-lived: it serves
requests on stdin and answers on stdout until stdin closes.

Frame (both directions): 4-byte big-endian header length, UTF-8 JSON header, 8-byte
big-endian payload length, payload.  Requests: ``{"op": "versions"}``;
``{"op": "decode"}`` with the encoded image as payload; ``{"op": "resize", "filter":
"BILINEAR", "size": [w, h]}`` with an HxWx3 uint8 array as ``.npy`` bytes.  Answers:
``{"ok": true, ...}`` (decode/resize add ``"seconds"``: the library call's time in the worker)
with an ``.npy`` payload (empty for ``versions``), or
``{"ok": false, "error": "..."}``; the worker keeps serving after an error.
"""

import io
import json
import struct
import sys
import time


def _read_exact(f, n):
    buf = f.read(n)
    if len(buf) != n:
        raise EOFError
    return buf


def _read(f):
    (hlen,) = struct.unpack(">I", _read_exact(f, 4))
    header = json.loads(_read_exact(f, hlen).decode())
    (plen,) = struct.unpack(">Q", _read_exact(f, 8))
    return header, _read_exact(f, plen) if plen else b""


def _write(f, header, payload=b""):
    h = json.dumps(header).encode()
    f.write(struct.pack(">I", len(h)) + h + struct.pack(">Q", len(payload)))
    f.write(payload)
    f.flush()


def _npy(arr):
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def handle(header, payload):
    import numpy as np
    from PIL import Image

    op = header["op"]
    if op == "versions":
        import PIL
        from PIL import features

        return {"Pillow": PIL.__version__, "numpy": np.__version__,
                "libjpeg-turbo": features.version("libjpeg_turbo") or "none",
                "python": sys.version.split()[0]}, b""
    if op == "decode":
        t = time.perf_counter()
        with Image.open(io.BytesIO(payload)) as im:
            im.load()
            out = np.asarray(im.convert("RGB"))
        return {"seconds": time.perf_counter() - t}, _npy(out)
    if op == "resize":
        img = np.load(io.BytesIO(payload), allow_pickle=False)
        resample = getattr(Image, header["filter"])  # Image.BILINEAR etc. exist in every release
        t = time.perf_counter()
        out = np.asarray(Image.fromarray(img).resize(tuple(header["size"]), resample))
        return {"seconds": time.perf_counter() - t}, _npy(out)
    raise ValueError(f"unknown op {op!r}")


def main():
    fin, fout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the protocol stream
    while True:
        try:
            header, payload = _read(fin)
        except EOFError:
            return
        try:
            extra, out = handle(header, payload)
            _write(fout, dict(ok=True, **extra), out)
        except Exception as e:  # reported to the client, worker stays up
            _write(fout, {"ok": False, "error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
