"""Networks: ``build_model(arch, in_channels, image_size, sobel)``."""
from .convnets import BUILDERS
from .net import DeepClusterNet, soft_reset
from .sobel import Sobel


def build_model(arch: str, in_channels: int, image_size: int, sobel: bool = True, n_classes: int = 1):
    return DeepClusterNet(arch, in_channels, image_size, sobel, n_classes)


__all__ = ["BUILDERS", "DeepClusterNet", "Sobel", "build_model", "soft_reset"]
