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
