"""Decoder noise: the same JPEG bytes through different decoders.

Every function has the ``decode`` stage signature ``fn(data: bytes) -> HxWx3 uint8 RGB``.
Greyscale, CMYK and alpha images are converted to RGB as the decoder's library does.

Example::

    >>> from robustbench_sys.noises import get
    >>> rgb = get("decoder/pil")(open("cat.jpg", "rb").read())
"""

from __future__ import annotations

import io

import numpy as np

from robustbench_sys.noises.registry import register


def _pil_versions() -> dict:
    import PIL
    from PIL import features

    return {"Pillow": PIL.__version__, "libjpeg-turbo": features.version("libjpeg_turbo")}


@register("decoder", "pil",
          params={"library": "Pillow", "idct": "libjpeg-turbo default (islow)", "exif_orientation": False},
          versions=_pil_versions)
def decode_pil(data: bytes) -> np.ndarray:
    """Pillow ``Image.open(...).convert('RGB')``: torchvision's and timm's default loader."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()  # raises OSError on truncated data instead of returning a grey tail
        return np.asarray(im.convert("RGB"))


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
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG":
                # JPEG draft: largest DCT scale 1/1, 1/2, 1/4 or 1/8 keeping both sides >= short_side
                im.draft("RGB", (short_side, short_side))
            im.load()
            return np.asarray(im.convert("RGB"))

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
          available=_nvjpeg_available, versions=_nvjpeg_versions)
def decode_nvjpeg(data: bytes) -> np.ndarray:
    """NVIDIA nvJPEG on the GPU via ``torchvision.io.decode_jpeg(..., device='cuda')``
    (DALI's decoder backend), result copied back to host memory.  JPEG only."""
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
