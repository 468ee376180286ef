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
