# Runs one command for OMServer's ansible backend, started by ansible's command module on the target as
#   python3 -c <this> TIMEOUT_SECS -- PROGRAM ARG...
# It exists because ssh does not stop a remote command when the connection goes away (no pty, no SIGHUP) and
# ansible's task timeout leaves it running too. So this runs the command in its own session and kills that whole
# session when the command outlives TIMEOUT_SECS or when any of its ancestors (the ssh session, ansible's module)
# is gone, i.e. the job was cancelled. Arguments are passed to the program as they are: no shell.
import os
import signal
import subprocess
import sys
import time


def _stat(pid):
    # Fields after the command name: state is [0], ppid [1], start time [19].
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()


def _ancestors():
    found, pid = [], os.getppid()
    while pid > 1:
        try:
            fields = _stat(pid)
        except (OSError, IndexError):
            break
        found.append((pid, fields[19]))
        pid = int(fields[1])
    return found


def _alive(pid, started):
    try:
        return _stat(pid)[19] == started
    except (OSError, IndexError):
        return False


def _kill(child):
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        pass
    child.wait()


def main():
    timeout, argv = float(sys.argv[1]), sys.argv[3:]
    watched = _ancestors()
    try:
        child = subprocess.Popen(argv, start_new_session=True)
    except OSError as e:
        sys.stderr.write("cannot run %s: %s\n" % (argv[0], e))
        return 127
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda *_: (_kill(child), os._exit(143)))
    deadline = time.monotonic() + timeout
    while True:
        try:
            rc = child.wait(timeout=0.25)
            return rc if rc >= 0 else 128 - rc
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            _kill(child)
            sys.stderr.write("timed out after %g s; the command was killed\n" % timeout)
            return 124
        if not all(_alive(pid, started) for pid, started in watched):
            _kill(child)
            return 137


sys.exit(main())
