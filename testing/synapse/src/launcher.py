"""Runs Synapse's homeserver and stops it once the test process that started it is gone.

The test process holds the write end of this process's standard input. When that end closes
(the harness stops Synapse, or the test process exits or is killed), standard input reaches end
of file and this process sends itself SIGTERM: Twisted then shuts Synapse down cleanly. A test
binary that ends without dropping its Synapse (one kept in a static) leaves no server behind.
"""

import os
import runpy
import signal
import sys
import threading
import time


def stop_when_parent_goes():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)
    # A clean stop takes well under a second; never outlive the test process for long.
    time.sleep(20)
    os._exit(1)


threading.Thread(target=stop_when_parent_goes, daemon=True).start()
sys.argv = ["synapse.app.homeserver"] + sys.argv[1:]
runpy.run_module("synapse.app.homeserver", run_name="__main__", alter_sys=True)
