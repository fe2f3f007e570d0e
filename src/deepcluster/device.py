"""Where and in what precision the network runs: the device a ``--device`` setting names, and the autocast dtype
of a ``--precision`` setting there."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .settings import ConfigError, RuntimeSettings


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto")
    if name == "cuda":  # under torchrun each process has its own GPU (distributed.setup picked it)
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def keep_freed_memory() -> bool:
    """Let the C library's malloc keep the large CPU buffers torch frees and hand them out again, instead of
    returning each one to the OS and faulting it back in at the next batch (glibc's default for blocks of over
    32 MiB: the activations of a batch at 224 px are hundreds of MB). Training AlexNet on a CPU spent a quarter of
    its time in those page faults, and its peak memory grew by half (``benchmarks/allocator.py``). CUDA memory is
    not touched. The ``deepcluster`` command calls it first; call it from Python to get the same. Malloc settings
    of the user's own (``GLIBC_TUNABLES``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``) win: it then
    does nothing. Returns whether it applied (glibc's ``mallopt``; False elsewhere)."""
    import ctypes
    import os

    if any(v in os.environ for v in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim_threshold, mmap_threshold, most = -1, -3, 2 ** 31 - 1  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, int max
    return bool(mallopt(mmap_threshold, most)) & bool(mallopt(trim_threshold, most))


def amp_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of a ``precision`` setting on ``device`` (None: full precision). "auto" is bf16 on CUDA
    GPUs that have it (fp16 on older ones) and full precision on CPUs, where bf16 convolutions are mostly slower."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return AMP_DTYPES.get(precision)


def int8_dot_products() -> bool:
    """Whether this CPU multiplies int8 in hardware (AVX-512 VNNI or AMX, as PyTorch detects them): there int8
    inference is several times fp32; without them (plain AVX2) it gains less and 16-bit intermediate sums can
    saturate."""
    return "x86" in torch.backends.quantized.supported_engines and any(
        getattr(torch.cpu, f, lambda: False)() for f in ("_is_vnni_supported", "_is_amx_tile_supported"))


def bf16_products() -> bool:
    """Whether this CPU multiplies bf16 in hardware through PyTorch's oneDNN kernels (AMX tiles, or AVX-512 BF16
    dot products as on AMD's Zen 4): there AlexNet's inference pass at 224 px is 2.9x fp32 with AMX and 1.9x with
    AVX-512 BF16 (docs/scaling.md); elsewhere bf16 is emulated and not worth its rounding."""
    native = any(getattr(torch.cpu, f, lambda: False)() for f in ("_is_amx_tile_supported",
                                                                   "_is_avx512_bf16_supported"))
    return native and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_extraction(cfg: RuntimeSettings, device: torch.device) -> None:
    """Refuse an ``extract_precision`` this machine cannot run (before anything is written)."""
    if cfg.extract_precision != "int8":
        return
    if device.type != "cpu":
        raise ConfigError(f"--extract-precision int8 runs on CPUs only, and this run is on {device.type}: use bf16, "
                          "fp16 or auto there")
    if "x86" not in torch.backends.quantized.supported_engines:
        raise ConfigError("--extract-precision int8 needs PyTorch's x86 quantised kernels, which this build lacks "
                          "(an x86-64 CPU): use fp32 or auto")


INT8_FROM = 10_000  # images: below, an extraction pass takes seconds, and int8's noise, which whitening amplifies in
# the weak components, moved the clusterings of runs of a few dozen images (docs/scaling.md)


def extraction_dtype(cfg: RuntimeSettings, device: torch.device, images: int) -> Optional[torch.dtype]:
    """The precision of the per-epoch clustering's extraction pass for a run's ``extract_precision`` and
    ``precision`` over ``images`` images: ``torch.qint8`` (the network quantised to int8, CPUs only), an autocast
    dtype, or None (fp32). "auto" on CPUs is int8 on those that multiply int8 in hardware, from :data:`INT8_FROM`
    images (docs/scaling.md measures it: 3.5-7.7x fp32 here, and clusterings that agree with fp32's more closely
    than two k-means seeds' do), else bf16 on those that multiply bf16 in hardware (:func:`bf16_products`; no
    calibration, a quarter of int8's error), else the training passes' precision, as on GPUs. "int8" on a GPU is
    the training precision (``train`` refuses to start so; a run resumed there goes on)."""
    extract = cfg.extract_precision
    auto_int8 = extract == "auto" and images >= INT8_FROM and int8_dot_products()
    if device.type == "cpu" and (extract == "int8" or auto_int8):
        return torch.qint8
    dtype = amp_dtype(cfg.precision if extract in ("auto", "training", "int8") else extract, device)
    if extract == "auto" and device.type == "cpu" and dtype is None and bf16_products():
        return torch.bfloat16
    return dtype


def kept_dtype(cfg: RuntimeSettings, device: torch.device) -> Optional[torch.dtype]:
    """The precision of the passes whose features a run keeps and evaluates: epoch 1's over the random network,
    the final clustering's, the closing evaluation's, and the exports' (which place images in that clustering).
    The extraction's (for any number of images) when it is a float type, so that these match the epochs'
    clusterings; the training passes' when it is int8, whose error would show in the evaluation's figures."""
    dtype = extraction_dtype(cfg, device, 0)
    return amp_dtype(cfg.precision, device) if dtype is torch.qint8 else dtype


PRECISION_SETTINGS = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.qint8: "int8"}


def settled_precisions(cfg: RuntimeSettings, device: torch.device, images: int) -> dict:
    """``cfg``'s ``precision`` and ``extract_precision`` settled for ``device`` and ``images`` training images:
    "auto" and "training" replaced by the fp32, bf16, fp16 or int8 they stand for on this machine, so that a run's
    ``config.yaml`` says what its figures were computed in (two CPUs can differ: int8 with VNNI or AMX, bf16 with
    AMX or AVX-512 BF16), and the exports that read it place images in the same precision."""
    return {"precision": PRECISION_SETTINGS[amp_dtype(cfg.precision, device)],
            "extract_precision": PRECISION_SETTINGS[extraction_dtype(cfg, device, images)]}


@dataclass(frozen=True)
class Precisions:
    """A run's three precisions on its device, resolved once: the training passes' autocast dtype (``training``);
    each epoch's clustering pass from epoch 2 on (``extraction``: may be ``torch.qint8``); and the passes whose
    features the run keeps and evaluates (``kept``: epoch 1's, the final clustering's, the closing evaluation's,
    the exports')."""
    training: Optional[torch.dtype]
    extraction: Optional[torch.dtype]
    kept: Optional[torch.dtype]

    @classmethod
    def of(cls, cfg: RuntimeSettings, device: torch.device, images: int) -> "Precisions":
        return cls(amp_dtype(cfg.precision, device), extraction_dtype(cfg, device, images), kept_dtype(cfg, device))


def precision_name(dtype: Optional[torch.dtype]) -> str:
    """How a run names an extraction dtype: "int8", "fp32" (None), "bfloat16", "float16"."""
    return "int8" if dtype is torch.qint8 else "fp32" if dtype is None else str(dtype).replace("torch.", "")


def named_dtype(name: str) -> Optional[torch.dtype]:
    """The float dtype :func:`precision_name` named ``name``."""
    return {"fp32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
