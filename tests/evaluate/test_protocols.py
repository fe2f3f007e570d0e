"""`deepcluster eval` and `deepcluster compare` end to end on generated images."""
import json

import pytest
from PIL import Image

from deepcluster.cli import main

COMMON = ["--device", "cpu"]


@pytest.fixture
def runs(image_folder, tmp_path):
    base = ["--data", str(image_folder), "--val-data", str(image_folder), "--image-size", "32", "--k", "6",
            "--batch-size", "16", "--pca-dim", "16", "--eval-seeds", "1", "--epochs", "1"] + COMMON
    assert main(["train", "--out", str(tmp_path / "dc")] + base) == 0
    assert main(["train", "--out", str(tmp_path / "sup"), "--supervised"] + base) == 0
    return tmp_path / "dc", tmp_path / "sup"


def test_every_protocol_and_compare(runs, image_folder, tmp_path, capsys):
    dc, sup = runs
    opts = ["--epochs", "1", "--steps", "20", "--queries", "20", "--target-data", "digits"] + COMMON
    assert main(["eval", "all", "--run", str(dc)] + opts) == 0
    assert main(["eval", "all", "--run", str(dc), "--random-init"] + opts) == 0
    assert main(["eval", "probe", "knn", "--checkpoint", str(sup / "checkpoint.pt")] + opts) == 0
    for name in ("probe", "knn", "cluster", "transfer", "class-retrieval", "copies"):
        res = json.loads((dc / "eval" / f"{name}.json").read_text())
        assert res["protocol"] == name and not res["random_init"]
        assert json.loads((dc / "eval" / f"{name}-random.json").read_text())["random_init"]
    probe = json.loads((dc / "eval" / "probe.json").read_text())
    assert all(0 <= probe[f"conv{i}"] <= 1 for i in range(1, 6))
    assert probe["views"] == "centre" and 0 <= probe["pixels"] <= 1  # small data: centre views, pixel floor
    assert 0 <= json.loads((sup / "eval" / "probe.json").read_text())["network"] <= 1
    cl = json.loads((dc / "eval" / "cluster.json").read_text())
    assert cl["k"] == 3 and cl["pseudo_labels"]["clusters"] == 6 and 0 <= cl["l2"]["nmi"] <= 1
    assert "pseudo_labels" not in json.loads((dc / "eval" / "cluster-random.json").read_text())
    tr = json.loads((dc / "eval" / "transfer.json").read_text())
    assert tr["target"] == "digits" and 0 <= tr["fc"] <= 1 and 0 <= tr["all"] <= 1
    assert not (dc / "eval" / "instance.json").exists()  # 'all' skips it: no --ground-truth

    # the same protocols from Python: a registry of protocols, each with the options it reads; unknown ones refused
    from dataclasses import fields

    from deepcluster.config import ConfigError
    from deepcluster.evaluate.protocols import PROTOCOLS, EvalOptions, load_for_eval, run_protocol

    options = {f.name for f in fields(EvalOptions)}
    assert all(set(p.reads) <= options and (p.needs is None or p.needs in p.reads) for p in PROTOCOLS.values())
    saved = load_for_eval(dc, device="cpu")
    with pytest.raises(ConfigError, match="no protocol option knn_neighbours"):
        run_protocol("knn", saved, knn_neighbours=5)
    with pytest.raises(ConfigError, match="unknown protocol 'knnn'"):
        run_protocol("knnn", saved)
    res = run_protocol("knn", saved, knn_k=3, progress=False)
    assert res["protocol"] == "knn" and res["k"] == 3 and 0 <= res["top1"] <= 1
    rt = json.loads((dc / "eval" / "class-retrieval.json").read_text())
    assert rt["queries"] == 20 and 0 < rt["map"] <= 1 and rt["layer"] == "conv5"
    capsys.readouterr()
    out_md = tmp_path / "table.md"
    assert main(["compare", str(dc), str(sup), "--out", str(out_md)]) == 0
    table = capsys.readouterr().out
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| features | conv1 |") and "conv6" not in lines[0]  # pixels is no layer
    assert [line.split(" | ")[0] for line in lines[1:]] == ["| random init (small)", "| DeepCluster v1 (dc)",
                                                      "| supervised (sup)"]
    assert out_md.read_text().strip() == table.strip()
    assert "Probes: centre views, 1 epochs." in table and "A linear classifier on the pixels" in table
    assert "The supervised network's own classifier" in table


@pytest.mark.parametrize("args,message", [
    (["knn", "--layer", "conv9"], "layer 'conv9' does not exist in small: choose one of conv1"),
    (["class-retrieval", "--layer", "fc"], "retrieval reads a conv layer's map"),
    (["copies", "--layer", "fc"], "copies reads a conv layer's map"),
    (["probe", "--data", "fashion-mnist"], "fashion-mnist images are 28 px"),
    (["cluster", "--data", "FLAT"], "needs a labelled test split: pass --val-data"),
    (["probe", "--data", "FLAT", "--val-data", "FLAT"], "needs labels"),
])
def test_bad_eval_input_gives_one_clear_line(runs, tmp_path, capsys, args, message):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (i * 60, 0, 0)).save(flat / f"{i}.png")
    args = [str(flat) if a == "FLAT" else a for a in args]
    capsys.readouterr()
    assert main(["eval"] + args[:1] + ["--run", str(runs[0])] + args[1:] + COMMON) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_transfer_fine_tunes_on_another_dataset_well_above_its_start(runs, tmp_path):
    from deepcluster.evaluate.protocols import load_for_eval, run_protocol

    # a colour network on grey digits: converted, said so, and fine-tuning learns them (10 classes: chance 0.1)
    r = run_protocol("transfer", load_for_eval(runs[0], device="cpu"), steps=120, target_data="digits",
                     progress=False)
    assert "1-channel images of digits (train) are converted to 3 channels" in r["converted"]
    assert (r["images"], r["test_images"]) == (1347, 450) and r["start"] < 0.3
    # (120 steps, two passes at the run's batch of 16: fc 0.38, all 0.58 here; chance is 0.1)
    assert r["fc"] > r["start"] + 0.25 and r["all"] > r["start"] + 0.4, r
    # beside it, the floors on the same split: the network trained there from scratch, a linear classifier on pixels
    assert r["scratch"] > r["start"] + 0.25 and 0.85 < r["pixels"] <= 1, r
    assert r["below"] == [m for m in ("fc", "all") if r[m] < r["pixels"]]
    # each mode chose its lr on the held-out tenth of the training split, never on the test split
    assert (r["fit_images"], r["held_out_images"]) == (1212, 135)
    for mode, fit in r["fits"].items():
        chosen = max(fit["tried"].items(), key=lambda kv: kv[1])
        assert float(chosen[0]) == fit["lr"] and chosen[1] == fit["held_out"], (mode, fit)
    assert r["fits"]["all"]["lr"] in (0.001, 0.01) and r["fits"]["fc"]["lr"] in (0.01, 0.1)
    # a labelled folder alone: every fifth image is held out for testing
    from deepcluster.data import ImageFolder
    from deepcluster.evaluate.transfer import target_datasets

    folder = tmp_path / "target"
    for i in range(20):
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (200 * (i % 2), 50, 9 * i)).save(folder / f"c{i % 2}" / f"{i:02d}.png")
    train, test, facts = target_datasets(str(folder), None, 32, 3, (0.5,) * 3, (0.5,) * 3, "elsewhere")
    files = ImageFolder(folder, 32).files
    assert test.files == files[::5] and sorted(train.files + test.files) == files and facts["converted"] == ""
    assert list(test.targets) == [int(f.parent.name[1]) for f in test.files]


@pytest.mark.parametrize("extra,message", [
    ([], "transfer fine-tunes on another labelled dataset: give --target-data"),
    (["--target-data", "DATA"], "is the data the network was trained on"),
])
def test_transfer_refuses_to_run_on_the_training_data(runs, image_folder, capsys, extra, message):
    extra = [str(image_folder) if a == "DATA" else a for a in extra]
    capsys.readouterr()
    assert main(["eval", "transfer", "--run", str(runs[0])] + extra + COMMON) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_compare_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_supervised_needs_labels(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32)).save(flat / f"{i}.png")
    assert main(["train", "--data", str(flat), "--supervised", "--out", str(tmp_path / "r")] + COMMON) == 2
    assert "--supervised needs labels" in capsys.readouterr().err


def test_a_checkpoint_of_another_architecture_is_refused(runs, tmp_path, capsys):

    from deepcluster.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(runs[0] / "checkpoint.pt")
    state["config"]["arch"] = "alexnet"  # the weights are still the small network's
    state["config"]["image_size"] = 224
    save_checkpoint(tmp_path / "other.pt", state)
    capsys.readouterr()
    assert main(["eval", "knn", "--checkpoint", str(tmp_path / "other.pt")] + COMMON) == 2
    err = capsys.readouterr().err
    assert "do not fit the alexnet network" in err and err.count("\n") == 1

