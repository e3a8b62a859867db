"""One intra-op thread for these tiny-model tests.

With two threads every small op waits for the second thread to be scheduled,
and on a busy 2-core machine that wait (milliseconds) dwarfs the op itself:
a 2-layer decode step took 30 ms instead of 0.3 ms. Tiny models gain nothing
from a second thread, so the tests pin one and restore the setting after.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
