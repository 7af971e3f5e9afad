"""Process-wide settings in cvae_bridge/utils/runtime.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

ROUNDS = 6
# Six rounds of two 256 MiB tensors allocated and freed from a thread pool, as training steps do;
# prints the page faults of all rounds.
_STEPS = f"""
import resource, sys, torch
from cvae_bridge.utils.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
torch.set_num_threads(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({ROUNDS}):
    x = torch.ones(64, 1024, 1024)  # 256 MiB
    y = x * 2  # another, allocated while x lives
    del x, y
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_keep_freed_memory_serves_a_steps_tensors_again_without_faulting_them_in():
    def faults(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", _STEPS, mode], capture_output=True, text=True, check=True)
        return int(run.stdout.split()[-1])

    pages = 2 * 256 * 2**20 // 4096  # one round's
    # By default glibc maps such blocks and unmaps them on free: every round faults them in.
    assert faults("default") >= (ROUNDS - 1) * pages
    # Kept, they are faulted in once (now and then glibc places a round's blocks anew once more).
    assert faults("keep") < 3 * pages
