"""Face-adapter files in the real InstantID layouts load with every key consumed; bad files name the key."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from instantid.adapter import attach_face_adapter
from instantid.layers import SDXL_LAYERS, layer_map_for
from instantid.loading import WeightsError, find_adapter_file, layer_widths, load_controlnet, read_adapter
from instantid.pipeline import InstantIDPipeline
from instantid.tiny import TinyConfig, random_adapter_state, tiny_components


@pytest.fixture(scope="module")
def components():
    return tiny_components(TinyConfig(seed=3))


@pytest.fixture
def state(components):
    unet = components["unet"]
    layers = layer_map_for(unet)
    return random_adapter_state(layers, layer_widths(unet, layers), resampler_width=128, seed=7)


def fresh_pipe(components) -> InstantIDPipeline:
    unet = type(components["unet"]).from_config(components["unet"].config)
    unet.load_state_dict(components["unet"].state_dict())
    return InstantIDPipeline(**{**components, "unet": unet})


def assert_consumed(pipe, patcher, state):
    """Every ip_adapter tensor sits in the processor of its layer; the Resampler got image_proj."""
    for layer in SDXL_LAYERS:
        proc = patcher.face[layer.name]
        assert torch.equal(proc.to_k_ip[0].weight, state["ip_adapter"][f"{layer.weight_key}.to_k_ip.weight"])
        assert torch.equal(proc.to_v_ip[0].weight, state["ip_adapter"][f"{layer.weight_key}.to_v_ip.weight"])
    resampler = pipe.resampler
    assert torch.equal(resampler.latents, state["image_proj"]["latents"])
    assert torch.equal(resampler.proj_in.weight, state["image_proj"]["proj_in.weight"])
    assert torch.equal(resampler.proj_out.weight, state["image_proj"]["proj_out.weight"])
    k, v = state["image_proj"]["layers.2.0.to_kv.weight"].chunk(2)
    assert torch.equal(resampler.layers[2].attn.to_k.weight, k)
    assert torch.equal(resampler.layers[2].attn.to_v.weight, v)
    out = pipe.face_tokens(torch.randn(512), do_cfg=True)
    assert out.shape == (2, 16, 2048)


def test_weight_keys_land_on_the_right_layers(state):
    keys = sorted(int(k.split(".")[0]) for k in state["ip_adapter"] if k.endswith("to_k_ip.weight"))
    assert keys == list(range(1, 140, 2))


def test_bin_round_trip(tmp_path, components, state):
    torch.save(state, tmp_path / "ip-adapter.bin")
    assert find_adapter_file(tmp_path) == tmp_path / "ip-adapter.bin"
    loaded = read_adapter(find_adapter_file(tmp_path))
    pipe = fresh_pipe(components)
    patcher = attach_face_adapter(pipe, loaded, str(tmp_path / "ip-adapter.bin"))
    assert_consumed(pipe, patcher, state)


def test_prefixed_safetensors_round_trip(tmp_path, components, state):
    flat = {f"{group}.{key}": value.contiguous() for group, sub in state.items() for key, value in sub.items()}
    save_file(flat, str(tmp_path / "ip-adapter.safetensors"))
    loaded = read_adapter(find_adapter_file(tmp_path))
    pipe = fresh_pipe(components)
    patcher = attach_face_adapter(pipe, loaded, "ip-adapter.safetensors")
    assert_consumed(pipe, patcher, state)


def test_missing_key_is_named(tmp_path, components, state):
    del state["ip_adapter"]["87.to_v_ip.weight"]
    torch.save(state, tmp_path / "ip-adapter.bin")
    with pytest.raises(WeightsError, match=r"ip-adapter\.bin.*missing key '87\.to_v_ip\.weight'"):
        attach_face_adapter(fresh_pipe(components), read_adapter(tmp_path / "ip-adapter.bin"),
                            str(tmp_path / "ip-adapter.bin"))


def test_misshaped_key_is_named(components, state):
    state["ip_adapter"]["121.to_k_ip.weight"] = torch.zeros(64, 2048)
    with pytest.raises(WeightsError, match=r"my\.bin.*'121\.to_k_ip\.weight' has shape \[64, 2048\], expected \[128, 2048\]"):
        attach_face_adapter(fresh_pipe(components), state, "my.bin")


def test_missing_resampler_key_is_named(components, state):
    del state["image_proj"]["layers.3.1.3.weight"]
    with pytest.raises(WeightsError, match=r"image_proj.*missing key 'layers\.3\.1\.3\.weight'"):
        attach_face_adapter(fresh_pipe(components), state, "x.bin")


def test_unprefixed_safetensors_key_is_refused(tmp_path):
    save_file({"latents": torch.zeros(1, 16, 8)}, str(tmp_path / "ip-adapter.safetensors"))
    with pytest.raises(WeightsError, match="latents.*prefix"):
        read_adapter(tmp_path / "ip-adapter.safetensors")


def test_missing_files_are_clear(tmp_path):
    with pytest.raises(WeightsError, match="no face adapter in"):
        find_adapter_file(tmp_path)
    with pytest.raises(WeightsError, match="config.json is missing"):
        load_controlnet(tmp_path, torch.float32)
    (tmp_path / "ip-adapter.bin").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="not a readable face adapter"):
        read_adapter(tmp_path / "ip-adapter.bin")


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="InstantX/InstantID"):
        find_adapter_file("InstantX/InstantID")
