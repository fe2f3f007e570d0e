"""faiss, imported when first needed, and its exact L2 index on the CPU or a GPU: what k-means and PIC search with.

Both estimators take ``device``: "auto" (a GPU when one is usable, else the CPU), "cpu" or "cuda" (a GPU, or a
ValueError that says why there is none)."""
from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda")


def faiss_module():
    import faiss  # imported lazily: importing faiss costs start-up time for commands that never cluster
    return faiss


def gpu_available() -> bool:
    """Whether faiss itself can run on a GPU (a faiss built with GPU support, and a GPU)."""
    faiss = faiss_module()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"unknown clustering device {device!r}: choose one of {', '.join(DEVICES)}")


def flat_index(d: int, gpu: bool):
    """An exact L2 index of ``d``-dimensional vectors, on the current CUDA device with ``gpu``."""
    faiss = faiss_module()
    if gpu:
        import torch

        res = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return faiss.GpuIndexFlatL2(res, d, cfg)
    return faiss.IndexFlatL2(d)
