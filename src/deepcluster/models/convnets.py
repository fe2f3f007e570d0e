"""Convolutional bodies and fully connected blocks: the paper's AlexNet and VGG-16 (with BatchNorm) and a small
network of the same shape for 28-64 px images. Each builder returns ``(features, classifier, feature_dim)``
where ``classifier`` ends with the last Linear layer, *before* its ReLU (DeepCluster clusters that output)."""
from __future__ import annotations

import torch
import torch.nn as nn


def conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, pad: int | None = None) -> list[nn.Module]:
    pad = k // 2 if pad is None else pad
    return [nn.Conv2d(cin, cout, k, stride, pad), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def fc_block(din: int, width: int) -> nn.Sequential:
    """Dropout-Linear-ReLU-Dropout-Linear: the paper's fc6/fc7, without the final ReLU."""
    return nn.Sequential(nn.Dropout(0.5), nn.Linear(din, width), nn.ReLU(inplace=True),
                         nn.Dropout(0.5), nn.Linear(width, width))


def _flat_dim(features: nn.Module, cin: int, size: int) -> int:
    with torch.no_grad():
        return features(torch.zeros(1, cin, size, size)).numel()


def alexnet(cin: int, size: int = 224):
    """AlexNet with BatchNorm: 96-256-384-384-256 convs, three 3/2 max-pools, fc 4096-4096."""
    f = nn.Sequential(
        *conv_bn_relu(cin, 96, 11, 4, 2), nn.MaxPool2d(3, 2),
        *conv_bn_relu(96, 256, 5), nn.MaxPool2d(3, 2),
        *conv_bn_relu(256, 384, 3), *conv_bn_relu(384, 384, 3), *conv_bn_relu(384, 256, 3),
        nn.MaxPool2d(3, 2))
    return f, fc_block(_flat_dim(f, cin, size), 4096), 4096


def vgg16(cin: int, size: int = 224):
    """VGG-16 with BatchNorm: 13 3x3 convs in five stages, fc 4096-4096."""
    layers, c = [], cin
    for stage in ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)):
        for w in stage:
            layers += conv_bn_relu(c, w, 3)
            c = w
        layers.append(nn.MaxPool2d(2, 2))
    f = nn.Sequential(*layers)
    return f, fc_block(_flat_dim(f, cin, size), 4096), 4096


def small(cin: int, size: int = 28):
    """AlexNet's shape scaled to 28-64 px: five BatchNorm convs (32-64-128-128-64), max-pools after conv1,
    conv2 and conv5, fc 512-512. About 18 MFLOP per 28 px image, so an epoch of 60,000 images takes about a
    minute on two CPU cores."""
    f = nn.Sequential(
        *conv_bn_relu(cin, 32, 5), nn.MaxPool2d(2),
        *conv_bn_relu(32, 64, 3), nn.MaxPool2d(2),
        *conv_bn_relu(64, 128, 3), *conv_bn_relu(128, 128, 3), *conv_bn_relu(128, 64, 3),
        nn.MaxPool2d(2))
    return f, fc_block(_flat_dim(f, cin, size), 512), 512


BUILDERS = {"small": small, "alexnet": alexnet, "vgg16": vgg16}
