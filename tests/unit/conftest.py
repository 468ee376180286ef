"""Fixtures shared by the unit tests."""
import pytest


@pytest.fixture
def closing():
    """closing(thing) -> thing, closed at teardown (last registered first): servers, sockets."""
    made = []

    def keep(thing):
        made.append(thing)
        return thing

    yield keep
    for thing in reversed(made):
        thing.close()


@pytest.fixture(autouse=True)
def entry_kernels_lazy_again():
    """A command run through CliRunner prepares the entry kernels (or hooks their first call), which
    then refuse argument types their signatures do not cover; kernel tests after it call them with
    the types they test."""
    yield
    import sys
    kernel_types = sys.modules.get("anomaly_detector.kernel_types")
    if kernel_types is not None:
        kernel_types.forget_prepared()
