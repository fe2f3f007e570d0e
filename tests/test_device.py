"""The process-wide CPU settings of :mod:`deepcluster.device`: malloc keeping what torch frees."""
import json
import os
import platform
import subprocess
import sys

import pytest

FAULTS = """
import json, resource, sys
import torch
from deepcluster.device import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(64 * 2 ** 18)  # 64 MiB: above glibc's own limit for reusing freed blocks
del x
before = faults()
for _ in range(5):  # what every batch does: buffers of the same sizes made, written, freed
    x = torch.ones(64 * 2 ** 18)
    del x
print(json.dumps({"applied": applied, "faults": faults() - before}))
"""


def run(mode: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], check=True, capture_output=True, text=True,
                         env={**os.environ, **env}).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_buffers_are_reused_without_faulting_their_pages_in_again():
    pages = 64 * 2 ** 20 // os.sysconf("SC_PAGE_SIZE")
    as_it_comes, kept = run("default"), run("keep")
    assert as_it_comes["faults"] >= 4 * pages  # every new buffer's pages faulted in from the OS
    # the same memory handed out again: at most one buffer's pages are new, not one buffer's for every round
    assert kept["applied"] is True and kept["faults"] <= 1.5 * pages
    # the user's own malloc settings win
    assert run("keep", MALLOC_TRIM_THRESHOLD_="131072")["applied"] is False
