"""The fast Grad-CAM path gives exactly pytorch-grad-cam's GradCAM map: speed must not change the explanation."""
import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from emotion.explain import DEFAULT_LAYER, LAYERS, explain, gradcam
from emotion.faces import cut, detect_faces
from tests import fixtures as fx


@pytest.fixture(scope="module")
def faces(model):
    crops = []
    for path in (fx.PORTRAIT, fx.SECOND_PORTRAIT):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        det = detect_faces(rgb)[0]
        crops.append(cut(rgb, model.prep.square(det, rgb.shape)))
    crops.append(np.random.default_rng(0).integers(0, 255, (90, 90, 3), dtype=np.uint8))  # not a face at all
    return model.prep.to_input(crops)


def reference(model, x, classes, layer):
    with torch.enable_grad(), GradCAM(model=model.net, target_layers=[LAYERS[layer](model.net)]) as cam:
        targets = None if classes is None else [ClassifierOutputTarget(c) for c in classes]
        maps = cam(input_tensor=x, targets=targets)
        logits = cam.outputs.detach()
    model.net.zero_grad(set_to_none=True)
    return logits, maps


@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("classes", [None, [0, 3, 6], [1, 1, 1], [5, 2, 4]])
def test_fast_gradcam_equals_pytorch_grad_cam(model, faces, layer, classes):
    ref_logits, ref_maps = reference(model, faces, classes, layer)
    logits, maps = gradcam(model.net, faces, classes or [None] * len(faces), layer)
    assert torch.allclose(logits, ref_logits, atol=1e-4)
    assert maps.shape == ref_maps.shape == (3, model.prep.size, model.prep.size)
    assert np.abs(maps - ref_maps).max() < 1e-4


def test_explain_uses_the_fast_path_and_leaves_no_gradients(model, faces):
    whole_net_calls = []  # pytorch-grad-cam calls net(x); the direct path runs the stages one by one
    hook = model.net.register_forward_pre_hook(lambda *_: whole_net_calls.append(1))
    try:
        logits, maps = explain(model, faces, [None, 2, None], "Grad-CAM")
    finally:
        hook.remove()
    assert whole_net_calls == []
    predicted = logits.argmax(1).tolist()
    ref_logits, ref_maps = reference(model, faces, [predicted[0], 2, predicted[2]], DEFAULT_LAYER)
    assert torch.allclose(logits, ref_logits, atol=1e-4) and np.abs(maps - ref_maps).max() < 1e-4
    assert all(p.grad is None for p in model.net.parameters())


@pytest.mark.parametrize("output_stride", [32, 8])
@pytest.mark.parametrize("side", [48, 64, 112, 128])
def test_the_grid_named_is_the_layers_own(side, output_stride):
    """grid_side counts the cells of each layer's activations, as a timm ResNet50 lays them out: at 64 px,
    layer2 is 8 x 8, layer3 4 x 4, layer4 2 x 2 (at 128 px, 16, 8 and 4); dilated to output stride 8, layer3
    and layer4 stay at layer2's grid."""
    from emotion.engine import STAGES
    from emotion.explain import grid_side, heatmap_name
    from emotion.model import create_net

    net = create_net(output_stride=output_stride).eval()
    with torch.no_grad():
        a = net.maxpool(net.act1(net.bn1(net.conv1(torch.zeros(1, 3, side, side)))))
        for name in STAGES:
            a = getattr(net, name)(a)
            if name != "layer1":
                assert a.shape[-2:] == (grid_side(net, name, side),) * 2, (name, side)
    known = {(64, 32): {"layer2": 8, "layer3": 4, "layer4": 2}, (128, 32): {"layer2": 16, "layer3": 8, "layer4": 4},
             (64, 8): {"layer2": 8, "layer3": 8, "layer4": 8}, (128, 8): {"layer2": 16, "layer3": 16, "layer4": 16}}
    for layer, g in known.get((side, output_stride), {}).items():
        assert grid_side(net, layer, side) == g
    assert heatmap_name("Grad-CAM", "layer3", 4) == "Grad-CAM at layer3, 4 x 4 cells"
