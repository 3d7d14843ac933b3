"""checkpoint, restore: runc's commands over CRIU (container/checkpoint.py)."""

from __future__ import annotations

import os

from contain.cli.args import Command, Flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from contain.cli.main import Context

_SHARED = (
    Flag("--image-path", default="", help="path for saving criu image files "
         "(default ./checkpoint)"),
    Flag("--work-path", default="", help="path for saving work files and logs "
         "(default: the image path)"),
    Flag("--tcp-established", "bool", help="allow open tcp connections"),
    Flag("--ext-unix-sk", "bool", help="allow external unix sockets"),
    Flag("--shell-job", "bool", help="allow shell jobs"),
    Flag("--file-locks", "bool", help="handle file locks, for safety"),
    Flag("--manage-cgroups-mode", default="",
         help="cgroups mode: soft (default), full, strict or ignore"),
    Flag("--empty-ns", "list", help="create a namespace, but do not restore its "
         "properties (network)"),
    Flag("--auto-dedup", "bool", help="enable auto deduplication of memory images"),
    Flag("--lazy-pages", "bool", help="use userfaultfd to lazily restore memory pages"),
)

COMMANDS = {
    "checkpoint": Command("checkpoint", "cmd_checkpoint", (
        *_SHARED,
        Flag("--parent-path", default="", help="path for previous criu image files in "
             "pre-dump (relative to the image path)"),
        Flag("--leave-running", "bool", help="leave the process running after "
             "checkpointing"),
        Flag("--tcp-skip-in-flight", "bool", help="skip in-flight tcp connections"),
        Flag("--link-remap", "bool", help="allow one to link unlinked files back when "
             "possible"),
        Flag("--page-server", default="", help="ADDRESS:PORT of the page server"),
        Flag("--status-fd", "int", default=-1, help="criu writes \\0 to this FD once "
             "lazy-pages is ready"),
        Flag("--pre-dump", "bool", help="dump the container's memory information only, "
             "leave the container running after this"),
    ), "<container-id>", "checkpoint a running container (with CRIU)", min_args=1,
        max_args=1),
    "restore": Command("restore", "cmd_restore", (
        *_SHARED,
        Flag("--bundle,-b", default=None, help="path to the root of the bundle directory"),
        Flag("--console-socket", default=None,
             help="unix socket to receive the pty master of a terminal"),
        Flag("--detach,-d", "bool", help="detach from the container's process"),
        Flag("--pid-file", default=None, help="file to write the process id to"),
        # (containerd's go-runc spells it with one dash, which urfave/cli accepts)
        Flag("--no-subreaper,-no-subreaper", "bool",
             help="(ignored, for runc compatibility)"),
        Flag("--no-pivot", "bool", help="(accepted for runc compatibility: CRIU sets up "
             "the root itself)"),
        Flag("--lsm-profile", default="", help="the LSM profile for the restored process "
             "(TYPE:NAME)"),
        Flag("--lsm-mount-context", default="", help="the SELinux mount context for the "
             "restored mounts"),
    ), "<container-id>", "restore a container from a previous checkpoint (with CRIU)",
        min_args=1, max_args=1),
}


def _shared(ctx: Context, opts: dict[str, Any]) -> dict[str, Any]:
    return {"image_path": opts["image_path"], "work_path": opts["work_path"],
            "tcp_established": opts["tcp_established"], "ext_unix_sk": opts["ext_unix_sk"],
            "shell_job": opts["shell_job"], "file_locks": opts["file_locks"],
            "manage_cgroups_mode": opts["manage_cgroups_mode"],
            "empty_ns": tuple(opts["empty_ns"]), "auto_dedup": opts["auto_dedup"],
            "lazy_pages": opts["lazy_pages"], "criu": ctx.criu}


def cmd_checkpoint(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container.checkpoint import CheckpointOptions, checkpoint

    checkpoint(ctx.root, args[0], CheckpointOptions(
        parent_path=opts["parent_path"], leave_running=opts["leave_running"],
        tcp_skip_in_flight=opts["tcp_skip_in_flight"], link_remap=opts["link_remap"],
        page_server=opts["page_server"], status_fd=opts["status_fd"],
        pre_dump=opts["pre_dump"], **_shared(ctx, opts)))
    return 0


def cmd_restore(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    from contain.container.checkpoint import RestoreOptions, restore

    ropts = RestoreOptions(
        console_socket=opts["console_socket"], pid_file=opts["pid_file"],
        detach=opts["detach"], no_pivot=opts["no_pivot"], lsm_profile=opts["lsm_profile"],
        lsm_mount_context=opts["lsm_mount_context"], rootless=ctx.rootless == "true",
        **_shared(ctx, opts))
    if ropts.detach:
        restore(ctx.root, args[0], opts["bundle"] or os.getcwd(), ropts)
        return 0
    # in the foreground (runc's default): forward the usual signals to the restored init
    # (those that come during the restore wait for it), wait for it (our child: contain
    # is a subreaper and CRIU restores it as its sibling), then delete the container
    import _socket

    from contain.container.control import delete, wait
    from contain.process.foreground import ForwardSignals, relay_tty

    # a terminal without --console-socket is relayed here: its master comes back on
    # pair[0] (used only if the container has a terminal)
    pair = None if ropts.console_socket else _socket.socketpair(
        _socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    master = -1
    with ForwardSignals() as forward:
        try:
            if pair is not None:
                ropts.console_fd = pair[1].fileno()
            record = restore(ctx.root, args[0], opts["bundle"] or os.getcwd(), ropts)
            forward.attach(record.pid)
            try:
                if pair is not None and (record.config.get("process") or {}).get("terminal"):
                    from contain.process.sync import recv_fd

                    master, _ = recv_fd(pair[0])
                    forward.relay_winch_to(master)
                    relay_tty(master, record.pid)
                code = wait(record)
            finally:
                delete(ctx.root, args[0], force=True)
        finally:
            if master >= 0:
                os.close(master)
            if pair is not None:
                pair[0].close()
                pair[1].close()
    return code
