"""Deep nets' building blocks: the mirrored block gives exactly zero output, the paired layers compute what the
standard layers compute, the block projection is Algorithm 2's P_ball, and optimizer state survives flattening."""

import math

import pytest
import torch
from torch import nn

from trainer.deep.ball import distance_from, project_block_onto_ball_
from trainer.deep.mlp import MLP
from trainer.deep.optim_state import flatten_optimizer_state, load_optimizer_state
from trainer.deep.resnet import PairedBatchNorm2d, PairedConv2d, ResNet18
from trainer.projection import project_onto_ball_


def _resnet(width, pairwise, channels=3, size=32, seed=0):
    net = ResNet18(channels, 10, width, pairwise, imagenet_stem=size >= 64)
    net.initialize_(seed)
    return net


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("hidden", [[6], [32, 10], [20, 16, 4]])
def test_mirrored_mlp_outputs_exactly_zero_at_init(activation, hidden):
    net = MLP(12, hidden, 5, activation, pairwise=True)
    net.initialize_(seed=3)
    x = torch.randn(50, 12) * 10
    assert torch.equal(net(x), torch.zeros(50, 5))
    W = net.last.weight
    m = hidden[-1]
    assert torch.equal(W[: m // 2], W[m // 2:]) and torch.equal(net.last.bias[: m // 2], net.last.bias[m // 2:])
    assert net.out.weight.shape == (5, m // 2)  # only v is free: U = [v, -v]
    regular = MLP(12, hidden, 5, activation, pairwise=False)
    regular.initialize_(seed=3)
    assert regular(x).abs().max() > 0.01


@pytest.mark.parametrize("width,channels,size", [(2, 3, 32), (8, 1, 28), (6, 3, 64), (4, 1, 8)])
def test_mirrored_resnet_outputs_exactly_zero_at_init_in_train_and_eval_mode(width, channels, size):
    net = _resnet(width, True, channels, size)
    x = torch.randn(3, channels, size, size)
    net.train()
    assert torch.equal(net(x), torch.zeros(3, 10))
    net.eval()
    assert torch.equal(net(x), torch.zeros(3, 10))
    assert _resnet(width, False, channels, size)(x).abs().max() > 1e-3


def test_mirrored_init_pairs_every_layer_of_block_4_and_nothing_else():
    net = _resnet(8, True)
    tensors = dict(net.layer4.named_parameters()) | dict(net.layer4.named_buffers())
    paired = [name for name, t in tensors.items() if t.dim() > 0]
    # 2 blocks x (2 convs + 2 BatchNorms of weight, bias, running mean, running var) + the shortcut's conv and BN
    assert len(paired) == 2 * (2 + 2 * 4) + (1 + 4)
    for name in paired:
        t = tensors[name]
        assert torch.equal(t[:4], t[4:]), name
    conv3 = net.layer3[1].conv2.weight
    assert not torch.equal(conv3[:128], conv3[128:])
    assert isinstance(net.layer4[0].shortcut[0], PairedConv2d)
    assert isinstance(net.layer4[0].shortcut[1], PairedBatchNorm2d)


def test_pairwise_output_equals_the_full_layer_with_outer_weights_v_and_minus_v():
    net = _resnet(8, True)
    with torch.no_grad():  # make the halves differ, as after training
        for p in net.layer4.parameters():
            p.add_(0.1 * torch.randn_like(p))
    net.eval()
    x = torch.randn(4, 3, 32, 32)
    pooled = net.layer4(net.layer3(net.layer2(net.layer1(net.stem(x))))).mean(dim=(2, 3))  # (n, w)
    v = net.out.weight
    full = pooled @ torch.cat((v, -v), dim=1).T + net.out.bias
    torch.testing.assert_close(net(x), full, rtol=1e-5, atol=1e-6)
    assert net(x).abs().max() > 1e-3


def test_paired_layers_compute_what_the_standard_layers_compute():
    torch.manual_seed(0)
    conv, ref = PairedConv2d(5, 6, 3, 2, 1, bias=False), nn.Conv2d(5, 6, 3, 2, 1, bias=False)
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(4, 5, 9, 9)
    torch.testing.assert_close(conv(x), ref(x))
    bn, bn_ref = PairedBatchNorm2d(6), nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.normal_(), bn.bias.normal_()
    bn_ref.load_state_dict(bn.state_dict())
    y = torch.randn(5, 6, 3, 3) * 3 + 1
    for _ in range(3):
        torch.testing.assert_close(bn(y), bn_ref(y))
    for name, t in bn_ref.state_dict().items():  # running statistics move the same way
        torch.testing.assert_close(bn.state_dict()[name], t, msg=name)
    bn.eval(), bn_ref.eval()
    torch.testing.assert_close(bn(y), bn_ref(y))


def test_block_projection_is_p_ball_on_the_concatenated_parameters():
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(4, 3, generator=g), torch.randn(7, generator=g), torch.randn(2, 2, 2, generator=g)]
    params = [t + torch.randn(t.shape, generator=g) for t in init]
    flat, flat0 = torch.cat([p.flatten() for p in params])[None], torch.cat([p.flatten() for p in init])[None]
    before = distance_from(params, init)
    dist = project_block_onto_ball_(params, init, 1.5)
    project_onto_ball_(flat, flat0, torch.tensor([1.5]))
    torch.testing.assert_close(torch.cat([p.flatten() for p in params])[None], flat)
    assert dist.item() == pytest.approx(before.item(), rel=1e-6) and before > 1.5
    assert distance_from(params, init).item() == pytest.approx(1.5, rel=1e-6)


def test_a_block_whose_distance_overflows_becomes_nan_instead_of_snapping_back_to_init():
    init = [torch.zeros(4)]
    params = [torch.full((4,), 1e25)]
    project_block_onto_ball_(params, init, 1.0)
    assert torch.isnan(params[0]).all()


def test_block_projection_inside_the_ball_leaves_parameters_bit_for_bit():
    init = [torch.randn(10, 10)]
    params = [init[0] + 1e-3 * torch.randn(10, 10)]
    before = params[0].clone()
    project_block_onto_ball_(params, init, 1.0)
    assert torch.equal(params[0], before)
    project_block_onto_ball_(params, init, math.inf)
    assert torch.equal(params[0], before)


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
    lambda ps: torch.optim.Adam(ps, lr=0.01),
])
def test_optimizer_state_survives_flattening_to_named_tensors(make_opt):
    def run(net, opt, steps, start=0):
        for s in range(start, start + steps):
            torch.manual_seed(s)
            loss = net(torch.randn(8, 5)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    b = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = make_opt(a.parameters()), make_opt(b.parameters())
    run(a, opt_a, 3)
    run(b, opt_b, 3)
    names = {id(p): n for n, p in b.named_parameters()}
    flat = {k: t.clone() for k, t in flatten_optimizer_state(opt_b, names).items()}
    assert flat and all(k.startswith("opt.") for k in flat)
    c = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    c.load_state_dict(b.state_dict())
    opt_c = make_opt(c.parameters())
    load_optimizer_state(opt_c, {id(p): n for n, p in c.named_parameters()}, flat)
    run(a, opt_a, 3, start=3)
    run(c, opt_c, 3, start=3)
    for (name, p), q in zip(a.named_parameters(), c.parameters(), strict=True):
        assert torch.equal(p, q), name
