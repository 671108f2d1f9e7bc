import pytest
import torch

from framework.errors import ConfigError
from framework.layers.amp import amp_autocast, check_amp


def test_none_is_a_no_op_context():
    with amp_autocast("none", "cpu", knob="amp"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")


def test_bf16_on_cpu_autocasts_matmuls_to_bfloat16():
    with amp_autocast("bf16", "cpu", knob="amp"):
        assert torch.is_autocast_enabled("cpu")
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.bfloat16
    assert y.float().eq(2).all()


def test_unknown_name_names_the_knob_the_value_and_the_choices():
    with pytest.raises(ConfigError, match=r"inference_amp 'bf61' is not one of \['none', 'bf16', 'fp16'\].*bf16"):
        check_amp("bf61", "cpu", knob="inference_amp")
    with pytest.raises(ConfigError, match="'fp8' is not one of"):
        check_amp("fp8", None, knob="amp")


def test_fp16_needs_cuda_but_the_name_alone_checks_without_a_device():
    check_amp("fp16", None, knob="amp")  # device not known yet: only the name is checked
    check_amp("fp16", "cuda", knob="amp")
    with pytest.raises(ConfigError, match=r"amp='fp16' needs the model on a CUDA device, but it is on 'cpu'; use amp='bf16'"):
        amp_autocast("fp16", "cpu", knob="amp")
