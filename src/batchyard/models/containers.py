"""Container settings of pools and tasks: validation at create, and the safe reading of ``containerRunOptions``.

Pure functions shared by the service (refuse bad input with the property named) and the agent (build the
engine command from options already accepted). Decisions 0170 (engine, mounts, images) and 0171 (run options).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from batchyard.models import errors

Body = dict[str, Any]

CONTAINER_TYPES = {"dockercompatible": "dockerCompatible", "cricompatible": "criCompatible"}
WORKING_DIRECTORIES = {
    "taskworkingdirectory": "taskWorkingDirectory",
    "containerimagedefault": "containerImageDefault",
}
BIND_SOURCES = {s.lower(): s for s in ("Shared", "Startup", "VfsMounts", "Task", "JobPrep", "Applications")}

# An image reference as `docker pull` takes it: [host[:port]/]path[:tag][@sha256:digest]. Never starts with '-',
# so it cannot be read as an option by the engine.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?/)"
IMAGE_RE = re.compile(
    rf"^{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?$"
)
_SERVER_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?$")
MAX_IMAGE_NAME = 512
MAX_RUN_OPTIONS = 4096

# containerRunOptions the agent passes on (decision 0171). Value = takes an argument.
_ALLOWED: dict[str, bool] = {
    "--entrypoint": True,
    "--env": True,
    "-e": True,
    "--workdir": True,
    "-w": True,
    "--memory": True,
    "-m": True,
    "--memory-reservation": True,
    "--memory-swap": True,
    "--cpus": True,
    "--cpu-shares": True,
    "-c": True,
    "--cpuset-cpus": True,
    "--shm-size": True,
    "--pids-limit": True,
    "--hostname": True,
    "-h": True,
    "--label": True,
    "-l": True,
    "--stop-signal": True,
    "--stop-timeout": True,
    "--tmpfs": True,
    "--network": True,
    "--net": True,
    "--read-only": False,
    "--rm": False,
}
# Options refused because they would break the isolation a task has on this host (named in the error).
_BREAKS_ISOLATION = {
    "--privileged": "gives the container every capability and the host's devices",
    "--cap-add": "adds kernel capabilities",
    "--security-opt": "disables confinement",
    "--device": "exposes host devices",
    "--pid": "shares a process namespace",
    "--ipc": "shares an IPC namespace",
    "--uts": "shares the host's UTS namespace",
    "--userns": "changes the user namespace",
    "--cgroupns": "changes the cgroup namespace",
    "--cgroup-parent": "moves the container in the host's cgroups",
    "-v": "mounts host paths",
    "--volume": "mounts host paths",
    "--mount": "mounts host paths",
    "--volumes-from": "mounts another container's volumes",
    "--env-file": "reads a file of the host",
    "--user": "the task's userIdentity chooses the user",
    "-u": "the task's userIdentity chooses the user",
    "--group-add": "the task's userIdentity chooses the groups",
    "--ulimit": "raises limits above the node's",
    "--add-host": "changes name resolution the node controls",
    "--name": "the node names its containers",
    "--runtime": "the node chooses the runtime",
    "--rootfs": "runs a host directory as the root file system",
    "--init-path": "runs a host binary",
}


@dataclass(frozen=True)
class RunOptions:
    """Accepted ``containerRunOptions``: the engine arguments to append, and the workdir/entrypoint choices."""

    args: tuple[str, ...]


class RunOptionError(ValueError):
    """A ``containerRunOptions`` value refused, with the reason a user can act on."""


def _split_option(tok: str) -> tuple[str, str | None]:
    if tok.startswith("--") and "=" in tok:
        name, _, value = tok.partition("=")
        return name, value
    if len(tok) > 2 and tok[0] == "-" and tok[1] != "-":
        return tok[:2], tok[2:]  # -eNAME=value, -m512m
    return tok, None


def parse_run_options(text: str) -> RunOptions:
    """Read ``containerRunOptions`` with shell-like quoting; only options in the allow-list pass."""
    if len(text) > MAX_RUN_OPTIONS:
        raise RunOptionError(f"containerRunOptions is longer than {MAX_RUN_OPTIONS} characters")
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise RunOptionError(f"containerRunOptions cannot be parsed: {exc}") from None
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("-") or tok in ("-", "--"):
            raise RunOptionError(
                f"'{tok}' is not an option: containerRunOptions holds container create options only"
            )
        name, value = _split_option(tok)
        if name in _BREAKS_ISOLATION:
            raise RunOptionError(f"the option '{name}' is not allowed: it {_BREAKS_ISOLATION[name]}")
        takes = _ALLOWED.get(name)
        if takes is None:
            raise RunOptionError(f"the option '{name}' is not supported by this server (decision 0171)")
        if takes and value is None:
            if i + 1 >= len(tokens):
                raise RunOptionError(f"the option '{name}' needs a value")
            i += 1
            value = tokens[i]
        if not takes and value is not None:
            raise RunOptionError(f"the option '{name}' takes no value")
        if name in ("--network", "--net") and value != "none":
            raise RunOptionError(f"'{name} {value}' is not allowed: container tasks have no network here")
        if name in ("--label", "-l") and value is not None and value.startswith("batchyard."):
            raise RunOptionError("labels starting with 'batchyard.' belong to the node")
        if name == "--tmpfs" and value is not None and not value.startswith("/"):
            raise RunOptionError("--tmpfs needs an absolute path in the container")
        if name == "--rm":
            i += 1
            continue  # the node always removes its containers
        out.append(name if value is None else f"{name}={value}")
        i += 1
    return RunOptions(tuple(out))


def registry_host(image: str) -> str:
    """The registry an image reference names (``docker.io`` when its first component is not a host)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def fully_qualified(image: str) -> str:
    """The reference `docker pull` means: short names are Docker Hub's (``ubuntu`` → ``docker.io/library/ubuntu``),
    so the engine never has to resolve a short name itself."""
    if registry_host(image) != "docker.io" or image.startswith("docker.io/"):
        return image
    return f"docker.io/{image}" if "/" in image.split("@")[0].split(":")[0] else f"docker.io/library/{image}"


def _check_image(name: object, prop: str) -> str:
    if not isinstance(name, str) or not name:
        raise errors.missing_required_property(prop)
    if len(name) > MAX_IMAGE_NAME or not IMAGE_RE.match(name):
        raise errors.invalid_property_value(prop, name, "not a container image reference")
    return name


def _check_registry(reg: Body, prop: str) -> None:
    if reg.get("identityReference") is not None:
        raise errors.not_implemented(f"{prop}.identityReference")
    server = reg.get("registryServer")
    if server is not None:
        s = str(server).removeprefix("https://").removeprefix("http://").rstrip("/")
        if not _SERVER_RE.match(s):
            raise errors.invalid_property_value(f"{prop}.registryServer", server)
    if (reg.get("username") is None) != (reg.get("password") is None):
        raise errors.invalid_property_value(
            f"{prop}.username", reg.get("username"), "username and password must be given together"
        )


def check_pool_configuration(cc: Body) -> None:
    """Validate ``virtualMachineConfiguration.containerConfiguration`` in place (type made canonical)."""
    at = "virtualMachineConfiguration.containerConfiguration"
    t = cc.get("type")
    if t is None:
        raise errors.missing_required_property(f"{at}.type")
    canon = CONTAINER_TYPES.get(str(t).lower())
    if canon is None:
        raise errors.invalid_property_value(f"{at}.type", t)
    cc["type"] = canon
    for i, name in enumerate(cc.get("containerImageNames") or []):
        _check_image(name, f"{at}.containerImageNames[{i}]")
    for i, reg in enumerate(cc.get("containerRegistries") or []):
        _check_registry(reg, f"{at}.containerRegistries[{i}]")


def check_task_settings(cs: Body, prop: str = "containerSettings") -> None:
    """Validate a task's ``containerSettings`` in place, with the service's default working directory."""
    _check_image(cs.get("imageName"), f"{prop}.imageName")
    wd = cs.get("workingDirectory")
    if wd is None:
        cs["workingDirectory"] = "taskWorkingDirectory"
    else:
        canon = WORKING_DIRECTORIES.get(str(wd).lower())
        if canon is None:
            raise errors.invalid_property_value(f"{prop}.workingDirectory", wd)
        cs["workingDirectory"] = canon
    for i, m in enumerate(cs.get("containerHostBatchBindMounts") or []):
        src = m.get("source")
        canon = BIND_SOURCES.get(str(src).lower()) if src is not None else None
        if canon is None:
            raise errors.invalid_property_value(f"{prop}.containerHostBatchBindMounts[{i}].source", src)
        m["source"] = canon
    if cs.get("registry") is not None:
        _check_registry(cs["registry"], f"{prop}.registry")
    opts = cs.get("containerRunOptions")
    if opts:
        try:
            parse_run_options(str(opts))
        except RunOptionError as exc:
            raise errors.invalid_property_value(f"{prop}.containerRunOptions", opts, str(exc)) from None


def pool_configuration_view(cc: Body) -> Body:
    """The pool's container configuration as returned: registry passwords are never sent back."""
    regs = cc.get("containerRegistries")
    if not regs:
        return cc
    return dict(cc, containerRegistries=[{k: v for k, v in r.items() if k != "password"} for r in regs])
