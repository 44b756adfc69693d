"""The examples in the docstrings of the numeric modules run and hold."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from streamer import batches, drift, loss, reference, windows

MODULES = [batches, drift, loss, reference, windows]


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.__name__)
def test_docstring_examples_pass(module: ModuleType) -> None:
    result = doctest.testmod(
        module, verbose=False, report=True, optionflags=doctest.ELLIPSIS
    )

    assert result.attempted > 0, f"{module.__name__} has no docstring examples"
    assert result.failed == 0, f"{result.failed} docstring examples failed"
