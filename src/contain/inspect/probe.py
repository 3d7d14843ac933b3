"""``contain probe``: isolation facts seen from inside, by a POSIX sh script.

The script needs only a POSIX shell and /proc (busybox is plenty); it uses common
tools (readlink, dmesg, mount, unshare, nsenter ...) when they exist and says so when
they do not. Its output is line-oriented and versioned, so the host side can parse
what any image printed:

    #contain-probe 1              header (format version)
    k NAME VALUE                  one value
    f NAME LINE                   one line of a file, repeated in order
    s NAME RC MESSAGE             a harmless system call tried through a tool: the
                                  tool's exit code and the first line of its output,
                                  or ``s NAME absent`` when the tool is missing
    #contain-probe-end            trailer: output without it is incomplete

:func:`parse` turns that into a dict; errno values are recovered by matching the
C library's messages (``Operation not permitted``) against ``os.strerror``.
"""

from __future__ import annotations

import os

from contain.errors import ContainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FORMAT = 1
HEADER = f"#contain-probe {FORMAT}"
TRAILER = "#contain-probe-end"

SCRIPT = r"""#!/bin/sh
# contain probe (format 1): the isolation a process is under, seen from inside.
# Needs a POSIX shell and /proc. Prints one fact a line: "k NAME VALUE" (a value),
# "f NAME LINE" (a line of a file), "s NAME RC MESSAGE" (a harmless system call tried
# through a tool), between "#contain-probe 1" and "#contain-probe-end".
export LC_ALL=C
NL='
'
echo "#contain-probe 1"
# /dev/null itself may be unusable in a sandbox: the script closes fds instead
if ( : > /dev/null ) 2>&-; then echo "k devnull.writable 1"; else echo "k devnull.writable 0"; fi
pf() {
  if [ -r "$2" ]; then
    while IFS= read -r l || [ -n "$l" ]; do printf 'f %s %s\n' "$1" "$l"; done < "$2" 2>&-
  else
    echo "k $1.missing 1"
  fi
}
pk() {
  if [ -r "$2" ]; then
    IFS= read -r v < "$2" 2>&- && printf 'k %s %s\n' "$1" "$v"
  fi
}
have() { [ -n "$(command -v "$1" 2>&-)" ]; }
lnk() {
  if have readlink; then readlink "$1" 2>&-
  elif have ls; then v=$(ls -l "$1" 2>&-) && printf '%s\n' "${v##*-> }"
  fi
}
pf version /proc/version
pf osrelease /proc/sys/kernel/osrelease
pf status /proc/self/status
pf uid_map /proc/self/uid_map
pf gid_map /proc/self/gid_map
pf cgroup /proc/self/cgroup
pf mountinfo /proc/self/mountinfo
pf attr /proc/self/attr/current
pk hostname /proc/sys/kernel/hostname
pk pid1.comm /proc/1/comm
for n in cgroup ipc mnt net pid time user uts; do
  printf 'k ns.%s %s\n' "$n" "$(lnk /proc/self/ns/$n)"
  printf 'k ns1.%s %s\n' "$n" "$(lnk /proc/1/ns/$n)"
done
hv=0
model=""
if [ -r /proc/cpuinfo ]; then
  while IFS= read -r l; do
    case "$l" in
      "model name"*) [ -z "$model" ] && model=${l#*: } ;;
      flags*) case " ${l#*:} " in *" hypervisor "*) hv=1 ;; esac; break ;;
    esac
  done < /proc/cpuinfo
fi
echo "k cpu.hypervisor $hv"
echo "k cpu.model $model"
for f in sys_vendor product_name board_vendor bios_vendor; do
  pk "dmi.$f" "/sys/class/dmi/id/$f"
done
pk hyp.type /sys/hypervisor/type
pk clocksource /sys/devices/system/clocksource/clocksource0/current_clocksource
for bus in pci virtio; do
  set -- /sys/bus/$bus/devices/*
  if [ -e "$1" ]; then echo "k bus.$bus $#"; fi
done
for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max \
    /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max \
    /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us; do
  pk "cgfile.$f" "$f"
done
if have dmesg; then
  o=$(dmesg 2>&1); r=$?
  echo "k dmesg.rc $r"
  i=0
  while IFS= read -r l && [ $i -lt 6 ]; do printf 'f dmesg %s\n' "$l"; i=$((i+1)); done <<EOF
$o
EOF
fi
t() {
  n=$1; shift
  if ! have "$1"; then echo "s $n absent"; return 1; fi
  o=$("$@" 2>&1 <&-); r=$?
  printf 's %s %s %s\n' "$n" "$r" "${o%%"$NL"*}"
  return $r
}
d=""
for b in /tmp /dev/shm /run /var/tmp /dev; do
  mkdir "$b/.contain-probe.$$" 2>&- && { d="$b/.contain-probe.$$"; break; }
done
hn=""
[ -r /proc/sys/kernel/hostname ] && IFS= read -r hn < /proc/sys/kernel/hostname
t unshare_user unshare -U true
t unshare_uts unshare -u true
if [ -n "$d" ]; then
  t mount mount -t tmpfs contain-probe "$d" && umount "$d" 2>&-
  t mknod mknod "$d/n" c 1 3
  rm -f "$d/n"
  : > "$d/f" && t chown chown 65534 "$d/f"
  rm -f "$d/f"
fi
t chroot chroot / true
t setns nsenter -t $$ -u true
t nice_raise nice -n -5 true
t ioprio_rt ionice -c 1 -n 0 true
t setaffinity taskset 1 true
t swapoff swapoff /nonexistent-contain-probe
t kill_init kill -0 1
[ -n "$hn" ] && t sethostname hostname "$hn"
[ -n "$d" ] && rmdir "$d" 2>&-
# kernel interfaces within reach: "k iface.NAME WRITABLE TOTAL" (files the process may
# open for writing by their mode and mounts: access(2), which does not open them)
ifc() {
  w=0; n=0
  if have find; then
    for f in $(find "$2" -maxdepth "$3" -type f 2>&-); do
      n=$((n+1)); [ -w "$f" ] && w=$((w+1))
    done
  fi
  echo "k iface.$1 $w $n"
}
ifc procsys /proc/sys 6
ifc sysfs_kernel /sys/kernel 3
ifc sysfs_cgroup /sys/fs/cgroup 3
w=0; n=0
for f in /proc/sysrq-trigger /proc/kcore /proc/kmsg /proc/timer_list /proc/keys \
    /sys/firmware /proc/acpi /proc/scsi; do
  [ -e "$f" ] || continue
  n=$((n+1))
  # masked paths are /dev/null (a character device) or an empty read-only directory
  if [ -f "$f" ] && { [ -r "$f" ] || [ -w "$f" ]; }; then w=$((w+1))
  elif [ -d "$f" ] && [ -n "$(ls -A "$f" 2>&-)" ]; then w=$((w+1))
  fi
done
echo "k iface.sensitive $w $n"
# device nodes: how many, and how many open for reading (the device cgroup decides at open)
w=0; n=0
for f in /dev/* /dev/*/*; do
  if [ -c "$f" ] || [ -b "$f" ]; then
    n=$((n+1))
    case "$f" in /dev/tty*|/dev/console|/dev/ptmx|/dev/pts/*) continue ;; esac
    ( : < "$f" ) 2>&- && w=$((w+1))
  fi
done
echo "k iface.devices $w $n"
echo "#contain-probe-end"
"""


class ProbeError(ContainError):
    """The probe's output cannot be used (missing header or trailer)."""


def script() -> str:
    return SCRIPT


def workload_argv(token: str, wait: bool = True) -> list[str]:
    """argv that runs the probe and then (with *wait*) blocks on stdin until the host
    has inspected it; *token* becomes $0 so the host can find the process."""
    body = SCRIPT + ("read _ignored || true\n" if wait else "")
    return ["/bin/sh", "-c", body, token]


_ERRNO_TEXT: list[tuple[str, str]] | None = None


def errno_of(message: str) -> str | None:
    """The errno name whose strerror text appears in *message* (longest match)."""
    global _ERRNO_TEXT
    if _ERRNO_TEXT is None:
        import errno as errno_mod

        table = []
        for num, name in errno_mod.errorcode.items():
            text = os.strerror(num)
            if text and not text.startswith("Unknown error"):
                table.append((text.lower(), name))
        table.sort(key=lambda t: -len(t[0]))
        _ERRNO_TEXT = table
    low = message.lower()
    for text, name in _ERRNO_TEXT:
        if text in low:
            return name
    if "permission denied" in low or "are you root" in low:
        return "EACCES" if "permission denied" in low else "EPERM"
    return None


DENIED = ("EPERM", "EACCES", "ENOSYS")


def parse(text: str) -> dict[str, Any]:
    """Parse probe output into facts; raise ProbeError when it is not complete."""
    lines = text.splitlines()
    try:
        start = lines.index(HEADER)
    except ValueError as exc:
        raise ProbeError("no probe output (header '#contain-probe 1' missing)") from exc
    if TRAILER not in lines[start:]:
        raise ProbeError("probe output is incomplete (the probe stopped before its end)")
    end = lines.index(TRAILER, start)
    values: dict[str, str] = {}
    files: dict[str, list[str]] = {}
    calls: dict[str, dict[str, Any]] = {}
    for line in lines[start + 1:end]:
        kind, _, rest = line.partition(" ")
        name, _, value = rest.partition(" ")
        if kind == "k":
            values[name] = value
        elif kind == "f":
            files.setdefault(name, []).append(value)
        elif kind == "s":
            if value == "absent":
                calls[name] = {"verdict": "absent", "rc": None, "errno": None, "message": ""}
                continue
            rc_text, _, msg = value.partition(" ")
            rc = int(rc_text) if rc_text.lstrip("-").isdigit() else None
            err = errno_of(msg) if rc else None
            if rc == 0:
                verdict = "allowed"
            elif err in DENIED:
                verdict = "denied"
            else:
                verdict = "reached"  # failed for another reason after the kernel ran it
            calls[name] = {"verdict": verdict, "rc": rc, "errno": err, "message": msg}
    return _facts(values, files, calls)


def _facts(values: dict[str, str], files: dict[str, list[str]],
           calls: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from contain.inspect import caps
    from contain.inspect.procfs import parse_idmap, parse_mountinfo, parse_status, propagation

    status = parse_status("\n".join(files.get("status", [])))
    sets = {}
    for name, key in caps.SETS:
        mask = int(status.get(key, "0") or "0", 16)
        sets[name] = {"hex": f"{mask:016x}", "names": caps.decode(mask),
                      "count": bin(mask).count("1")}
    namespaces = {}
    for kind in ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"):
        mine = values.get(f"ns.{kind}") or None
        init = values.get(f"ns1.{kind}") or None
        namespaces[kind] = {"self": mine, "init": init,
                            "same_as_init": (mine == init) if mine and init else None}
    mounts = parse_mountinfo("\n".join(files.get("mountinfo", [])))
    roots = [m for m in mounts if m["mountpoint"] == "/"]
    root = roots[-1] if roots else None
    hardware = []
    for key in ("dmi.sys_vendor", "dmi.product_name", "dmi.board_vendor", "dmi.bios_vendor"):
        if values.get(key):
            hardware.append(f"{key}={values[key]}")
    if values.get("bus.pci"):
        hardware.append(f"{values['bus.pci']} PCI devices")
    paravirt = []
    if values.get("bus.virtio"):
        paravirt.append(f"{values['bus.virtio']} virtio devices")
    if values.get("hyp.type"):
        paravirt.append(f"/sys/hypervisor/type={values['hyp.type']}")
    if values.get("clocksource") in ("kvm-clock", "xen", "hyperv_clocksource_tsc_page"):
        paravirt.append(f"clocksource {values['clocksource']}")
    tried = {k: v for k, v in calls.items() if v["verdict"] != "absent"}
    reachable = [k for k, v in tried.items() if v["verdict"] != "denied"]
    version = (files.get("version") or [""])[0]
    interfaces = {}
    for key, value in values.items():
        if key.startswith("iface."):
            parts = value.split()
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                interfaces[key[len("iface."):]] = {"reachable": int(parts[0]),
                                                   "total": int(parts[1])}
    return {
        "format": FORMAT,
        "interfaces": interfaces,
        "kernel": {"release": (files.get("osrelease") or [""])[0], "version": version},
        "hostname": values.get("hostname"),
        "pid1_comm": values.get("pid1.comm"),
        "uid": [int(x) for x in status.get("Uid", "").split()],
        "nspid": [int(x) for x in status.get("NSpid", "").split()],
        "capabilities": sets,
        "seccomp": {"mode": int(status.get("Seccomp", "0") or 0),
                    "filters": int(status.get("Seccomp_filters", "0") or 0),
                    "no_new_privs": status.get("NoNewPrivs") == "1"},
        "tracer_pid": int(status.get("TracerPid", "0") or 0),
        "namespaces": namespaces,
        "uid_map": parse_idmap("\n".join(files.get("uid_map", []))),
        "gid_map": parse_idmap("\n".join(files.get("gid_map", []))),
        "cgroup": files.get("cgroup", []),
        "cgroup_files": {k[len("cgfile."):]: v for k, v in values.items()
                         if k.startswith("cgfile.")},
        "root": None if root is None else {
            "fstype": root["fstype"], "readonly": "ro" in root["options"],
            "propagation": propagation(root["optional"])},
        "mounts": len(mounts),
        "lsm_label": files["attr"][0] if files.get("attr") else None,
        "cpu": {"hypervisor_flag": values.get("cpu.hypervisor") == "1",
                "model": values.get("cpu.model")},
        "hardware_view": hardware,
        "paravirt": paravirt,
        "dmesg": {"rc": int(values["dmesg.rc"]) if values.get("dmesg.rc", "").isdigit()
                  else None, "head": files.get("dmesg", [])},
        "syscalls": {"tried": len(tried), "reachable": len(reachable),
                     "denied": sorted(k for k in tried if k not in reachable),
                     "results": calls},
    }


def run_here(timeout: float = 60) -> tuple[str, dict[str, Any]]:
    """Run the probe in this process's own environment (what ``contain probe`` does)."""
    import subprocess

    sh = "/bin/sh" if os.path.exists("/bin/sh") else "sh"
    proc = subprocess.run([sh, "-c", SCRIPT, "contain-probe"], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return proc.stdout, parse(proc.stdout)
