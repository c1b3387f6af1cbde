import pytest
import torch

from trainer.init import lecun_init, mirrored_lecun_init
from trainer.losses import loss_and_grad, loss_value
from trainer.metrics import jacobian_sigma_min
from trainer.projection import project_onto_ball_, project_onto_v_set
from trainer.shallow.net import Workspace, backward, features, forward, outputs


@pytest.fixture(autouse=True)
def float64_default():
    # Exact comparisons against autograd/brute force need float64; restore the default for other modules.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus", "relu"])
@pytest.mark.parametrize("pairwise", [False, True])
@pytest.mark.parametrize("loss", ["square", "cross_entropy"])
@pytest.mark.parametrize("per_config_batch", [False, True])
def test_hand_written_gradients_match_autograd(activation, pairwise, loss, per_config_batch):
    g = torch.Generator().manual_seed(0)
    C, n, d, m, k = 3, 17, 5, 8, 4
    X = torch.randn(C, n, d, generator=g) if per_config_batch else torch.randn(n, d, generator=g)
    W = torch.randn(C, m, d, generator=g, requires_grad=True)
    v = torch.randn(C, m // 2 if pairwise else m, k, generator=g, requires_grad=True)
    Y = torch.randn(n, k, generator=g) if loss == "square" else torch.randint(0, k, (n,), generator=g)
    value = loss_value(forward(X, W, v, activation, pairwise), Y, loss)
    value.sum().backward()

    with torch.no_grad():
        Hs, As, Phi_t = features(X, W, activation, pairwise, Workspace())
        lv, gF = loss_and_grad(outputs(Phi_t, v, activation, pairwise), Y, loss)
        gW, gv = backward(X, Hs, As, Phi_t, v, gF, activation, pairwise, Workspace())
    torch.testing.assert_close(lv, value.detach())
    torch.testing.assert_close(gW, W.grad)
    torch.testing.assert_close(gv, v.grad)


def test_mirrored_init_gives_zero_output_for_every_input():
    W, v = mirrored_lecun_init(m=64, d=10, k=3, seed=5)
    X = torch.randn(200, 10).float() * 10
    F = forward(X, W[None], v[None], "tanh", pairwise=True)
    assert torch.equal(F, torch.zeros_like(F))
    assert torch.equal(W[:32], W[32:])


@pytest.mark.parametrize("C,p,d,n", [(47, 193, 289, 11), (46, 297, 781, 11), (3, 5, 7, 1), (2, 64, 20, 1000)])
@pytest.mark.parametrize("per_config_batch", [False, True])
def test_mirrored_halves_give_exactly_zero_output_at_shapes_where_one_gemm_rounds_unevenly(C, p, d, n,
                                                                                          per_config_batch):
    g = torch.Generator().manual_seed(C * p + d)
    half = torch.randn(C, p, d, generator=g, dtype=torch.float32)
    W = torch.cat((half, half), dim=1)
    v = torch.randn(C, p, 1, generator=g, dtype=torch.float32)
    X = torch.randn(C, n, d, generator=g, dtype=torch.float32) if per_config_batch else torch.randn(
        n, d, generator=g, dtype=torch.float32)
    F = outputs(features(X, W, "tanh", True, Workspace())[2], v, "tanh", True)
    assert torch.count_nonzero(F) == 0


def test_lecun_init_variances_are_one_over_fan_in():
    W, u = lecun_init(m=2000, d=50, k=1, seed=0)
    assert W.var().item() == pytest.approx(1 / 50, rel=0.05)
    assert u.var().item() == pytest.approx(1 / 2000, rel=0.1)


def test_ball_projection_keeps_each_config_within_its_radius_and_leaves_inside_points():
    g = torch.Generator().manual_seed(1)
    W0 = torch.randn(4, 6, 3, generator=g)
    W = W0 + torch.randn(4, 6, 3, generator=g) * torch.tensor([0.01, 1.0, 5.0, 5.0]).view(4, 1, 1)
    radius = torch.tensor([1.0, 0.5, 2.0, float("inf")])
    before = W.clone()
    project_onto_ball_(W, W0, radius)
    dist = torch.linalg.vector_norm((W - W0).flatten(1), dim=1)
    assert torch.all(dist <= radius * (1 + 1e-12))
    assert torch.equal(W[0], before[0])  # already inside: untouched, bit for bit
    assert torch.equal(W[3], before[3])  # r = inf: untouched
    torch.testing.assert_close(dist[1:3], radius[1:3])  # outside: lands on the sphere
    # the projection moves along the ray from W0 (direction kept)
    cos = torch.nn.functional.cosine_similarity((W[1] - W0[1]).flatten(), (before[1] - W0[1]).flatten(), dim=0)
    assert cos.item() == pytest.approx(1.0)


def test_ball_projection_of_a_far_point_lands_on_the_sphere_not_back_at_w0():
    W0 = torch.randn(1, 50, 20, dtype=torch.float32)
    W = W0 + 1e20  # a diverging step: the float32 sum of squares would overflow
    project_onto_ball_(W, W0, torch.tensor([5.0]))
    dist = torch.linalg.vector_norm((W - W0).double())
    assert dist.item() == pytest.approx(5.0, rel=1e-3)


def _brute_force_v_projection(v, zeta, gamma):
    a = v.abs().flatten()
    ts = torch.linspace(zeta, float(a.max()) + 1.0, 200001)
    clipped = torch.minimum(torch.maximum(a[None], ts[:, None]), gamma * ts[:, None])
    cost = (a[None] - clipped).square().sum(1)
    best = clipped[cost.argmin()]
    return torch.where(v.flatten() < 0, -1.0, 1.0) * best


@pytest.mark.parametrize("seed", range(6))
def test_v_projection_is_the_exact_minimiser_and_lands_in_v(seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(1, 12, 1, generator=g) * 2
    zeta, gamma = 0.3, 2.5
    P = project_onto_v_set(v, zeta, gamma)
    a = P.abs().flatten()
    assert a.min() >= zeta - 1e-12
    assert a.max() <= gamma * a.min() * (1 + 1e-12)
    assert torch.all(torch.sign(P.flatten()) * torch.where(v.flatten() < 0, -1.0, 1.0) >= 0)
    brute = _brute_force_v_projection(v[0], zeta, gamma)
    assert (P.flatten() - v.flatten()).square().sum() <= (brute - v.flatten()).square().sum() + 1e-9
    torch.testing.assert_close(P.flatten(), brute, atol=1e-3, rtol=0)


def test_v_projection_leaves_points_of_v_alone():
    v = torch.tensor([[[1.0], [-1.5], [2.0]]])
    torch.testing.assert_close(project_onto_v_set(v, 0.5, 3.0), v)


def test_jacobian_sigma_min_matches_explicit_jacobian():
    g = torch.Generator().manual_seed(2)
    C, n, d, m = 2, 12, 3, 8
    X = torch.randn(n, d, generator=g)
    W = torch.randn(C, m, d, generator=g)
    u = torch.randn(C, m, 1, generator=g)
    got = jacobian_sigma_min(X, W, u, "tanh")
    for c in range(C):
        J = torch.autograd.functional.jacobian(lambda w, uc=u[c]: (torch.tanh(X @ w.T) @ uc).squeeze(-1), W[c])
        expected = torch.linalg.svdvals(J.reshape(n, m * d)).min()
        torch.testing.assert_close(got[c], expected)
    # n > m d: J has m d singular values; the smallest must still match
    X2 = torch.randn(30, 2, generator=g)
    W2 = torch.randn(1, 4, 2, generator=g)
    u2 = torch.randn(1, 4, 1, generator=g)
    J2 = torch.autograd.functional.jacobian(lambda w: (torch.tanh(X2 @ w.T) @ u2[0]).squeeze(-1), W2[0])
    torch.testing.assert_close(jacobian_sigma_min(X2, W2, u2, "tanh")[0], torch.linalg.svdvals(J2.reshape(30, 8)).min())
