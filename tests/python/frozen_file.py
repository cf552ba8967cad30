"""Freeze appends to a file, as a disk that stops answering does, until this process ends.

A thread of this process appends to FILE from a buffer whose page is registered with
userfaultfd and never supplied. The kernel takes the file's inode lock for the write and then
waits on that page, so every other write to the file (an `O_APPEND` write by the gateway
included) blocks in the kernel until this process exits. Nothing is written: once the process
ends, its own write fails.

Usage: frozen_file.py FILE. Prints "frozen" once the write is under way, then waits for stdin
to close. Needs userfaultfd for faults in the kernel: root, or vm.unprivileged_userfaultfd=1.
"""

import ctypes
import mmap
import os
import platform
import sys
import threading
import time

SYS_USERFAULTFD = {"x86_64": 323, "aarch64": 282}[platform.machine()]
UFFD_API = 0xAA
UFFDIO_API = 0xC018AA3F
UFFDIO_REGISTER = 0xC020AA00
UFFDIO_REGISTER_MODE_MISSING = 1
PAGE = mmap.PAGESIZE

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


class UffdioApi(ctypes.Structure):
    _fields_ = [("api", ctypes.c_uint64), ("features", ctypes.c_uint64),
                ("ioctls", ctypes.c_uint64)]


class UffdioRegister(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64),
                ("mode", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]


def check(ok, what):
    if not ok:
        err = ctypes.get_errno()
        sys.exit(f"frozen_file: {what}: {os.strerror(err)}")


def main():
    path = sys.argv[1]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    uffd = libc.syscall(SYS_USERFAULTFD, os.O_CLOEXEC)
    check(uffd >= 0, "userfaultfd")
    api = UffdioApi(UFFD_API, 0, 0)
    check(libc.ioctl(uffd, UFFDIO_API, ctypes.byref(api)) == 0, "UFFDIO_API")
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    page = libc.mmap(None, PAGE, prot, flags, -1, 0)
    check(page not in (None, ctypes.c_void_p(-1).value), "mmap")
    reg = UffdioRegister(page, PAGE, UFFDIO_REGISTER_MODE_MISSING, 0)
    check(libc.ioctl(uffd, UFFDIO_REGISTER, ctypes.byref(reg)) == 0, "UFFDIO_REGISTER")

    writing = threading.Event()

    def freeze():
        writing.set()
        libc.write(fd, page, PAGE)

    threading.Thread(target=freeze, daemon=True).start()
    writing.wait()
    # The write reaches the page fault within microseconds; give it ample time.
    time.sleep(0.2)
    print("frozen", flush=True)
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
