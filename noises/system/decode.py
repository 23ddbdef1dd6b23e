"""Decoder noise: the same JPEG bytes through different decoders.

Every function has the ``decode`` stage signature ``fn(data: bytes) -> HxWx3 uint8 RGB``.
Greyscale, CMYK and alpha images are converted to RGB as the decoder's library does.

Bad input is refused per image with an ``OSError`` whose message names the cause (the caller
adds the file name):

* more pixels than ``ROBUSTBENCH_SYS_MAX_PIXELS`` (default 64M; ``0`` = no cap of ours), read
  from the image header before any decoding, for every decoder (Pillow's own decompression-bomb
  limit, ``PIL.Image.MAX_IMAGE_PIXELS``, still applies on top for the Pillow decoders);
* data Pillow cannot identify (empty file, an HTML page, ...): the cause, not Pillow's
  ``cannot identify image file <_io.BytesIO ...>``.

16-bit greyscale (Pillow modes ``I;16``/``I;16B``/``I;16L``/``I;16N``, and ``I`` from a PNG) is
reduced to 8 bits by keeping the high byte (``v >> 8``), which is what Pillow itself does for
16-bit RGB / RGBA PNGs and what OpenCV's ``IMREAD_COLOR`` does; Pillow's plain ``convert('RGB')``
would clip every value above 255 to white.  32-bit integer (``I`` other than PNG) and float
(``F``) images have no defined 8-bit scale and are refused.  Every other mode -- all ordinary
8-bit JPEG / PNG -- goes through ``convert('RGB')`` exactly as before (bit-identical).

Example::

    >>> from robustbench_sys.noises import get
    >>> rgb = get("decoder/pil")(open("cat.jpg", "rb").read())
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np

from robustbench_sys.noises.registry import register


def _pil_versions() -> dict:
    import PIL
    from PIL import features

    return {"Pillow": PIL.__version__, "libjpeg-turbo": features.version("libjpeg_turbo")}


MAX_PIXELS_ENV = "ROBUSTBENCH_SYS_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 64_000_000
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def max_pixels() -> int:
    """The pixel cap (``ROBUSTBENCH_SYS_MAX_PIXELS``, default 64M); 0 = none."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV}={raw!r}: not an integer (pixels; 0 = no cap)") from None
    return max(0, value)


def _check_pixels(w: int, h: int) -> None:
    cap = max_pixels()
    if cap and w * h > cap:
        raise OSError(f"image is {w}x{h} = {w * h:,} pixels, above the cap of {cap:,} "
                      f"(set {MAX_PIXELS_ENV} to raise it)")


def _unidentified(data: bytes) -> OSError:
    if not data:
        return OSError("not an image: empty file (0 bytes)")
    head = data[:64].lstrip()
    kind = " (an HTML/XML page?)" if head[:1] == b"<" else ""
    return OSError(f"not an image format Pillow can read{kind}: {len(data):,} bytes starting {data[:16]!r}")


def _pil_open(data: bytes):
    """``Image.open`` on ``data`` (header only) with the pixel cap checked; clear errors."""
    from PIL import Image

    try:
        with warnings.catch_warnings():   # the cap below is ours; Pillow's bomb warning is noise here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise OSError(f"refused by Pillow's decompression-bomb limit ({e})") from None
    except Image.UnidentifiedImageError:
        raise _unidentified(data) from None
    try:
        _check_pixels(*im.size)
    except BaseException:
        im.close()
        raise
    return im


def _header_pixel_check(data: bytes) -> None:
    """The pixel cap for non-Pillow decoders: size from the header where Pillow can read one."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                size = im.size
    except Image.DecompressionBombError as e:
        raise OSError(f"refused by Pillow's decompression-bomb limit ({e})") from None
    except Exception:   # not identifiable by Pillow: the decoder reports it
        return
    _check_pixels(*size)


def _to_rgb(im) -> np.ndarray:
    """Pillow image (loaded) -> HxWx3 uint8: 16-bit greyscale by its high byte, the rest by
    ``convert('RGB')`` (see the module doc)."""
    if im.mode in _SIXTEEN_BIT or (im.mode == "I" and im.format == "PNG"):
        a = np.asarray(im)
        if a.dtype.kind not in "ui":   # pragma: no cover - defensive
            raise OSError(f"16-bit image (mode {im.mode}) came out as {a.dtype}")
        grey = (a.astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if im.mode in ("I", "F"):
        raise OSError(f"{'32-bit integer' if im.mode == 'I' else '32-bit float'} image (mode {im.mode}): no "
                      "defined 8-bit scale; save it as an 8-bit (or 16-bit PNG) image")
    return np.asarray(im.convert("RGB"))


@register("decoder", "pil",
          params={"library": "Pillow", "idct": "libjpeg-turbo default (islow)", "exif_orientation": False},
          versions=_pil_versions)
def decode_pil(data: bytes) -> np.ndarray:
    """Pillow ``Image.open(...).convert('RGB')``: torchvision's and timm's default loader."""
    with _pil_open(data) as im:
        im.load()  # raises OSError on truncated data instead of returning a grey tail
        return _to_rgb(im)


# =========================================================================== other decoders
# Each decoder below is a distinct implementation of the same JPEG standard; the
# differences against ``decoder/pil`` (islow IDCT, libjpeg's "fancy" triangular chroma
# upsampling) are what ImageNet-S and SysNoise measure.  Libraries are imported lazily.
from functools import cache, lru_cache  # noqa: E402


def _decode_error(name: str, e: Exception) -> OSError:
    return OSError(f"decoder/{name}: cannot decode image data ({type(e).__name__}: {e})")


# --------------------------------------------------------------------------- OpenCV
def _cv2_available() -> str | None:
    try:
        import cv2  # noqa: F401
    except ImportError as e:  # pragma: no cover - cv2 is a core dependency
        return f"OpenCV is not importable ({e}); pip install opencv-python-headless"
    return None


@cache
def _cv2_versions() -> dict:
    import cv2

    jpeg = next((ln.split(":", 1)[1].strip() for ln in cv2.getBuildInformation().splitlines()
                 if ln.strip().startswith("JPEG:")), "unknown")
    return {"opencv": cv2.__version__, "libjpeg": jpeg}


@register("decoder", "opencv",
          params={"library": "OpenCV", "call": "cv2.imdecode(IMREAD_COLOR) + BGR2RGB",
                  "idct": "libjpeg-turbo default (islow)", "exif_orientation": True},
          available=_cv2_available, versions=_cv2_versions)
def decode_opencv(data: bytes) -> np.ndarray:
    """OpenCV ``cv2.imdecode(buf, IMREAD_COLOR)`` then BGR->RGB.

    Unlike ``decoder/pil`` it applies the EXIF orientation tag (OpenCV's default for
    ``IMREAD_COLOR``), so photos with an orientation tag come out rotated; greyscale is
    replicated to three channels and alpha is dropped, as OpenCV does.
    """
    _header_pixel_check(data)
    import cv2

    buf = np.frombuffer(data, np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise OSError("decoder/opencv: cv2.imdecode could not decode the image data")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------- TurboJPEG
@lru_cache(maxsize=1)
def _turbojpeg():
    from turbojpeg import TurboJPEG

    return TurboJPEG()


def _turbojpeg_available() -> str | None:
    try:
        import turbojpeg  # noqa: F401
    except ImportError as e:
        return f"PyTurboJPEG not installed ({e}); pip install 'robustbench-sys[decoders]'"
    try:
        _turbojpeg()
    except Exception as e:  # the wrapper raises RuntimeError/OSError when libturbojpeg is missing
        return f"libturbojpeg not loadable ({str(e).splitlines()[0]}); apt-get install libturbojpeg0"
    return None


@cache
def _turbojpeg_versions() -> dict:
    import subprocess
    from importlib.metadata import version

    lib = "unknown"
    try:
        lib = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libturbojpeg0"], capture_output=True,
                             text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"PyTurboJPEG": version("PyTurboJPEG"), "libturbojpeg": lib}


@register("decoder", "turbojpeg-fast",
          params={"library": "libjpeg-turbo (TurboJPEG API)", "flags": "TJFLAG_FASTDCT|TJFLAG_FASTUPSAMPLE",
                  "idct": "ifast (integer, less accurate)", "chroma_upsampling": "replication (no fancy upsampling)",
                  "exif_orientation": False, "cmyk": "unsupported (OSError)"},
          available=_turbojpeg_available, versions=_turbojpeg_versions)
def decode_turbojpeg_fast(data: bytes) -> np.ndarray:
    """libjpeg-turbo's TurboJPEG API with the speed flags ``TJFLAG_FASTDCT | TJFLAG_FASTUPSAMPLE``:
    the fast integer IDCT and plain replication of subsampled chroma (what speed-tuned
    loaders such as FFCV/DALI CPU fallbacks pick).  JPEG only; greyscale comes out as RGB."""
    _header_pixel_check(data)
    import turbojpeg as tj

    try:
        return np.ascontiguousarray(_turbojpeg().decode(data, pixel_format=tj.TJPF_RGB,
                                                        flags=tj.TJFLAG_FASTDCT | tj.TJFLAG_FASTUPSAMPLE))
    except (OSError, ValueError, RuntimeError) as e:  # PyTurboJPEG raises OSError for bad data
        raise _decode_error("turbojpeg-fast", e) from None


# --------------------------------------------------------------------------- PIL draft
#: the short side pil-draft keeps at least (the usual ImageNet resize target)
DRAFT_SHORT_SIDE = 256


def _make_pil_draft(short_side: int):
    def decode(data: bytes) -> np.ndarray:
        with _pil_open(data) as im:
            if im.format == "JPEG":
                # JPEG draft: largest DCT scale 1/1, 1/2, 1/4 or 1/8 keeping both sides >= short_side
                im.draft("RGB", (short_side, short_side))
            im.load()
            return _to_rgb(im)

    decode.__doc__ = (f"Pillow with ``Image.draft('RGB', ({short_side}, {short_side}))`` before loading: libjpeg "
                      f"scales in the DCT domain by the largest of 1/2, 1/4, 1/8 that keeps both sides >= "
                      f"{short_side} (as ``Image.thumbnail`` does), so large JPEGs come out smaller and "
                      "softer; images whose short side is < 2x that decode exactly as ``decoder/pil``.")
    return decode


register("decoder", "pil-draft",
         params={"library": "Pillow", "draft_short_side": DRAFT_SHORT_SIDE,
                 "scales": "1, 1/2, 1/4, 1/8 (libjpeg scale_denom)", "exif_orientation": False},
         versions=_pil_versions)(_make_pil_draft(DRAFT_SHORT_SIDE))


# --------------------------------------------------------------------------- FFmpeg
def _av_available() -> str | None:
    try:
        import av  # noqa: F401
    except ImportError as e:
        return f"PyAV not installed ({e}); pip install 'robustbench-sys[decoders]'"
    return None


@cache
def _av_versions() -> dict:
    import av

    out = {"av": av.__version__}
    out.update({k: ".".join(map(str, v)) for k, v in av.library_versions.items()
                if k in ("libavcodec", "libavformat", "libavutil", "libswscale")})
    return out


@register("decoder", "ffmpeg",
          params={"library": "FFmpeg (PyAV)", "decoder": "mjpeg", "demuxer": "jpeg_pipe",
                  "conversion": "swscale to rgb24, SWS_BILINEAR (PyAV default), colorspace/range from the "
                                "frame (BT.601, full 'JPEG' range)",
                  "exif_orientation": False},
          available=_av_available, versions=_av_versions)
def decode_ffmpeg(data: bytes) -> np.ndarray:
    """FFmpeg's own ``mjpeg`` decoder through PyAV: the bytes are opened as a one-frame
    ``jpeg_pipe`` stream (other formats are probed by FFmpeg), decoded to the stored YUV
    layout (e.g. ``yuvj420p``) and converted to ``rgb24`` by swscale with PyAV's default
    flags (SWS_BILINEAR chroma upsampling, no ACCURATE_RND): this is how video-style
    pipelines (PyAV, decord, torchvision.io video) turn JPEG frames into RGB."""
    _header_pixel_check(data)
    import av

    fmt = "jpeg_pipe" if data[:2] == b"\xff\xd8" else None
    try:
        with av.open(io.BytesIO(data), mode="r", format=fmt) as c:
            frame = next(c.decode(video=0))
            return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
    except (av.FFmpegError, StopIteration, IndexError) as e:
        raise _decode_error("ffmpeg", e) from None


# --------------------------------------------------------------------------- nvJPEG
def _nvjpeg_available() -> str | None:
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError as e:  # pragma: no cover - core dependencies
        return f"torch/torchvision not importable ({e})"
    if not torch.cuda.is_available():
        return "nvJPEG needs a CUDA GPU (torch.cuda.is_available() is False)"
    return None


def _nvjpeg_versions() -> dict:
    import torch
    import torchvision

    return {"torchvision": torchvision.__version__, "torch": torch.__version__, "cuda": str(torch.version.cuda)}


@register("decoder", "nvjpeg",
          params={"library": "nvJPEG (torchvision.io.decode_jpeg, device='cuda')", "exif_orientation": False},
          available=_nvjpeg_available, versions=_nvjpeg_versions, tags={"device": "cuda"})
def decode_nvjpeg(data: bytes) -> np.ndarray:
    """NVIDIA nvJPEG on the GPU via ``torchvision.io.decode_jpeg(..., device='cuda')``
    (DALI's decoder backend), result copied back to host memory.  JPEG only.  Tagged
    ``device = "cuda"``: the evaluator runs a pipeline with it in its own process (CUDA does
    not work in forked preprocessing workers), on a CPU run as on a ``--device cuda`` one."""
    _header_pixel_check(data)
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    reason = _nvjpeg_available()
    if reason:
        raise RuntimeError(f"decoder/nvjpeg: {reason}")
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        img = decode_jpeg(buf, mode=ImageReadMode.RGB, device="cuda")
    except RuntimeError as e:
        raise _decode_error("nvjpeg", e) from None
    return img.permute(1, 2, 0).contiguous().cpu().numpy()
