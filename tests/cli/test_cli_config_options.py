"""--config/--set on every command that reads a config, and typed options passed as typed values:
each override takes effect, or a bad one is refused with one `error:` line (exit 2, no traceback)
before anything runs."""

from blocking import blocker_source
import numpy as np
import pytest
import torch
from skimage import io as skio

from conftest import TINY


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert out.startswith("error:") and "\n" not in out and "Traceback" not in out, out
    for n in needles:
        assert str(n) in out, out
    return out


@pytest.fixture
def ws(tiny_ws):
    return tiny_ws


@pytest.fixture
def slq(tmp_path):
    """A tiny exported model (one forward pass sets the 8-bit first layer's ranges)."""
    from seglearn.export import export_model
    from seglearn.models.fcn import FCN
    from seglearn.quant.convert import quantize_model

    torch.manual_seed(0)
    model = quantize_model(FCN(3, width=4, depth=2), {"weight": "twn", "act": "dorefa"})
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 16, 16))
    export_model(model, tmp_path / "m.slq")
    return tmp_path / "m.slq"


def test_select_passes_its_options_as_typed_values(runner, cli, ws):
    """--strategy yes is the string 'yes' (parsed again as YAML it was the boolean True)."""
    one_line_error(runner.invoke(cli, ["select", str(ws), "--strategy", "yes"]),
                   "active.strategy must be one of", "suggestive", "not 'yes'")
    one_line_error(runner.invoke(cli, ["select", str(ws), "--budget", "0"]),
                   "active.budget must be at least 1, not 0")


def test_train_device_is_a_typed_value(runner, cli, ws):
    one_line_error(runner.invoke(cli, ["train", str(ws), "--device", "null"]),
                   "train.device must be auto, cpu, cuda or cuda:N, not 'null'")


def test_status_shows_the_config_the_commands_run_with(runner, cli, ws):
    r = runner.invoke(cli, ["status", str(ws)])
    assert r.exit_code == 0, r.output
    assert "train.steps=3" in r.output and "model.width=4" in r.output  # init's --set, saved
    r2 = runner.invoke(cli, ["status", str(ws), "--set", "train.steps=7"])
    assert r2.exit_code == 0, r2.output
    assert "train.steps=7" in r2.output and "train.steps=3" not in r2.output
    from seglearn.config import load_config

    expected = load_config(None, [s for s in TINY if s != "--set"] + ["train.steps=7"]).hash()
    assert f"config {expected}" in r2.output
    one_line_error(runner.invoke(cli, ["status", str(ws), "--set", "nope.x=1"]), "nope.x")


def test_label_reads_data_max_pixels_from_the_config(runner, cli, ws, tmp_path):
    from seglearn.store import Workspace

    with Workspace.open(ws) as w:
        it = w.unlabeled("pool")[0]
        before = len(w.training_items())
    m = np.zeros((it.height, it.width), np.uint8)
    m[4:12, 4:12] = 255
    (tmp_path / "m").mkdir()
    skio.imsave(str(tmp_path / "m" / f"{it.name}.png"), m, check_contrast=False)
    limit = it.height * it.width - 1
    one_line_error(runner.invoke(cli, ["label", str(ws), "--masks", str(tmp_path / "m"),
                                       "--set", f"data.max_pixels={limit}"]),
                   f"{it.name}.png", f"{limit:,}")
    one_line_error(runner.invoke(cli, ["label", str(ws), "--masks", str(tmp_path / "m"),
                                       "--set", "nope.x=1"]), "nope.x")
    with Workspace.open(ws) as w:
        assert len(w.training_items()) == before  # the refused commands imported nothing
    r = runner.invoke(cli, ["label", str(ws), "--masks", str(tmp_path / "m")])
    assert r.exit_code == 0 and "labeled 1 item" in r.output, r.output
    with Workspace.open(ws) as w:
        assert len(w.training_items()) == before + 1


def test_predict_reads_data_max_pixels_only_when_given(runner, cli, slq, tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    skio.imsave(str(tmp_path / "a.png"), img, check_contrast=False)
    one_line_error(runner.invoke(cli, ["predict", str(slq), str(tmp_path / "a.png"), "--out",
                                       str(tmp_path / "o1"), "--set", "data.max_pixels=700"]),
                   "a.png", "700")
    assert not (tmp_path / "o1" / "a.png").exists()
    one_line_error(runner.invoke(cli, ["predict", str(slq), str(tmp_path / "a.png"), "--out",
                                       str(tmp_path / "o2"), "--set", "nope.x=1"]), "nope.x")
    r = runner.invoke(cli, ["predict", str(slq), str(tmp_path / "a.png"), "--out",
                            str(tmp_path / "o3"), "--set", "data.max_pixels=768"])
    assert r.exit_code == 0 and (tmp_path / "o3" / "a.png").is_file(), r.output


def test_simulate_takes_config_as_option_too(runner, cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("simulate:\n  seedz: [0]\n")
    one_line_error(runner.invoke(cli, ["simulate", "--config", str(bad), "--out",
                                       str(tmp_path / "s")]), "bad.yaml", "simulate.seedz")
    good = tmp_path / "good.yaml"
    good.write_text("simulate:\n  seeds: [0]\n")
    one_line_error(runner.invoke(cli, ["simulate", str(good), "--config", str(good), "--out",
                                       str(tmp_path / "s")]), "given twice")
    one_line_error(runner.invoke(cli, ["simulate", "--set", "simulate.seeds=[]", "--out",
                                       str(tmp_path / "s")]), "simulate.seeds")
    assert not (tmp_path / "s").exists()


def test_export_refuses_a_bad_override_before_writing(runner, cli, ws, tmp_path):
    one_line_error(runner.invoke(cli, ["export", str(ws), str(tmp_path / "m.slq"),
                                       "--set", "postprocess.min_area=-1"]),
                   "postprocess.min_area must be at least 0, not -1")
    assert not (tmp_path / "m.slq").exists()


BLOCK_TORCH = blocker_source("torch") + "\n".join([
    "from seglearn.cli.app import app",
    "try:",
    "    app(sys.argv[1:])",
    "except SystemExit as e:",
    "    assert not e.code, e.code",
    "assert 'torch' not in sys.modules",
    "print('ok')",
])


def test_status_and_predict_read_their_config_without_torch(ws, slq, tmp_path):
    """The commands that build no model check --set without importing torch (seconds)."""
    import subprocess
    import sys

    img = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    skio.imsave(str(tmp_path / "a.png"), img, check_contrast=False)
    for argv in (["status", str(ws), "--set", "train.steps=7"],
                 ["predict", str(slq), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                  "--set", "data.max_pixels=768", "--no-progress"]):
        r = subprocess.run([sys.executable, "-c", BLOCK_TORCH, *argv], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr[-2000:]
    assert (tmp_path / "o" / "a.png").is_file()
