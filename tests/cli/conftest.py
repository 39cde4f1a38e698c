import pytest
from typer.testing import CliRunner

# Tiny, fast settings for end-to-end runs: 32x32 crops, width-4 FCNs, a few steps.
TINY = ["--set", "synthetic.size=32", "--set", "data.crop=32", "--set", "model.width=4",
        "--set", "model.depth=3", "--set", "train.steps=3", "--set", "ensemble.members=2",
        "--set", "data.batch_size=2", "--set", "train.bf16=false"]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def cli():
    from seglearn.cli.app import app

    return app


@pytest.fixture
def tiny_ws(runner, cli, tmp_path):
    """A workspace of 4 synthetic images made by `seglearn init` with the TINY settings."""
    ws = tmp_path / "ws"
    r = runner.invoke(cli, ["init", str(ws), "--synthetic", "4", *TINY])
    assert r.exit_code == 0, r.output
    return ws
