"""`make demo`'s driver end to end on a tiny preset: train, eval and compare through the CLI."""

from adaptrl.demo import run_demo


def test_demo_trains_evaluates_and_compares(tmp_path, capsys):
    assert run_demo(tmp_path, preset="smoke", methods=["maml", "random"], eval_tasks=3) == 0
    out = capsys.readouterr().out
    assert "| maml" in out and "| random" in out and "oracle" in out
    for method in ("maml", "random"):
        assert (tmp_path / method / "eval" / "test" / "eval.json").is_file()
    assert (tmp_path / "compare-test" / "compare.png").is_file()
    # a second run reuses the finished runs instead of refusing the folders
    assert run_demo(tmp_path, preset="smoke", methods=["maml"], eval_tasks=3) == 0
