"""Fixtures shared by the transform tests."""
import pytest
import torch


@pytest.fixture
def float64_default():
    """float64 as the default dtype for one test (the transforms store their results in it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
