import json
import re

import pytest

from deepcluster.cli import main


def test_two_epoch_smoke_run_through_the_command_line(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("arch: small\nimage_size: 32\nk: 6\nbatch_size: 16\npca_dim: 16\n")
    rc = main(["train", "--config", str(cfg), "--data", str(image_folder), "--epochs", "2", "--out", str(out),
               "--device", "cpu", "--eval-seeds", "1", "--no-sobel"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| trained " in text and "| pixels " in text and "2 epochs" in text
    # the time the whole command took, which is more than the epochs' parts it also gives
    found = re.search(r"2 epochs: ([\d.]+) min of extraction, clustering and training; this command ([\d.]+) min", text)
    assert found and float(found[2]) >= float(found[1])
    saved = (out / "config.yaml").read_text()
    assert "k: 6" in saved and "sobel: false" in saved and "epochs: 2" in saved
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "eval.json").read_text())["k"] == 3
    # a second identical call refuses; --resume on a finished run only reports again
    assert main(["train", "--config", str(cfg), "--data", str(image_folder), "--epochs", "2", "--out", str(out),
                 "--device", "cpu", "--eval-seeds", "1", "--no-sobel"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--data", str(image_folder), "--epochs", "2", "--out", str(out),
                 "--device", "cpu", "--eval-seeds", "1", "--no-sobel", "--resume"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("args,message", [
    (["--arch", "resnet"], "unknown architecture 'resnet': choose one of small, alexnet, vgg16"),
    (["--k", "500"], "lower --k to at most 36"),
    (["--config", "missing.yaml"], "config file missing.yaml does not exist"),
    (["--resume", "--overwrite"], "exclude each other"),
    (["--data", "fashion-mnist", "--data-root", "/nowhere"], "apt-get install dataset-fashion-mnist"),
])
def test_bad_input_gives_one_clear_line(image_folder, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    rc = main(["train", "--data", str(image_folder), "--out", str(tmp_path / "run"), "--device", "cpu"] + args)
    err = capsys.readouterr().err
    assert rc == 2 and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_unknown_yaml_keys_are_named(tmp_path, capsys, image_folder):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kay: 10\n")
    assert main(["train", "--config", str(cfg), "--data", str(image_folder), "--out", str(tmp_path / "r")]) == 2
    assert "unknown setting(s) kay" in capsys.readouterr().err


COMMANDS = ("prepare", "train", "eval", "report", "visualize", "import-original", "compare", "export", "assign",
            "embed", "duplicates", "sample")


def test_help_lists_every_command(capsys):
    """Each command by name in the list of commands, with its one-line help (a word such as 'trained' in a
    description does not count)."""
    import re

    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    listed = set(re.findall(r"^ {4}([a-z-]+)(?: {2,}\S|$)", out, flags=re.M))  # a long name wraps its help
    assert listed == set(COMMANDS)


def test_only_the_command_process_freezes_the_garbage_collector(monkeypatch, capsys, tmp_path):
    """``deepcluster`` as a process (``run``) freezes what the imports made and what the command leaves, so the
    collector's full passes skip them; ``main`` called from Python never touches its caller's collector."""
    import gc

    from deepcluster import cli

    calls = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(cli, "main", lambda: calls.append("main") or 2)
    with pytest.raises(SystemExit) as stopped:
        cli.run()
    assert stopped.value.code == 2 and calls == ["freeze", "main", "freeze"]
    monkeypatch.undo()
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    calls.clear()
    assert main(["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "missing")]) == 2
    assert calls == [] and "does not exist" in capsys.readouterr().err
