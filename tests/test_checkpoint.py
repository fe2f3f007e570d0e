import os
import pickle

import pytest
import torch

from deepcluster import ConfigError, DeepClusterError
from deepcluster.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip(tmp_path):
    state = {"epoch": 3, "model": {"w": torch.arange(6.0).view(2, 3)}, "config": {"k": 10, "arch": "small"},
             "assignment": torch.tensor([0, 1, 1])}
    save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["epoch"] == 3 and back["config"] == {"k": 10, "arch": "small"}
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "c.pt", {"epoch": 1})

    def broken_save(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpo")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(DeepClusterError, match="No space left on device.*the previous version is intact"):
        save_checkpoint(tmp_path / "c.pt", {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_crafted_pickle_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pt", "wb") as f:
        pickle.dump({"format": "deepcluster/1", "x": Payload()}, f)
    with pytest.raises(ConfigError, match="cannot be loaded safely"):
        load_checkpoint("evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_other_files_are_refused_with_one_line(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    torch.save({"format": "deepcluster/1", "w": torch.ones(1000)}, tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:-300])  # a copy cut short
    for name in ("junk.pt", "cut.pt"):
        with pytest.raises(ConfigError) as e:
            load_checkpoint(tmp_path / name)
        line = str(e.value)  # one whole sentence, not torch's message cut off
        assert "\n" not in line and line.endswith("point to another one") and "damaged, cut short" in line
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ConfigError, match="not a deepcluster checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(ConfigError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_the_background_writer_lands_writes_in_order_and_hands_their_errors_to_the_caller(tmp_path):
    import threading
    import time

    from deepcluster.checkpoint import BackgroundWriter

    writer, order, gate = BackgroundWriter(), [], threading.Event()
    writer.submit(lambda: (gate.wait(10), order.append("first")))
    assert order == []  # submit returned while the write waits: it runs in the background
    gate.set()
    writer.submit(lambda: order.append("second"))  # starts only once the first has landed
    writer.wait()
    assert order == ["first", "second"]
    writer.submit(lambda: (time.sleep(0.2), order.append("slow")))
    writer.submit(lambda: order.append("quick"))
    writer.wait()
    assert order[2:] == ["slow", "quick"]

    def full():
        raise OSError(28, "No space left on device")

    writer.submit(full)
    with pytest.raises(OSError, match="No space left"):
        writer.wait()
    writer.wait()  # an error is raised once
    gate.clear()
    writer.submit(lambda: (gate.wait(10), full()))
    writer.check()  # a write in flight is not waited for
    gate.set()
    writer.join()
    with pytest.raises(OSError, match="No space left"):  # one that has failed raises
        writer.check()
    writer.submit(lambda: save_checkpoint(tmp_path / "c.pt", {"epoch": 3}))
    writer.wait()
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 3
