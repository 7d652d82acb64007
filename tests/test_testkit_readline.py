"""testkit/mptcp_pair.py's _readline: lines a child wrote together are read one by one, each
at once (no namespace, no root: a shell's pipe)."""

import subprocess
import time

from testkit.mptcp_pair import _readline


def test_two_lines_written_at_once_are_both_read_without_waiting():
    # one write of two lines, then the child stays (its pipe open, nothing more to come): as
    # tcpdump -i any says "data link type LINUX_SLL2" and "listening on" together, then captures.
    # A buffered readline() took both; select() then waited for more until the deadline
    p = subprocess.Popen(
        ["sh", "-c", "printf 'first\\nsecond\\n'; exec sleep 60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        t0 = time.monotonic()
        assert _readline(p, p.stdout, 20) == "first\n"
        assert _readline(p, p.stdout, 20) == "second\n"
        assert time.monotonic() - t0 < 10  # (the old reader gave up after the full 20 s)
    finally:
        p.kill()
        p.wait()


def test_end_of_output_and_a_silent_child():
    p = subprocess.Popen(["sh", "-c", "printf 'last'"], stdout=subprocess.PIPE, text=True)
    assert _readline(p, p.stdout, 20) == "last"  # no newline: the pipe's end ends the line
    assert _readline(p, p.stdout, 20) == ""  # then end of file, as readline() says it
    p.wait()
    q = subprocess.Popen(["sleep", "60"], stdout=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        try:
            _readline(q, q.stdout, 0.3)
        except TimeoutError as e:
            assert "within 0.3s" in str(e)
        else:
            raise AssertionError("no TimeoutError from a silent child")
        assert time.monotonic() - t0 >= 0.3
    finally:
        q.kill()
        q.wait()
