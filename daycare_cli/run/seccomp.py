"""The seccomp filter every block runs under (docs/security.md, "What is contained").

A deny-list on top of the namespaces and uid change: the system calls a block has no
business making, refused with EPERM. The filter is compiled once with libseccomp
(through `pyseccomp`, a ctypes binding that installs from PyPI into any venv and loads
the system's libseccomp.so.2) into a classic BPF program. Under bubblewrap the program
goes to `bwrap --seccomp FD`; in reduced isolation the child loads it itself between
fork and exec (`identity.preexec`), with two prctl calls and no allocation.

What it refuses and why:
- keyctl, add_key, request_key: the kernel keyring outlives a block and is shared by
  every process of a uid, so blocks could leave notes for each other there;
- ptrace, process_vm_readv/writev: reading or steering another process;
- bpf, perf_event_open, userfaultfd: large kernel attack surface, no use in a block;
- mount and the new mount API, umount2, pivot_root: changing the filesystem view;
- kexec and module loading: never a block's business.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from dataclasses import dataclass

DENIED = (
    "keyctl",
    "add_key",
    "request_key",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
)

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@dataclass(frozen=True)
class Filter:
    """A compiled filter: the BPF bytes and, for the reduced mode, a ready `sock_fprog`."""

    program: bytes
    fprog: _SockFprog
    buffer: ctypes.Array[ctypes.c_char]  # keeps the program's memory alive

    def memfd(self) -> int:
        """A fresh fd holding the program at offset 0, for `bwrap --seccomp FD`."""
        fd = os.memfd_create("daycare-seccomp", os.MFD_CLOEXEC)
        try:
            os.write(fd, self.program)
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError:
            os.close(fd)
            raise
        return fd

    def load(self, libc: ctypes.CDLL) -> None:
        """In the child before exec: no new privileges, then the filter. Raises OSError."""
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        addr = ctypes.addressof(self.fprog)
        if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, addr, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


@functools.cache
def seccomp_filter() -> tuple[Filter | None, str]:
    """The compiled filter and a one-line description, or None and why not."""
    try:
        import pyseccomp as sc  # type: ignore[import-untyped]
    except (ImportError, RuntimeError, OSError) as exc:
        # pyseccomp raises RuntimeError when libseccomp.so.2 is not installed.
        return None, f"unavailable ({exc}); install libseccomp2 and pyseccomp"
    try:
        flt = sc.SyscallFilter(sc.ALLOW)
        arches = {sc.system_arch()}
        # The 32-bit ABI of the same machine gets the same rules (x86 on x86-64, arm on
        # arm64) instead of libseccomp's default of killing any foreign-arch call.
        for name in {"X86_64": "X86", "AARCH64": "ARM"}.values():
            arch = getattr(sc.Arch, name, None)
            if arch is not None and arch not in arches:
                try:
                    flt.add_arch(arch)
                    arches.add(arch)
                except OSError:
                    pass
        missing = []
        for name in DENIED:
            try:
                flt.add_rule(sc.ERRNO(errno.EPERM), name)
            except (OSError, ValueError, RuntimeError):
                missing.append(name)  # not a system call on this architecture
        with os.fdopen(os.memfd_create("daycare-bpf", os.MFD_CLOEXEC), "w+b") as out:
            flt.export_bpf(out)
            out.seek(0)
            program = out.read()
    except (OSError, ValueError, RuntimeError) as exc:
        return None, f"could not be compiled: {exc}"
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    refused = len(DENIED) - len(missing)
    return Filter(program, fprog, buffer), f"libseccomp filter, {refused} system calls refused"
