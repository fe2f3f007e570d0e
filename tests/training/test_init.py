"""--init: a run starts from weights it is given (a run of ours, the reference's checkpoints, torchvision's
vgg16_bn), with a fresh head; --epochs 0 clusters the data with the network as it is."""
import dataclasses
import json

import pytest
import torch

from deepcluster import ConfigError, train
from deepcluster.checkpoint import load_checkpoint


def _body(state: dict) -> dict:
    return {k: v for k, v in state["model"].items() if not k.startswith("head.")}


def test_a_run_starts_from_the_weights_it_is_given_and_epochs_0_keeps_them(tiny_config, tmp_path):
    cfg = dataclasses.replace(tiny_config, epochs=1, report=False)
    train(cfg, tmp_path / "first", quiet=True)
    first = load_checkpoint(tmp_path / "first" / "checkpoint.pt")
    # --epochs 0: the network as it is, clustered, evaluated, saved
    train(dataclasses.replace(cfg, epochs=0, init=str(tmp_path / "first")), tmp_path / "as-is", quiet=True)
    as_is = load_checkpoint(tmp_path / "as-is" / "checkpoint.pt")
    assert as_is["epoch"] == 0 and as_is["clustering"] is not None
    for k, v in _body(first).items():
        assert torch.equal(v, as_is["model"][k]), k
    assert (tmp_path / "as-is" / "eval.json").is_file() and (tmp_path / "as-is" / "assignments.npy").is_file()
    # without --init, epochs 0 is the seeded random network: not the first run's weights
    train(dataclasses.replace(cfg, epochs=0), tmp_path / "random", quiet=True)
    rand = load_checkpoint(tmp_path / "random" / "checkpoint.pt")
    assert not torch.equal(rand["model"]["features.0.weight"], first["model"]["features.0.weight"])
    # one epoch on from the first run: the random-init baseline is still the random network, not the start
    train(dataclasses.replace(cfg, init=str(tmp_path / "first")), tmp_path / "on", quiet=True)
    ev_first, ev_on = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("first", "on"))
    pick = lambda ev: [r for r in ev["results"] if r["features"] == "random-init"]
    assert pick(ev_on) == pick(ev_first)


def test_weights_that_do_not_fit_get_one_line(tiny_config, tmp_path):
    cfg = dataclasses.replace(tiny_config, epochs=1, report=False)
    train(cfg, tmp_path / "first", quiet=True)
    with pytest.raises(ConfigError, match="--arch alexnet does not fit the weights"):
        train(dataclasses.replace(cfg, arch="alexnet", init=str(tmp_path / "first")), tmp_path / "x", quiet=True)
    with pytest.raises(ConfigError, match="--image-size 64 does not fit"):
        train(dataclasses.replace(cfg, image_size=64, init=str(tmp_path / "first")), tmp_path / "x", quiet=True)
    (tmp_path / "bad.pt").write_bytes((tmp_path / "first" / "checkpoint.pt").read_bytes()[:-500])
    with pytest.raises(ConfigError, match="damaged, cut short") as e:
        train(dataclasses.replace(cfg, init=str(tmp_path / "bad.pt")), tmp_path / "x", quiet=True)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="does not exist"):
        train(dataclasses.replace(cfg, init=str(tmp_path / "nothing")), tmp_path / "x", quiet=True)
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_torchvision_vgg16_bn_fits_our_vgg16_and_its_alexnet_fits_nothing(tmp_path):
    import torchvision

    from deepcluster.models import DeepClusterNet
    from deepcluster.network import start_from
    from deepcluster.state import RunState

    tv = torchvision.models.vgg16_bn()
    torch.save(tv.state_dict(), tmp_path / "vgg16_bn.pth")
    init = RunState.from_weights(tmp_path / "vgg16_bn.pth")
    assert init.config.arch == "vgg16" and init.config.sobel is False and init.config.image_size == 224
    ours = DeepClusterNet("vgg16", 3, 224, sobel=False)
    start_from(ours, init, "vgg16_bn.pth")
    x = torch.randn(2, 3, 224, 224)
    tv.eval(), ours.eval()
    with torch.no_grad():  # the same convs and the same first two fc layers: the same fc7 activations
        want = tv.classifier[:5](torch.flatten(tv.avgpool(tv.features(x)), 1))
        got = torch.relu(ours.classifier(torch.flatten(ours.features(x), 1)))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "alexnet.pth")
    with pytest.raises(ConfigError, match="fits neither our alexnet nor our vgg16"):
        RunState.from_weights(tmp_path / "alexnet.pth")
