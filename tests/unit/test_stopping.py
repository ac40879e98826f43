"""SIGTERM / Ctrl-C for `meshwasm up`: recorded by the handler, acted on where `up` checks.

Each case runs in a child Python (signal handlers are per process), which signals itself at the
moment the case is about: while a finalizer runs, and during the cleanup the first signal started.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

PRELUDE = textwrap.dedent(
    """
    import os, signal, time
    from meshwasm import stopping
    from meshwasm.net import wait_until

    stopping.install()
    """
)


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)], capture_output=True, text=True, timeout=60
    )


def test_a_signal_that_lands_while_a_finalizer_runs_still_stops_the_next_wait() -> None:
    """A handler raising KeyboardInterrupt there loses it ("Exception ignored in ... __del__"): the
    start-up went on, then served forever. Recorded, the stop happens at the next wait."""
    done = run(
        """
        class Finalized:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)

        start = time.monotonic()
        Finalized()
        try:
            wait_until(lambda: False, timeout=20)
        except stopping.StopRequested as exc:
            print(f"stopped after {time.monotonic() - start:.2f} s: {exc}")
        else:
            print("never stopped")
        """
    )
    assert done.returncode == 0, done.stderr
    assert "stopped after" in done.stdout, done.stdout + done.stderr
    assert float(done.stdout.split("stopped after ")[1].split(" s")[0]) < 5
    assert "SIGTERM" in done.stdout
    assert "Exception ignored" not in done.stderr


def test_a_second_signal_does_not_cut_the_cleanup_short() -> None:
    done = run(
        """
        os.kill(os.getpid(), signal.SIGINT)
        try:
            wait_until(lambda: False, timeout=20)
        except KeyboardInterrupt:
            stopping.begin_cleanup()
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal, as the cleanup starts
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGINT)
            wait_until(lambda: False, timeout=0.5)  # the cleanup's own waits run to their end
            print(f"cleanup finished; stopped by signal {stopping.requested()}")
        """
    )
    assert done.returncode == 0, done.stderr
    assert f"cleanup finished; stopped by signal {2}" in done.stdout, done.stdout + done.stderr


def test_without_a_signal_nothing_stops() -> None:
    done = run(
        """
        assert not wait_until(lambda: False, timeout=0.3)
        stopping.check()
        print("ran to the end")
        """
    )
    assert done.returncode == 0, done.stderr
    assert "ran to the end" in done.stdout
