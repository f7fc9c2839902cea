"""Which torch device a run uses: one rule for extraction, training, prediction and heatmaps.

``auto`` picks the GPU when there is one; ``cpu``, ``cuda`` and ``cuda:N`` are taken as given
(``cuda`` under torchrun or SLURM means this process's local GPU). The message of an error
names the setting, ``device``; the CLI shows it as its ``--device`` flag.
"""

from __future__ import annotations

import torch

from mil_crcrs.errors import SettingError

DEVICES = ("auto", "cpu", "cuda")  # and "cuda:N"


def check_device(device: str) -> None:
    """Refuse a device name that is none of :data:`DEVICES` or ``cuda:N``."""
    index = device.partition("cuda:")[2]
    if device not in DEVICES and not (device.startswith("cuda:") and index.isdigit()):
        raise SettingError(
            "device", f"must be one of {', '.join(DEVICES)} or cuda:N, got {device!r}"
        )


def resolve_device(device: str | torch.device, local_rank: int = 0) -> torch.device:
    """The torch device for a setting.

    Parameters
    ----------
    device : "auto", "cpu", "cuda", "cuda:N", or a torch device (returned as it is)
    local_rank : with "cuda", the GPU of this process among several on one machine

    Raises
    ------
    SettingError
        An unknown name, or a GPU asked for where there is none (or not that many).
    """
    if isinstance(device, torch.device):
        return device
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise SettingError("device", f"{device}: no CUDA device is available here; use cpu")
    if device == "cuda":
        return torch.device(f"cuda:{local_rank % count}")
    index = int(device.partition(":")[2])
    if index >= count:
        raise SettingError("device", f"{device}: this machine has {count} CUDA device(s)")
    return torch.device(device)
