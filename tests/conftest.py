import os
import signal

import pytest
import torch

# Tests see only the plugins they load themselves, whatever else is installed.
os.environ.setdefault("DNAS_PLUGINS", "")
torch.set_num_threads(2)
# Launched as a background job of a non-interactive shell, pytest starts with SIGINT
# ignored, and every child it spawns inherits that: the tests that press Ctrl-C on a
# child would then hang. A Python handler here is reset to the default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def toy_registry():
    from dnas_core.plugins.registry import make_registry
    from tests.core import toy_plugin

    return make_registry([toy_plugin], entry_points=False)
