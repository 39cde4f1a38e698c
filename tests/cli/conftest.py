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
