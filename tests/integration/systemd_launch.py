"""Start a program the way systemd starts a socket-activated service.

    python systemd_launch.py FD[,FD...] NAME[:NAME...] -- PROGRAM ARG...

The listening sockets arrive as inherited descriptors (the test process
binds them and passes them with ``pass_fds``, as systemd's manager binds a
``.socket`` unit's ``ListenStream=``). The launcher does what systemd does in
the service's process before ``exec``: it moves them to descriptors 3, 4, ...
(``SD_LISTEN_FDS_START``), sets ``LISTEN_FDS`` to their number,
``LISTEN_PID`` to its own pid (``exec`` keeps the pid, so it is the
program's), ``LISTEN_FDNAMES`` to the names, and execs the program.

systemd (227 and later) always sets ``LISTEN_FDNAMES``: a socket's
``FileDescriptorName=``, by default the ``.socket`` unit's file name
(``wsplugin.socket``). Twisted's ``systemd:`` endpoint needs it: with
``LISTEN_FDS`` alone it finds no descriptor at all.
"""

from __future__ import annotations

import os
import sys

SD_LISTEN_FDS_START = 3


def main(argv: list[str]) -> None:
    split = argv.index("--")
    options, program = argv[:split], argv[split + 1 :]
    fds = [int(fd) for fd in options[0].split(",")]
    names = options[1]
    if len(names.split(":")) != len(fds):
        raise SystemExit(f"{len(fds)} descriptor(s) but names {names!r}")
    # move each socket to its systemd number without clobbering one not yet moved
    moved = [os.dup(fd) for fd in fds]
    for fd in fds:
        os.close(fd)
    for i, fd in enumerate(moved):
        target = SD_LISTEN_FDS_START + i
        if fd == target:  # os.dup() may already have picked the number
            os.set_inheritable(fd, True)
        else:
            os.dup2(fd, target, inheritable=True)
            os.close(fd)
    env = dict(os.environ)
    env["LISTEN_FDS"] = str(len(fds))
    env["LISTEN_PID"] = str(os.getpid())
    env["LISTEN_FDNAMES"] = names
    os.execve(program[0], program, env)


if __name__ == "__main__":
    main(sys.argv[1:])
