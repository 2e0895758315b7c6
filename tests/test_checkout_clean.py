"""Runs last (conftest orders it): the tests before it left no file in the checkout."""

from pathlib import Path

import pytest

from bild_align.testing.helpers import checkout_state


def test_the_tests_left_the_checkout_as_they_found_it(request):
    before = request.config.checkout_state
    after = checkout_state(Path(__file__).resolve().parents[1])
    if before is None or after is None:
        pytest.skip("not a git checkout")
    assert after - before == set(), "tests wrote into the checkout"
