"""The settings' metadata is the one source of their sections, checks, resume rules and help."""
import dataclasses

import pytest

from deepcluster import Config
from deepcluster.cli import build_parser
from deepcluster.config import SECTIONS, ConfigError
from deepcluster.recipe import PAPER, RECIPE_FIELDS, RULES
from deepcluster.rundir import RunDir


def test_the_config_is_its_six_sections_in_order():
    by_section = [[f.name for f in dataclasses.fields(kind)] for kind in SECTIONS.values()]
    assert sum(by_section, []) == [f.name for f in dataclasses.fields(Config)]
    assert all(by_section), "a section without settings"
    cfg = Config(k=7, lr=0.3)
    clustering = cfg.section("clustering")
    assert type(clustering) is SECTIONS["clustering"] and clustering.k == 7 and not hasattr(clustering, "lr")
    assert cfg.section("optimisation").lr == 0.3


def test_each_value_is_checked_as_its_metadata_says():
    for f in dataclasses.fields(Config):
        for ok, _ in f.metadata["check"]:
            assert f.default is None or ok(f.default), f"{f.name}'s default fails its own check"
    with pytest.raises(ConfigError, match=r"pic_alpha = 1.5 must lie in \(0, 1\)"):
        Config(pic_alpha=1.5).validate()
    with pytest.raises(ConfigError, match="needs a value"):
        Config(pca_sample=None).validate()
    Config(k=None, arch=None).validate()  # left to the recipe: checked once chosen


def test_a_setting_that_needs_others_says_which():
    with pytest.raises(ConfigError, match="--clustering pic works with --method v1"):
        Config(clustering="pic", method="v2").validate()
    with pytest.raises(ConfigError, match="--overcluster works with --method v1 and k-means"):
        Config(overcluster="20", clustering="pic").validate()
    Config(overcluster="20").validate()


@pytest.mark.parametrize("name,value,resumes", [("epochs", 9, True), ("workers", 3, True), ("lr", 0.5, False),
                                                ("k", 7, False), ("seed", 1, False)])
def test_a_resumed_run_may_change_only_its_resumable_settings(tmp_path, name, value, resumes):
    assert (name in Config.settings(resumable=True)) == resumes
    first = Config(data="x", epochs=2, workers=0, lr=0.1, k=5, reassign=2.0)
    RunDir(tmp_path).open(first, resume=False, overwrite=False)
    RunDir(tmp_path).write_config(first)
    changed = dataclasses.replace(first, **{name: value})
    if resumes:
        assert RunDir(tmp_path).open(changed, resume=True, overwrite=False)
    else:
        with pytest.raises(ConfigError, match=f"another config \\({name}:"):
            RunDir(tmp_path).open(changed, resume=True, overwrite=False)


def test_the_help_of_a_recipe_setting_gives_the_recipes_rule_and_the_papers_value():
    assert set(RULES) == set(RECIPE_FIELDS) == set(PAPER) == set(Config.settings(recipe=True))
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    helps = {a.dest: " ".join(a.help.split()) for a in train._actions if a.help}
    for name in RECIPE_FIELDS:
        assert f"auto: {' '.join(RULES[name].split())}" in helps[name] and f"paper: {PAPER[name]}" in helps[name]
