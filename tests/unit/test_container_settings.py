"""The pure core of container settings: run-option reading (decision 0171), image references, registries."""

from __future__ import annotations

import pytest

from batchyard.models import containers as c
from batchyard.models.errors import BatchError


@pytest.mark.parametrize(
    ("text", "args"),
    [
        ("", ()),
        ("--rm", ()),
        ("-e A=1 --env=B=two --read-only", ("-e=A=1", "--env=B=two", "--read-only")),
        ("-m512m --cpus 1.5 --network none", ("-m=512m", "--cpus=1.5", "--network=none")),
        ("--entrypoint /bin/echo -w /tmp", ("--entrypoint=/bin/echo", "-w=/tmp")),
        ("--tmpfs /scratch:size=64m --label team=a", ("--tmpfs=/scratch:size=64m", "--label=team=a")),
        ("--env 'X=a b'", ("--env=X=a b",)),
    ],
)
def test_allowed_options_pass_as_single_arguments(text: str, args: tuple[str, ...]) -> None:
    assert c.parse_run_options(text).args == args


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("--privileged", "--privileged"),
        ("--cap-add=SYS_ADMIN", "--cap-add"),
        ("-v /:/host", "-v"),
        ("-v/:/host", "-v"),
        ("--volume=/etc:/etc", "--volume"),
        ("--mount type=bind,src=/,dst=/h", "--mount"),
        ("--network host", "no network"),
        ("--net=bridge", "no network"),
        ("--pid=host", "--pid"),
        ("--ipc host", "--ipc"),
        ("--userns=host", "--userns"),
        ("--security-opt seccomp=unconfined", "--security-opt"),
        ("--device /dev/sda", "--device"),
        ("--user 0", "--user"),
        ("-u0", "-u"),
        ("--env-file /etc/shadow", "--env-file"),
        ("--name other", "--name"),
        ("--runtime crun", "--runtime"),
        ("-it", "not supported"),
        ("--detach", "not supported"),
        ("busybox", "not an option"),
        ("--env", "needs a value"),
        ("--read-only=yes", "takes no value"),
        ("--tmpfs relative", "absolute"),
        ("--label batchyard.node=x", "belong to the node"),
        ("--env 'unterminated", "cannot be parsed"),
        ("-e A=1 " * 1000, "longer than"),
    ],
)
def test_refused_options_name_the_reason(text: str, reason: str) -> None:
    with pytest.raises(c.RunOptionError, match=reason.replace("-", r"\-")):
        c.parse_run_options(text)


@pytest.mark.parametrize(
    "image",
    [
        "ubuntu",
        "ubuntu:22.04",
        "library/ubuntu:latest",
        "127.0.0.1:5000/batchyard/test:1",
        "localhost/batchyard-test:1",
        "myregistry.azurecr.io/a/b_c/d-e:v1.2",
        "busybox@sha256:" + "a" * 64,
    ],
)
def test_image_references(image: str) -> None:
    assert c.IMAGE_RE.match(image)


@pytest.mark.parametrize("image", ["", "-rf", "--privileged", "Bad Image", "UPPER", "a:b:c", "a/", "a//b"])
def test_bad_image_references(image: str) -> None:
    with pytest.raises(BatchError):
        c.check_task_settings({"imageName": image})


def test_registry_host() -> None:
    assert c.registry_host("ubuntu") == "docker.io"
    assert c.registry_host("library/ubuntu") == "docker.io"
    assert c.registry_host("127.0.0.1:5000/x") == "127.0.0.1:5000"
    assert c.registry_host("localhost/x") == "localhost"
    assert c.registry_host("r.azurecr.io/x/y") == "r.azurecr.io"


def test_task_settings_defaults_and_canonical_values() -> None:
    cs = {
        "imageName": "x",
        "workingDirectory": "CONTAINERIMAGEDEFAULT",
        "containerHostBatchBindMounts": [{"source": "task"}],
    }
    c.check_task_settings(cs)
    assert cs["workingDirectory"] == "containerImageDefault"
    assert cs["containerHostBatchBindMounts"] == [{"source": "Task"}]
    cs2 = {"imageName": "x"}
    c.check_task_settings(cs2)
    assert cs2["workingDirectory"] == "taskWorkingDirectory"


def test_pool_view_hides_registry_passwords() -> None:
    cc = {
        "type": "dockerCompatible",
        "containerRegistries": [{"registryServer": "r", "username": "u", "password": "p"}],
    }
    c.check_pool_configuration(cc)
    assert c.pool_configuration_view(cc)["containerRegistries"] == [{"registryServer": "r", "username": "u"}]
    assert cc["containerRegistries"][0]["password"] == "p"  # kept for the nodes


def test_short_names_are_docker_hub_names() -> None:
    assert c.fully_qualified("ubuntu") == "docker.io/library/ubuntu"
    assert c.fully_qualified("ubuntu:22.04") == "docker.io/library/ubuntu:22.04"
    assert c.fully_qualified("me/app:1") == "docker.io/me/app:1"
    assert c.fully_qualified("docker.io/me/app") == "docker.io/me/app"
    assert c.fully_qualified("127.0.0.1:5000/x:1") == "127.0.0.1:5000/x:1"
    assert c.fully_qualified("localhost/x:1") == "localhost/x:1"
