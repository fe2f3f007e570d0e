"""The paper's fixed input filter: grayscale, then two Sobel edge kernels. Nothing here is trained."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Sobel(nn.Module):
    """``(B, C, H, W)`` -> ``(B, 2, H, W)``: mean over channels (grayscale), then the horizontal and vertical
    Sobel responses. The kernels are buffers, so no optimiser ever sees them."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.register_buffer("gray", torch.full((1, in_channels, 1, 1), 1.0 / in_channels))
        gx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        self.register_buffer("edges", torch.stack([gx, gx.t()]).unsqueeze(1))  # (2, 1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, self.gray), self.edges, padding=1)
