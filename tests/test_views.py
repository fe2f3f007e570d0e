import torch

from deepcluster.views import center_view, random_resized_crop_boxes, train_view


def test_center_view_crops_the_middle_and_normalises():
    x = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    x[:, :, 2:6, 2:6] = 255
    v = center_view(x, 4, (0.5,), (0.5,))
    assert v.shape == (2, 1, 4, 4) and torch.allclose(v, torch.ones_like(v))


def test_crop_boxes_respect_scale_and_fit_the_image():
    g = torch.Generator().manual_seed(0)
    b = random_resized_crop_boxes(5000, (0.25, 1.0), generator=g)
    cx, cy, w, h = b.unbind(1)
    area = w * h
    assert (area >= 0.25 - 1e-5).all() and (area <= 1 + 1e-5).all()
    assert (cx - w / 2 >= -1e-6).all() and (cx + w / 2 <= 1 + 1e-6).all()
    assert (cy - h / 2 >= -1e-6).all() and (cy + h / 2 <= 1 + 1e-6).all()


def test_full_crop_without_flip_is_the_image():
    x = torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    # scale 1 and ratio close to 1 are the only boxes that fit: the whole image
    v = train_view(x, 16, (0.0,), (1.0,), scale=1.0, flip=False, generator=g)
    assert torch.allclose(v, x.float() / 255, atol=0.03)


def test_flip_mirrors_half_the_batch():
    x = torch.randint(0, 256, (400, 1, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    v = train_view(x, 8, (0.0,), (1.0,), scale=1.0, flip=True, generator=g)
    ref = x.float() / 255
    same = torch.isclose(v, ref, atol=0.03).flatten(1).all(1)
    mirrored = torch.isclose(v, ref.flip(-1), atol=0.03).flatten(1).all(1)
    assert (same | mirrored).all() and 150 < mirrored.sum() < 250


def test_train_view_is_reproducible_from_its_generator():
    x = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)
    a = train_view(x, 16, (0.5,) * 3, (0.2,) * 3, generator=torch.Generator().manual_seed(3))
    b = train_view(x, 16, (0.5,) * 3, (0.2,) * 3, generator=torch.Generator().manual_seed(3))
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b)


def test_standardising_the_crop_equals_cropping_the_standardised_image():
    """train_view standardises after the bilinear crop: the same views as standardising the whole image first."""
    import torch.nn.functional as F

    from deepcluster.views import normalize

    x = torch.randint(0, 256, (64, 3, 40, 40), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    got = train_view(x, 32, mean, std, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws, replayed: boxes, then flips
    box = random_resized_crop_boxes(64, (0.08, 1.0), generator=g)
    sx = box[:, 2] * torch.where(torch.rand(64, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(64, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx, box[:, 0] * 2 - 1
    theta[:, 1, 1], theta[:, 1, 2] = box[:, 3], box[:, 1] * 2 - 1
    grid = F.affine_grid(theta, (64, 3, 32, 32), align_corners=False)
    want = F.grid_sample(normalize(x, mean, std), grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(got, want, atol=1e-5)
    ref = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(normalize(x, mean, std), ref, atol=1e-5)


def test_the_network_input_is_the_centre_view_laid_out_channels_last():
    from deepcluster.views import centre_input, normalize

    x = torch.randint(0, 256, (4, 3, 12, 12), dtype=torch.uint8)
    v = centre_input(8, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4))(x)
    assert v.is_contiguous(memory_format=torch.channels_last) and v.dtype == torch.float32
    assert torch.equal(v, center_view(x, 8, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4)))
    y = x.float()
    assert not torch.equal(normalize(y, (0.4,) * 3, (0.2,) * 3), y) and torch.equal(y, x.float())  # y kept
