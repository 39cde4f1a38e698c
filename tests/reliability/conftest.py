import pytest

from .helpers import Zygote


@pytest.fixture(scope="session")
def zygote():
    """One fork server for the whole reliability run (its imports cost ~5 s once)."""
    z = Zygote()
    yield z
    z.close()
