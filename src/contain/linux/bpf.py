"""Raw bpf(2) wrappers: load a program, attach/detach/query it on a cgroup.

Only what the cgroup v2 device controller needs: BPF_PROG_LOAD of a
BPF_PROG_TYPE_CGROUP_DEVICE program, BPF_PROG_ATTACH / BPF_PROG_DETACH with
BPF_CGROUP_DEVICE, BPF_PROG_QUERY and BPF_PROG_GET_FD_BY_ID. Programs are given as
``bytes`` of packed ``struct bpf_insn`` (8 bytes each); :func:`insn` packs one.
"""

from __future__ import annotations

import errno
import struct

from contain.linux import native as ctypes
from contain.linux.native import function
from contain.linux.syscalls import NR, syscall_error

# commands
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16

# program and attach types
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6

# attach flags
BPF_F_ALLOW_OVERRIDE = 1
BPF_F_ALLOW_MULTI = 2

# instruction classes and codes (the subset the device filter uses)
BPF_LDX_MEM_W = 0x61        # dst = *(u32 *)(src + off)
BPF_ALU64_MOV_K = 0xB7      # dst = imm
BPF_ALU64_AND_K = 0x57      # dst &= imm
BPF_ALU64_RSH_K = 0x77      # dst >>= imm
BPF_ALU64_MOV_X = 0xBF      # dst = src
BPF_JMP32_JNE_K = 0x56      # if (u32)dst != imm goto +off
BPF_JMP32_JEQ_K = 0x16      # if (u32)dst == imm goto +off
BPF_JMP_EXIT = 0x95

# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2

_syscall = function("syscall", ctypes.c_long)


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One ``struct bpf_insn``: code, dst:4|src:4, s16 off, s32 imm (little/host endian)."""
    if imm >= 2**31:  # a u32 constant: the same bits as a negative s32
        imm -= 2**32
    return struct.pack("=BBhi", code, (src << 4) | dst, off, imm)


class _LoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
    ]


class _AttachAttr(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_bpf_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("replace_bpf_fd", ctypes.c_uint32),
    ]


class _QueryAttr(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("query_flags", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("prog_ids", ctypes.c_uint64),
        ("prog_cnt", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("prog_attach_flags", ctypes.c_uint64),
    ]


class _GetIdAttr(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("next_id", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
    ]


def _bpf(cmd: int, attr: ctypes.Structure, name: str) -> int:
    ret = _syscall(ctypes.c_long(NR["bpf"]), ctypes.c_int(cmd), ctypes.byref(attr),
                   ctypes.c_uint(ctypes.sizeof(attr)))
    if ret < 0:
        raise syscall_error(ctypes.get_errno(), f"bpf({name})")
    return int(ret)


def prog_load(prog_type: int, program: bytes, license: str = "Apache",
              expected_attach_type: int = 0, name: str = "") -> int:
    """Load *program*; return its fd (O_CLOEXEC, as every bpf fd). On a verifier
    rejection the OSError's message carries the verifier log."""
    if len(program) % 8:
        raise ValueError("program length is not a multiple of 8")
    buf = ctypes.create_string_buffer(program, len(program))
    lic = ctypes.create_string_buffer(license.encode())
    attr = _LoadAttr(prog_type=prog_type, insn_cnt=len(program) // 8,
                     insns=ctypes.addressof(buf), license=ctypes.addressof(lic),
                     expected_attach_type=expected_attach_type,
                     prog_name=name.encode()[:15])
    try:
        return _bpf(BPF_PROG_LOAD, attr, "BPF_PROG_LOAD")
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EINVAL):  # ask the verifier why
            raise
    log = ctypes.create_string_buffer(65536)
    attr.log_level = 1
    attr.log_size = len(log)
    attr.log_buf = ctypes.addressof(log)
    try:
        return _bpf(BPF_PROG_LOAD, attr, "BPF_PROG_LOAD")
    except OSError as exc:
        text = log.value.decode(errors="replace").strip().splitlines()
        detail = "; ".join(text[-3:]) if text else ""
        raise syscall_error(exc.errno, "bpf(BPF_PROG_LOAD)", detail=detail or None) from exc


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0) -> None:
    attr = _AttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type,
                       attach_flags=flags)
    _bpf(BPF_PROG_ATTACH, attr, "BPF_PROG_ATTACH")


def prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    attr = _AttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type)
    _bpf(BPF_PROG_DETACH, attr, "BPF_PROG_DETACH")


def prog_query(target_fd: int, attach_type: int) -> list[int]:
    """Ids of the programs attached to *target_fd* itself (not inherited ones)."""
    cap = 64
    while True:
        ids = (ctypes.c_uint32 * cap)()
        attr = _QueryAttr(target_fd=target_fd, attach_type=attach_type,
                          prog_ids=ctypes.addressof(ids), prog_cnt=cap)
        try:
            _bpf(BPF_PROG_QUERY, attr, "BPF_PROG_QUERY")
        except OSError as exc:
            if exc.errno == errno.ENOSPC and cap < 4096:  # more programs than room
                cap *= 4
                continue
            raise
        return [ids[i] for i in range(attr.prog_cnt)]


def prog_get_fd_by_id(prog_id: int) -> int:
    attr = _GetIdAttr(id=prog_id)
    return _bpf(BPF_PROG_GET_FD_BY_ID, attr, "BPF_PROG_GET_FD_BY_ID")
