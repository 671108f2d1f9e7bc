import pytest
import torch

from framework.errors import ConfigError
from framework.layers import amp
from framework.layers.amp import amp_autocast, check_amp, float32_layers, resolve_amp
from framework.utils import cpu_features as cpu_features_module


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
    with pytest.raises(ConfigError, match=r"inference_amp 'bf61' is not one of \['none', 'auto', 'bf16', 'fp16'\].*bf16"):
        check_amp("bf61", "cpu", knob="inference_amp")
    with pytest.raises(ConfigError, match="'fp8' is not one of"):
        check_amp("fp8", None, knob="amp")


def test_fp16_needs_cuda_but_the_name_alone_checks_without_a_device():
    check_amp("fp16", None, knob="amp")  # device not known yet: only the name is checked
    check_amp("fp16", "cuda", knob="amp")
    with pytest.raises(ConfigError, match=r"amp='fp16' needs the model on a CUDA device, but it is on 'cpu'; use amp='bf16'"):
        amp_autocast("fp16", "cpu", knob="amp")


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "none")])
def test_auto_picks_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(amp, "has_native_bf16", lambda device_type: native)
    assert resolve_amp("auto", "cpu", knob="amp") == expected
    with amp_autocast("auto", "cpu", knob="amp"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == (torch.bfloat16 if native else torch.float32)
    for name in ("none", "bf16"):  # explicit names are kept as they are
        assert resolve_amp(name, "cpu", knob="amp") == name


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch, native, expected):
    monkeypatch.setattr(amp, "has_native_bf16", lambda device_type: native)
    assert resolve_amp("auto", "cuda", knob="amp") == expected


def test_cpu_features_follow_a_onednn_restriction(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 (a measurement 'as on an AVX2 CPU') turns off AVX-512 and native bf16,
    whatever the hardware has; no restriction reports the hardware."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    hardware = cpu_features_module.cpu_features.__wrapped__()
    assert hardware.restricted == ()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    restricted = cpu_features_module.cpu_features.__wrapped__()
    assert restricted.restricted == ("ONEDNN_MAX_CPU_ISA",)
    assert not restricted["AVX-512"] and not restricted["AVX512_BF16"] and not restricted["AMX"]
    assert restricted["AVX2"] == hardware["AVX2"]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    bf16_level = cpu_features_module.cpu_features.__wrapped__()
    assert bf16_level["AVX512_BF16"] == hardware["AVX512_BF16"] and not bf16_level["AMX"]


def test_float32_layers_keep_a_heads_last_layers_in_float32_under_autocast():
    torch.manual_seed(0)
    layers = (torch.nn.Linear(64, 5), torch.nn.Linear(64, 20))
    x = torch.randn(8, 64)
    plain = tuple(layer(x) for layer in layers)
    for got, want in zip(float32_layers(x, *layers), plain):  # autocast off: plain calls
        assert torch.equal(got, want)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_out = layers[0](x)
        kept = float32_layers(x.bfloat16(), *layers)
        assert torch.is_autocast_enabled("cpu")  # restored after the call
    assert autocast_out.dtype == torch.bfloat16 and all(k.dtype == torch.float32 for k in kept)
    # only the input's bf16 rounding remains: float32 weights and sums, float32 output
    for got, layer in zip(kept, layers):
        torch.testing.assert_close(got, layer(x.bfloat16().float()), rtol=0, atol=0)
    assert (kept[0] - plain[0]).abs().max() < (autocast_out.float() - plain[0]).abs().max()
