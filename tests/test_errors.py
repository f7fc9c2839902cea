"""The one rule for a torch device, and the first line of an exception's message."""

from __future__ import annotations

import pickle

import pytest
import torch

from mil_crcrs.device import resolve_device
from mil_crcrs.errors import InputError, SettingError, first_line


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without a GPU, wherever the tests run."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_cpu_is_taken_as_given():
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_torch_device_is_returned_as_it_is():
    device = torch.device("cpu")
    assert resolve_device(device) is device


def test_auto_without_cuda_is_the_cpu(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_names_the_device_setting(no_cuda, name):
    with pytest.raises(SettingError, match="no CUDA device is available here; use cpu") as info:
        resolve_device(name)
    assert info.value.setting == "device"
    assert str(info.value).startswith(f"device {name}: ")


def test_cuda_n_beyond_the_gpus_there_are_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda:1")
    with pytest.raises(SettingError, match="cuda:2: this machine has 2 CUDA device") as info:
        resolve_device("cuda:2")
    assert info.value.setting == "device"


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "", "cpu:0"])
def test_an_unknown_device_name_names_the_setting(name):
    with pytest.raises(SettingError, match="must be one of auto, cpu, cuda or cuda:N") as info:
        resolve_device(name)
    assert info.value.setting == "device"
    assert isinstance(info.value, InputError)  # so the CLI prints it as one line


def test_first_line_skips_blank_lines_and_strips():
    assert first_line(ValueError("\n  \n  the cause  \nmore detail\n")) == "the cause"
    assert first_line("a warning\nsecond") == "a warning"


def test_first_line_of_an_empty_message_is_the_type_name():
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("   \n")) == "OSError"


def test_setting_error_reads_setting_then_problem_on_one_line():
    error = SettingError("batch_size", "must be at least 1,\ngot 0")
    assert (error.setting, error.problem) == ("batch_size", "must be at least 1,\ngot 0")
    assert str(error) == "batch_size must be at least 1,\\ngot 0"


def test_setting_error_survives_pickling_with_its_parts():
    # a worker process hands its exception back pickled
    error = pickle.loads(pickle.dumps(SettingError("device", "must be one of auto, cpu, cuda")))
    assert isinstance(error, SettingError)
    assert (error.setting, error.problem) == ("device", "must be one of auto, cpu, cuda")
    assert str(error) == "device must be one of auto, cpu, cuda"
