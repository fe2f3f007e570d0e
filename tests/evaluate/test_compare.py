"""Reading the probe columns: the notes under the comparison table."""
from deepcluster.evaluate.compare import probe_notes


def probe(conv, **extra):
    return {f"conv{i + 1}": v for i, v in enumerate(conv)} | {"views": "centre", "epochs": 30} | extra


def test_gap_closed_is_read_at_the_runs_best_layer():
    notes = probe_notes([("random init (small)", probe([0.80, 0.80, 0.70], pixels=0.84)),
                         ("DeepCluster v1 (dc)", probe([0.85, 0.86, 0.80])),
                         ("supervised (sup)", probe([0.88, 0.90, 0.92], network=0.93))], 3)
    assert notes[0] == "Probes: centre views, 30 epochs."
    assert notes[1] == "A linear classifier on the pixels, trained the same way: 84.0 %."
    assert notes[2] == "The supervised network's own classifier: 93.0 % (its best probe, conv3: 92.0 %)."
    # best layer conv2 (86 %): (0.86 - 0.80) / (0.90 - 0.80) = 60 %, not conv3's 45 % nor conv1's 62.5 %
    assert notes[3] == (
        "DeepCluster v1 (dc): best layer conv2, 86.0 %, closes 60 % of the random-to-supervised gap there.")


def test_no_gap_without_both_ends():
    notes = probe_notes([("DeepCluster v1 (dc)", probe([0.85])), ("supervised (sup)", probe([0.9]))], 1)
    assert not any("gap" in n for n in notes)
    assert probe_notes([("DeepCluster v1 (dc)", None)], 5) == []
