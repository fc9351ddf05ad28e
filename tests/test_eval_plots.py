"""Training histories (multipliers.csv, train_metrics.csv) are read strictly and plotted."""

import math

import pytest
from PIL import Image

from fgrpo_core.eval.curves import CurveFileError, by_constraint, read_multipliers, read_train_metrics
from fgrpo_core.eval.plots import plot_curriculum, plot_training_curves

HEADER = "step,constraint,mean,count,threshold,lambda_before,lambda_after,skipped\n"


def test_multipliers_read_typed_and_ordered(tmp_path):
    p = tmp_path / "multipliers.csv"
    p.write_text(HEADER + "2,spatial,,3,0.65,1.0,1.0,True\n"
                          "1,spatial,0.4,20,0.65,1.0,1.0125,False\n"
                          "1,consistency,0.8,40,0.95,1.0,1.0075,false\n")
    rows = read_multipliers(p)
    assert rows[0].step == 2 and math.isnan(rows[0].mean) and rows[0].skipped is True
    # lambda_after = 1.0 + 0.05 * (0.65 - 0.4) = 1.0125, as the trainer would write it
    assert rows[1].lambda_after == pytest.approx(1.0 + 0.05 * (0.65 - 0.4))
    groups = by_constraint(rows)
    assert list(groups) == ["consistency", "spatial"]  # canonical order
    assert [r.step for r in groups["spatial"]] == [1, 2]  # sorted by step
    out = plot_curriculum(rows, tmp_path / "c.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]  # panels side by side


def test_bad_cells_name_file_row_and_column(tmp_path):
    p = tmp_path / "multipliers.csv"
    p.write_text(HEADER + "1,consistency,0.8,40,0.95,1.0,1.0,False\n1,semantic,high,40,0.95,1.0,1.0,False\n")
    with pytest.raises(CurveFileError, match=r"multipliers.csv: row 2: column 'mean': not a float \(got 'high'\)"):
        read_multipliers(p)
    p.write_text("step,constraint,mean\n1,consistency,0.5\n")
    with pytest.raises(CurveFileError, match=r"missing columns \['count', 'threshold'"):
        read_multipliers(p)
    p.write_text(HEADER + "1,semantic,0.5,40,0.95,1.0,1.0,maybe\n")
    with pytest.raises(CurveFileError, match="column 'skipped': not a bool"):
        read_multipliers(p)
    with pytest.raises(FileNotFoundError):
        read_multipliers(tmp_path / "none.csv")


def test_train_metrics_reads_known_columns(tmp_path):
    p = tmp_path / "train_metrics.csv"
    p.write_text("round,reward_task,reward_consistency,lambda_semantic,tokens_per_s,mystery\n"
                 "1,0.5,0.7,1.0,120,x\n2,0.6,,1.05,118,y\n")
    c = read_train_metrics(p)
    assert c.rounds.tolist() == [1, 2]
    assert sorted(c.series) == ["lambda_semantic", "reward_consistency", "reward_task"]  # others ignored
    assert math.isnan(c.series["reward_consistency"][1])  # an empty cell is NaN, not 0
    out = plot_training_curves(c, tmp_path / "t.png", taus={"consistency": 0.95})
    with Image.open(out) as im:
        assert im.format == "PNG"
    p.write_text("round,kl\nfirst,0.1\n")
    with pytest.raises(CurveFileError, match="row 1: column 'round'"):
        read_train_metrics(p)
    p.write_text("round,tokens_per_s\n1,100\n")
    with pytest.raises(ValueError, match="none of the known columns"):
        plot_training_curves(read_train_metrics(p), tmp_path / "t2.png")


def test_shares_with_nothing_to_judge_are_read_and_plotted(tmp_path):
    # no escape hatches (docs/rewards.md): the per-round shares are curves like the rewards
    p = tmp_path / "train_metrics.csv"
    p.write_text("round,reward_acc,semantic_undefined_share,consistency_unjudged_share,unparsable_share\n"
                 "1,0.5,0.25,0.0,0.1\n2,0.6,,0.5,0.2\n")
    c = read_train_metrics(p)
    assert c.series["semantic_undefined_share"].tolist()[0] == 0.25
    assert math.isnan(c.series["semantic_undefined_share"][1])  # no correct rollout that round: undefined
    assert c.series["unparsable_share"].tolist() == [0.1, 0.2]
    only_shares = tmp_path / "s.csv"
    only_shares.write_text("round,consistency_unjudged_share\n1,0.5\n")
    with Image.open(plot_training_curves(read_train_metrics(only_shares), tmp_path / "s.png")) as im:
        assert im.format == "PNG"  # the "Nothing to judge" panel alone is a plot
