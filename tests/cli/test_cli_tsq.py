"""TSQ's two-step schedule through the CLI: train --final runs it, export lowers the result, and a
bad schedule setting is one clear error line."""

import pytest

from conftest import TINY

TSQ = ["--set", "final.quant.weight=tsq", "--set", "final.quant.act=tsq", "--set", "final.quant.w_bits=2",
       "--set", "final.quant.a_bits=2", "--set", "train.steps=6", "--set", "ensemble.members=1"]


@pytest.mark.slow
def test_train_final_tsq_then_export(runner, cli, tmp_path):
    ws = tmp_path / "ws"
    r = runner.invoke(cli, ["init", str(ws), "--synthetic", "6", *TINY, *TSQ,
                            "--set", "final.quant.weight_args={solve_iters: 2, max_cols: 256}"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["train", str(ws), "--final", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "tsq2/tsq2" in r.output
    r = runner.invoke(cli, ["export", str(ws), str(tmp_path / "m.slq")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.slq").stat().st_size > 0


def test_bad_tsq_schedule_setting_is_one_error_line(runner, cli, tmp_path):
    ws = tmp_path / "ws"
    # the config is checked before any work: init refuses it, and makes no workspace
    r = runner.invoke(cli, ["init", str(ws), "--synthetic", "4", *TINY, *TSQ,
                            "--set", "final.quant.weight_args={step1: 2}"])
    assert r.exit_code == 2 and not ws.exists()
    assert "Traceback" not in r.output
    assert r.output.startswith("error: ") and "tsq weight_args step1" in r.output \
        and "(0, 1]" in r.output, r.output
