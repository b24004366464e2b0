"""Models: torchvision-compatible state-dict layout, aux heads, input-size limits."""

from __future__ import annotations

import pytest
import torch

from inception_deploy.errors import UserError
from inception_deploy.models import build_model, check_input_size, get_spec

# Parameter counts and state-dict sizes of torchvision.models.googlenet / inception_v3
# (1000 classes), from torchvision's model documentation and a torchvision install.
TORCHVISION_LAYOUT = {
    ("googlenet", True): (13_004_888, 364),
    ("googlenet", False): (6_624_904, 344),
    ("inception_v3", True): (27_161_264, 580),
    ("inception_v3", False): (23_834_568, 566),
}

# A sample of torchvision keys and shapes, as torchvision names them.
TORCHVISION_KEYS = {
    "googlenet": {
        "conv1.conv.weight": (64, 3, 7, 7),
        "conv1.bn.running_var": (64,),
        "inception3a.branch2.1.conv.weight": (128, 96, 3, 3),
        "inception3a.branch3.1.conv.weight": (32, 16, 3, 3),  # torchvision's 3x3 "5x5" branch
        "inception4e.branch4.1.bn.weight": (128,),
        "aux1.conv.conv.weight": (128, 512, 1, 1),
        "aux1.fc1.weight": (1024, 2048),
        "aux2.fc2.weight": (1000, 1024),
        "fc.weight": (1000, 1024),
    },
    "inception_v3": {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_6b.branch7x7dbl_3.conv.weight": (128, 128, 1, 7),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "AuxLogits.conv1.conv.weight": (768, 128, 5, 5),
        "AuxLogits.fc.weight": (1000, 768),
        "fc.weight": (1000, 2048),
    },
}


@pytest.mark.parametrize("arch,aux", list(TORCHVISION_LAYOUT))
def test_state_dict_layout_matches_torchvision(arch, aux):
    model = build_model(arch, num_classes=1000, aux_logits=aux, init_weights=False)
    params, keys = TORCHVISION_LAYOUT[(arch, aux)]
    assert sum(p.numel() for p in model.parameters()) == params
    state = model.state_dict()
    assert len(state) == keys
    if aux:
        for key, shape in TORCHVISION_KEYS[arch].items():
            assert tuple(state[key].shape) == shape, key
    assert all(m.eps == 0.001 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_registry_names_and_aliases():
    assert get_spec("inception_v1").name == "googlenet"
    assert get_spec("GoogLeNet").name == "googlenet"
    assert get_spec("inception_v3").name == "inception_v3"
    with pytest.raises(UserError, match="unknown model architecture 'resnet50'"):
        get_spec("resnet50")


@pytest.mark.parametrize("arch", ["googlenet", "inception_v3", "inception_v3_lowres"])
def test_minimum_input_sizes_are_exact(arch):
    """The registry's limits are the real ones: the limit runs, one pixel less fails."""
    spec = get_spec(arch)
    model = build_model(arch, num_classes=10).eval()
    for with_aux, limit in ((False, spec.min_input_size), (True, spec.min_input_size_with_aux)):
        if with_aux and limit > 100:
            continue  # 299 is exercised by the export tests
        with torch.no_grad():
            outputs = model.forward_all(torch.zeros(1, 3, limit, limit), with_aux=with_aux)
            assert outputs[0].shape == (1, 10)
            with pytest.raises(RuntimeError):
                model.forward_all(torch.zeros(1, 3, limit - 1, limit - 1), with_aux=with_aux)


def test_input_size_error_names_the_limit():
    spec = get_spec("inception_v3")
    with pytest.raises(UserError) as info:
        check_input_size(spec, 64, 64, with_aux=False)
    assert str(info.value) == (
        "input size 64x64 is too small for inception_v3: it needs at least 75x75; "
        "the 'inception_v3_lowres' architecture accepts inputs down to 21x21"
    )
    check_input_size(spec, 75, 75, with_aux=False)


def test_aux_heads_and_transform_input():
    model = build_model("googlenet", num_classes=7, transform_input=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        main, aux2, aux1 = model.forward_all(x)
        assert main.shape == aux1.shape == aux2.shape == (2, 7)
        assert torch.equal(model(x), main)  # aux heads never change the main output
    no_aux = build_model("googlenet", num_classes=7, aux_logits=False)
    assert no_aux.aux1 is None and len(no_aux.forward_all(x)) == 1
