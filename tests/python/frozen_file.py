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

# (userfaultfd, write) system call numbers.
CALLS = {"x86_64": (323, 1), "aarch64": (282, 64)}
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
    if platform.machine() not in CALLS:
        sys.exit(f"frozen_file: no system call numbers for {platform.machine()}")
    sys_userfaultfd, sys_write = CALLS[platform.machine()]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    uffd = libc.syscall(sys_userfaultfd, os.O_CLOEXEC)
    check(uffd >= 0, "userfaultfd")
    api = UffdioApi(UFFD_API, 0, 0)
    check(libc.ioctl(uffd, UFFDIO_API, ctypes.byref(api)) == 0, "UFFDIO_API")
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    page = libc.mmap(None, PAGE, prot, flags, -1, 0)
    check(page not in (None, ctypes.c_void_p(-1).value), "mmap")
    reg = UffdioRegister(page, PAGE, UFFDIO_REGISTER_MODE_MISSING, 0)
    check(libc.ioctl(uffd, UFFDIO_REGISTER, ctypes.byref(reg)) == 0, "UFFDIO_REGISTER")

    writer = threading.Thread(target=lambda: libc.write(fd, page, PAGE), daemon=True)
    writer.start()
    # Frozen once the thread sits in `write` (its current system call, as the kernel reports it)
    # and stays there: it then holds the inode lock, waiting on the page.
    syscall = f"/proc/self/task/{writer.native_id}/syscall"
    deadline = time.monotonic() + 10
    while True:
        with open(syscall) as f:
            if f.read().split(" ")[0] == str(sys_write):
                break
        if time.monotonic() > deadline:
            sys.exit("frozen_file: the write never blocked on the page")
        time.sleep(0.01)
    time.sleep(0.1)
    with open(syscall) as f:
        if f.read().split(" ")[0] != str(sys_write):
            sys.exit("frozen_file: the write did not stay blocked")
    print("frozen", flush=True)
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
