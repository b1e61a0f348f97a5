"""The progress line of long CLI operations: in place on a terminal, periodic lines in a
log, never a line per item."""

from __future__ import annotations

from switchboard.progress import Progress, render


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_render() -> None:
    assert render("reseal", "registry", 120, 450) == "reseal: registry 120/450 (26 %)"
    assert render("reseal", "sync.pairs read", 12345, None) == "reseal: sync.pairs read 12,345"
    assert render("x", "empty", 0, 0) == "x: empty 0/0 (100 %)"


def test_a_log_gets_a_line_per_step_and_every_few_seconds() -> None:
    out: list[str] = []
    clock = Clock()
    p = Progress("reseal", out.append, tty=False, every_s=5, clock=clock)
    p.step("registry", 1000)
    for i in range(1, 1001):
        clock.t = i * 0.01  # 10 s in all
        p.update(i)
    p.step("sync.pairs read")
    p.update(7)
    p.finish()
    assert out == ["reseal: registry 0/1,000 (0 %)\n",
                   "reseal: registry 500/1,000 (50 %)\n",
                   "reseal: registry 1,000/1,000 (100 %)\n",
                   "reseal: registry 1,000/1,000 (100 %) done\n",
                   "reseal: sync.pairs read 0\n",
                   "reseal: sync.pairs read 7 done\n"]
    assert not any("\r" in line for line in out)


def test_a_terminal_line_is_rewritten_in_place_and_cleared_for_other_output() -> None:
    out: list[str] = []
    clock = Clock()
    p = Progress("reseal", out.append, tty=True, clock=clock)
    p.step("registry", 3)
    clock.t = 0.05
    p.update(1)  # too soon: not drawn
    clock.t = 0.2
    p.update(2)
    p.clear()
    out.append("a report line\n")
    p.update(3)  # drawn again at once after a clear
    p.finish()
    assert out == ["\r\x1b[Kreseal: registry 0/3 (0 %)",
                   "\r\x1b[Kreseal: registry 2/3 (66 %)",
                   "\r\x1b[K",
                   "a report line\n",
                   "\r\x1b[Kreseal: registry 3/3 (100 %)",
                   "\r\x1b[Kreseal: registry 3/3 (100 %) done\n"]
    p.clear()  # the finished line stays
    assert out[-1].endswith("done\n")
