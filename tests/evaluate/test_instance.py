"""Instance retrieval in the benchmarks' own formats (Oxford5k / Paris6k text files, the revisited pickle), their
average precision, and copy detection on a folder."""
import pickle

import numpy as np
import pytest
from PIL import Image

from deepcluster.cli import main
from deepcluster.config import ConfigError
from deepcluster.evaluate.instance import average_precision, read_ground_truth, strong_copy


def test_average_precision_is_the_benchmarks_trapezoid_with_junk_skipped():
    pos, junk = frozenset({"a", "b"}), frozenset({"j"})
    assert average_precision(["a", "b", "x"], pos, junk) == 1.0
    # a, x, b: recall 0.5 at precision 1; the miss drops precision to 1/2; recall 1 at precision 2/3
    assert average_precision(["a", "x", "b"], pos, junk) == pytest.approx(0.5 + 0.5 * (1 / 2 + 2 / 3) / 2)
    assert average_precision(["a", "j", "b"], pos, junk) == 1.0  # junk takes no part in the ranking
    # x, a, b: precision falls to 0 at the miss, so the first step's area is 0.5 * (0 + 1/2) / 2
    assert average_precision(["x", "a", "b"], pos, junk) == pytest.approx(0.5 * 0.25 + 0.5 * (0.5 + 2 / 3) / 2)
    assert average_precision(["a", "x"], pos, junk) == pytest.approx(0.5)  # b never ranked: half the recall
    assert np.isnan(average_precision(["a"], frozenset(), junk))


def write_oxford_style(tmp_path, n_landmarks=4, views=3, distractors=6):
    """A tiny benchmark in Oxford5k's layout: views of each landmark (crops of one picture), distractors, and
    NAME_query.txt (oxc1_-prefixed image, box) / _good / _ok / _junk.txt per query."""
    rng = np.random.default_rng(0)
    images, gt = tmp_path / "landmarks", tmp_path / "gt"
    images.mkdir()
    gt.mkdir()
    for lm in range(n_landmarks):
        scene = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((160, 120), Image.BICUBIC)
        names = []
        for v in range(views):
            x0, y0 = int(rng.integers(0, 30)), int(rng.integers(0, 20))
            scene.crop((x0, y0, x0 + 120, y0 + 90)).save(images / f"lm{lm}_{v:06d}.jpg", quality=90)
            names.append(f"lm{lm}_{v:06d}")
        (gt / f"lm{lm}_1_query.txt").write_text(f"oxc1_{names[0]} 10.0 8.5 100.0 80.0\n")
        (gt / f"lm{lm}_1_good.txt").write_text("\n".join(names[:2]) + "\n")
        (gt / f"lm{lm}_1_ok.txt").write_text(names[2] + "\n")
        (gt / f"lm{lm}_1_junk.txt").write_text("")
    for d in range(distractors):
        Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize((100, 90), Image.BICUBIC).save(
            images / f"other_{d:06d}.png")
    return images, gt


def test_oxford_text_files_and_the_revisited_pickle_are_read(tmp_path):
    images, gt_dir = write_oxford_style(tmp_path)
    gt = read_ground_truth(gt_dir)
    q = gt.queries[0]
    assert len(gt.queries) == 4 and gt.database is None and q.image == "lm0_000000"  # the oxc1_ prefix dropped
    assert q.box == (10.0, 8.5, 100.0, 80.0) and q.positives == {"lm0_000000", "lm0_000001", "lm0_000002"}
    # the revisited layout: 0-based indices into imlist; medium = easy + hard, hard = hard with easy as junk
    cfg = {"imlist": ["a", "b", "c", "d"], "qimlist": ["q"],
           "gnd": [{"bbx": [1, 2, 30, 40], "easy": [0], "hard": np.array([1, 2]), "junk": [3]}]}
    (tmp_path / "gnd.pkl").write_bytes(pickle.dumps(cfg))
    medium, hard = (read_ground_truth(tmp_path / "gnd.pkl", p).queries[0] for p in ("medium", "hard"))
    assert medium.positives == {"a", "b", "c"} and medium.junk == {"d"}
    assert hard.positives == {"b", "c"} and hard.junk == {"a", "d"} and hard.box == (1.0, 2.0, 30.0, 40.0)
    assert read_ground_truth(tmp_path / "gnd.pkl").database == ["a", "b", "c", "d"]

    class Evil:  # a pickle that would run a command when loaded
        def __reduce__(self):
            import os
            return os.system, ("touch " + str(tmp_path / "pwned"),)

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"imlist": Evil()}))
    with pytest.raises(ConfigError, match="is not a revisited ground-truth file .*posix.system is not plain data"):
        read_ground_truth(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()
    (gt_dir / "lm0_1_ok.txt").unlink()
    with pytest.raises(ConfigError, match="lm0_1_ok.txt is missing"):
        read_ground_truth(gt_dir)


@pytest.fixture
def run(tiny_config, tmp_path):
    from deepcluster import train

    train(tiny_config, tmp_path / "run", quiet=True)
    return tmp_path / "run"


def test_instance_retrieval_and_copy_detection_end_to_end(run, tmp_path, image_folder, capsys, monkeypatch):
    import json

    images, gt = write_oxford_style(tmp_path)
    common = ["--run", str(run), "--device", "cpu", "--max-size", "96"]
    assert main(["eval", "instance", "--images", str(images), "--ground-truth", str(gt), "--whiten-data",
                 str(image_folder)] + common) == 0
    r = json.loads((run / "eval" / "instance.json").read_text())
    # 4 queries, 18 images, 3 relevant each: views of one scene rank well above a random ranking
    rng = np.random.default_rng(0)
    chance = np.mean([average_precision(list(rng.permutation(18)), frozenset({0, 1, 2}), frozenset())
                      for _ in range(2000)])
    assert r["queries"] == 4 and r["images"] == 18 and r["max_size"] == 96 and r["whitening_images"] == 36
    assert r["map"] > 2 * chance, (r, chance)
    db = tmp_path / "db"  # 30 photograph-like images of assorted shapes
    db.mkdir()
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (rng.integers(3, 7), rng.integers(3, 7), 3), dtype=np.uint8)).resize(
            (int(rng.integers(60, 120)), int(rng.integers(60, 120))), Image.BICUBIC).save(db / f"{i:02d}.png")
    assert main(["eval", "copies", "--queries", "12", "--images", str(db)] + common) == 0
    c = json.loads((run / "eval" / "copies.json").read_text())
    assert c["queries"] == 12 and c["images"] == 30 and c["recall@10"] >= c["recall@5"] >= c["recall@1"]
    assert c["map"] > 2 * np.mean(1 / np.arange(1, 31)), c  # well above a random ranking's
    # the bookkeeping, exactly: a "copy" that is the image itself is found first, every time
    monkeypatch.setattr("deepcluster.evaluate.instance.strong_copy", lambda im, rng: im)
    assert main(["eval", "copies", "--queries", "12", "--images", str(db)] + common) == 0
    assert json.loads((run / "eval" / "copies.json").read_text())["recall@1"] == 1.0
    capsys.readouterr()
    assert main(["eval", "instance", "--images", str(images), "--ground-truth", str(gt)] + common) == 2
    assert "learns its whitening on another image set: give --whiten-data" in capsys.readouterr().err


def test_a_strong_copy_is_another_image_of_the_same_content():
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((160, 120), Image.BICUBIC)
    a, b = strong_copy(im, np.random.default_rng(1)), strong_copy(im, np.random.default_rng(1))
    assert np.array_equal(np.asarray(a), np.asarray(b))  # seeded: the same copy again
    assert a.size != im.size and a.width <= im.width and a.height <= im.height
