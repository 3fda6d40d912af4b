"""The images and node agent SKUs a pool may name, as `GET /supportedimages` lists them.

Every entry runs on this host (decision 0060): a Windows image gives a pool whose nodes are local agents like any
other, so accepting it costs nothing and keeps samples written for Azure working up to the point where they run a
Windows-only program. The list is the real service's for the OS families it still supports (Ubuntu, Debian,
Windows Server), with the SKUs seen in the official recordings and the spec example; `batchSupportEndOfLife` is
given where Azure announced one. Images Azure has retired (Ubuntu 16.04/18.04, Windows Server 2008/2012, CentOS 7)
and cloud service pools are refused the way the service refuses an image it does not support.
"""

from __future__ import annotations

from typing import Any, Final

from batchyard.models import errors

Body = dict[str, Any]

LINUX: Final = "linux"
WINDOWS: Final = "windows"
WINDOWS_AGENT: Final = "batch.node.windows amd64"

# Windows Server 2016 leaves extended support on 12 January 2027; Azure/Batch#140 lists its Batch retirement.
_WS2016_EOL = "2027-01-12T00:00:00Z"


def _image(
    agent: str,
    publisher: str,
    offer: str,
    sku: str,
    os_type: str = LINUX,
    *,
    verified: bool = True,
    capabilities: tuple[str, ...] = (),
    end_of_life: str | None = None,
) -> Body:
    out: Body = {
        "nodeAgentSKUId": agent,
        "imageReference": {"publisher": publisher, "offer": offer, "sku": sku, "version": "latest"},
        "osType": os_type,
        "verificationType": "verified" if verified else "unverified",
    }
    if capabilities:  # the service omits an empty list
        out["capabilities"] = list(capabilities)
    if end_of_life:
        out["batchSupportEndOfLife"] = end_of_life
    return out


def _windows(sku: str, *, containers: bool = False, end_of_life: str | None = None) -> Body:
    caps = ("DockerCompatible",) if containers else ()
    return _image(
        WINDOWS_AGENT,
        "microsoftwindowsserver",
        "windowsserver",
        sku,
        WINDOWS,
        capabilities=caps,
        end_of_life=end_of_life,
    )


SUPPORTED_IMAGES: Final[list[Body]] = [
    _image("batch.node.ubuntu 22.04", "canonical", "0001-com-ubuntu-server-jammy", "22_04-lts"),
    _image("batch.node.ubuntu 22.04", "canonical", "0001-com-ubuntu-server-jammy", "22_04-lts-gen2"),
    _image("batch.node.ubuntu 24.04", "canonical", "ubuntu-24_04-lts", "server"),
    _image("batch.node.ubuntu 24.04", "canonical", "ubuntu-24_04-lts", "server-gen1"),
    _image("batch.node.ubuntu 20.04", "canonical", "0001-com-ubuntu-server-focal", "20_04-lts"),
    _image("batch.node.ubuntu 20.04", "canonical", "0001-com-ubuntu-server-focal", "20_04-lts-gen2"),
    _image("batch.node.debian 12", "debian", "debian-12", "12"),
    _image("batch.node.debian 12", "debian", "debian-12", "12-gen2"),
    _image("batch.node.debian 11", "debian", "debian-11", "11"),
    _image("batch.node.debian 11", "debian", "debian-11", "11-gen2"),
    *[
        _windows(s, end_of_life=_WS2016_EOL)
        for s in ("2016-datacenter", "2016-datacenter-gensecond", "2016-datacenter-smalldisk")
    ],
    _windows("2016-datacenter-with-containers", containers=True, end_of_life=_WS2016_EOL),
    *[
        _windows(s)
        for s in (
            "2019-datacenter",
            "2019-datacenter-core",
            "2019-datacenter-core-smalldisk",
            "2019-datacenter-gensecond",
            "2019-datacenter-smalldisk",
            "2022-datacenter",
            "2022-datacenter-azure-edition",
            "2022-datacenter-core",
            "2022-datacenter-core-g2",
            "2022-datacenter-core-smalldisk",
            "2022-datacenter-g2",
            "2022-datacenter-smalldisk",
            "2022-datacenter-smalldisk-g2",
            "2025-datacenter",
            "2025-datacenter-azure-edition",
            "2025-datacenter-core",
            "2025-datacenter-core-g2",
            "2025-datacenter-g2",
            "2025-datacenter-smalldisk",
            "2025-datacenter-smalldisk-g2",
        )
    ],
    _windows("2019-datacenter-core-with-containers", containers=True),
    _windows("2019-datacenter-core-with-containers-smalldisk", containers=True),
    _windows("2019-datacenter-with-containers", containers=True),
    _windows("2019-datacenter-with-containers-smalldisk", containers=True),
]

# Node agent SKUs of retired operating systems: the service no longer creates pools with them.
RETIRED_AGENTS: Final = frozenset(
    {
        "batch.node.ubuntu 14.04",
        "batch.node.ubuntu 16.04",
        "batch.node.ubuntu 18.04",
        "batch.node.centos 7",
        "batch.node.debian 8",
        "batch.node.debian 9",
        "batch.node.debian 10",
    }
)

_AGENT_OS: Final = {img["nodeAgentSKUId"]: img["osType"] for img in SUPPORTED_IMAGES}
_BY_REFERENCE: Final = {
    (
        img["imageReference"]["publisher"],
        img["imageReference"]["offer"],
        img["imageReference"]["sku"],
    ): img
    for img in SUPPORTED_IMAGES
}


def os_type_of(node_agent_sku_id: str) -> str:
    """`linux` or `windows`, from the node agent SKU a pool names (Linux when unknown)."""
    return str(_AGENT_OS.get(node_agent_sku_id.lower(), LINUX))


def check_image(vmc: Body) -> None:
    """Refuse a pool image the way the service does; custom images need a listed node agent SKU."""
    agent = str(vmc.get("nodeAgentSKUId", ""))
    ref = vmc.get("imageReference")
    if not isinstance(ref, dict):
        raise errors.missing_required_property("virtualMachineConfiguration.imageReference")
    if any(k in ref for k in ("publisher", "offer", "sku")):
        names = [str(ref.get(k, "")) for k in ("publisher", "offer", "sku")]
        img = _BY_REFERENCE.get((names[0].lower(), names[1].lower(), names[2].lower()))
        if img is None:
            raise errors.image_not_supported(*names)
        if img["nodeAgentSKUId"] != agent.lower():
            raise errors.invalid_property_value(
                "nodeAgentSKUId",
                agent,
                f"The specified image requires the node agent SKU '{img['nodeAgentSKUId']}'.",
            )
    # a virtualMachineImageId or gallery image runs as the OS of the node agent SKU it names
    if agent.lower() not in _AGENT_OS or agent.lower() in RETIRED_AGENTS:
        raise errors.invalid_property_value(
            "nodeAgentSKUId",
            agent,
            "The specified nodeAgentSKUId is not supported; GET /supportedimages lists the supported ones.",
        )


def check_cloud_service(body: Body) -> None:
    """Cloud service pools were retired on 29 February 2024; the service creates none since."""
    if body.get("cloudServiceConfiguration") is not None:
        raise errors.cloud_service_pools_retired()
