"""Is this machine itself a virtual machine? (context for every process on it)

The checks systemd-detect-virt makes, in the order it trusts them, from files any
process can read: the CPU's hypervisor bit (/proc/cpuinfo), the firmware's DMI strings,
/sys/hypervisor (Xen), the device tree (ARM, POWER), the clock source the kernel chose
(kvm-clock, xen, hyperv), and the kernel's boot line "Hypervisor detected: X" when the
kernel log is readable. A machine that is a guest makes every technology on it run
inside a hypervisor -- that is the host's doing, not the technology's, so it is reported
apart from a process's class.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# DMI vendor/product substrings -> hypervisor name (as systemd-detect-virt names them)
_DMI = (("KVM", "kvm"), ("Amazon EC2", "amazon"), ("QEMU", "qemu"), ("VMware", "vmware"),
        ("VMW", "vmware"), ("innotek GmbH", "oracle"), ("VirtualBox", "oracle"),
        ("Xen", "xen"), ("Bochs", "bochs"), ("Parallels", "parallels"),
        ("BHYVE", "bhyve"), ("Hyper-V", "microsoft"), ("Microsoft Corporation", "microsoft"),
        ("Google Compute Engine", "google"), ("Firecracker", "firecracker"))
_CLOCKS = {"kvm-clock": "kvm", "xen": "xen", "hyperv_clocksource_tsc_page": "microsoft",
           "hyperv_clocksource_msr": "microsoft"}


def _read(path: str) -> str | None:
    try:
        with open(path, errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu_flag() -> bool | None:
    text = _read("/proc/cpuinfo")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return " hypervisor " in f" {line.split(':', 1)[1]} "
    return False


def _kernel_log_vendor() -> str | None:
    """'Hypervisor detected: KVM' from the kernel's ring buffer (root, and only while the
    boot lines are still in it)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for _ in range(4000):
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                return None
            except OSError:  # EPIPE: a record was overwritten; go on
                continue
            text = rec.decode(errors="replace")
            if "Hypervisor detected:" in text:
                return text.split("Hypervisor detected:", 1)[1].split("\n")[0].strip()
        return None
    finally:
        os.close(fd)


def detect() -> dict[str, Any]:
    """{"guest": bool | None, "hypervisor": name | None, "evidence": [...]}"""
    evidence: list[str] = []
    vendor: str | None = None
    flag = _cpu_flag()
    if flag:
        evidence.append("the CPU reports the hypervisor bit (cpuid leaf 1, /proc/cpuinfo)")
    for name in ("sys_vendor", "product_name", "bios_vendor", "board_vendor"):
        value = _read(f"/sys/class/dmi/id/{name}")
        if not value:
            continue
        hit = next((v for key, v in _DMI if key.lower() in value.lower()), None)
        if hit:
            vendor = vendor or hit
            evidence.append(f"DMI {name}: {value}")
    xen = _read("/sys/hypervisor/type")
    if xen:
        vendor = vendor or xen
        evidence.append(f"/sys/hypervisor/type: {xen}")
    dt = _read("/proc/device-tree/hypervisor/compatible")
    if dt:
        vendor = vendor or dt.split(",")[0].rstrip("\x00")
        evidence.append(f"device tree hypervisor node: {dt.rstrip(chr(0))}")
    clock = _read("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    clocks = (_read("/sys/devices/system/clocksource/clocksource0/available_clocksource")
              or "").split()
    for c in [clock or "", *clocks]:
        if c in _CLOCKS:
            vendor = vendor or _CLOCKS[c]
            evidence.append(f"paravirtual clock source {c}")
            break
    logged = _kernel_log_vendor()
    if logged:
        vendor = vendor or logged.lower()
        evidence.append(f"kernel log: Hypervisor detected: {logged}")
    if os.path.isdir("/sys/bus/virtio/devices") and os.listdir("/sys/bus/virtio/devices"):
        evidence.append(f"{len(os.listdir('/sys/bus/virtio/devices'))} virtio device(s)")
    guest: bool | None = bool(flag or vendor or xen or dt)
    if flag is None and not evidence:
        guest = None
    return {"guest": guest, "hypervisor": vendor, "evidence": evidence}


def summary(info: dict[str, Any]) -> str:
    if info["guest"] is None:
        return "unknown (nothing readable tells)"
    if not info["guest"]:
        return "bare metal (no sign of a hypervisor)"
    name = info["hypervisor"] or "an unidentified hypervisor"
    return f"a virtual machine on {name}: " + "; ".join(info["evidence"])
