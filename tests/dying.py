"""Kill-then-resume tests stop their child run at a fixed point instead of racing a poll:
`die_after(module, name, calls)` makes `module.name` SIGKILL its own process right after its
`calls`-th call returns, in the process whose RANK (torchrun's; 0 when alone) is KILL_RANK.
Without KILL_RANK in the environment nothing changes."""
from __future__ import annotations

import os
import signal


def die_after(module, name: str, calls: int = 1) -> None:
    real, done = getattr(module, name), [0]

    def then_die(*args, **kwargs):
        result = real(*args, **kwargs)
        done[0] += 1
        if done[0] == calls and os.environ.get("RANK", "0") == os.environ.get("KILL_RANK"):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(module, name, then_die)
