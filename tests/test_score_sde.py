"""Score SDEs: closed forms, exact-score samplers and likelihoods, the FID path, bad input."""

from __future__ import annotations

import math
import os
import pickle

import pytest
import torch
from scipy import integrate

from benchmarks.specs.score_sde import claim_verdict, score_sde
from benchmarks.units import score_sde as unit  # what a unit runs: data, FID choke point, caches
from datamodules.mixtures import GaussianMixture, IsotropicMixture, MixtureDataModule, make_mixture, narrow_mixture
from lit_modules.score_sde import (
    SubVPSDE, VESDE, VPSDE, bits_per_dim, ddpm_ancestral, dequantize, dsm_loss, ema_with_warmup, make_sde,
    ode_likelihood, ode_sampler, pc_sampler, reverse_diffusion_predictor,
)

GAUSS = make_mixture("gaussian")  # N((0.5, -0.25), [[0.3, 0.1], [0.1, 0.2]])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: intra-op threads only add synchronisation (10x slower on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------- closed forms
def test_marginal_prob_matches_closed_forms_for_all_sdes():
    t = torch.tensor([0.1, 0.5, 1.0])
    x = torch.full((3, 1, 2, 2), 2.0)
    b0, b1 = 0.1, 20.0
    int_beta = b0 * t + 0.5 * (b1 - b0) * t**2  # int_0^t beta(s) ds
    alpha = torch.exp(-0.5 * int_beta)
    mean, std = VPSDE().marginal_prob(x, t)
    torch.testing.assert_close(mean[:, 0, 0, 0], 2 * alpha)
    torch.testing.assert_close(std, torch.sqrt(1 - torch.exp(-int_beta)))
    mean, std = SubVPSDE().marginal_prob(x, t)
    torch.testing.assert_close(mean[:, 0, 0, 0], 2 * alpha)
    torch.testing.assert_close(std, 1 - torch.exp(-int_beta))
    mean, std = VESDE(0.01, 50.0).marginal_prob(x, t)
    torch.testing.assert_close(mean, x)
    torch.testing.assert_close(std, 0.01 * 5000.0**t)
    # One value by hand: VP at t = 0.5, int beta = 0.05 + 0.25 * 19.9 / 2 = 2.5375.
    _, std = VPSDE().marginal_prob(x[:1], torch.tensor([0.5]))
    assert std.item() == pytest.approx(math.sqrt(1 - math.exp(-2.5375)), abs=1e-6)
    assert std.item() == pytest.approx(0.959655, abs=1e-5)


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_forward_sde_simulation_matches_marginal_prob(name):
    sde = make_sde(name, sigma_max=5.0)
    x0, t_end, steps, B = 0.7, 0.6, 600, 20000
    x = torch.full((B, 1), x0, dtype=torch.float64)
    dt = t_end / steps
    for i in range(steps):
        t = torch.full((B,), i * dt, dtype=torch.float64)
        drift, g = sde.sde(x, t)
        x = x + drift * dt + g[:, None] * math.sqrt(dt) * torch.randn_like(x)
    mean, std = sde.marginal_prob(torch.full((1, 1), x0, dtype=torch.float64), torch.tensor([t_end], dtype=torch.float64))
    if name == "ve":  # the SDE started at x0 has variance sigma(t)^2 - sigma_min^2
        std = torch.sqrt(std**2 - sde.sigma_min**2)
    assert x.mean().item() == pytest.approx(mean.item(), abs=4 * std.item() / math.sqrt(B) + 2e-3)
    assert x.std().item() == pytest.approx(std.item(), rel=0.03)


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_discretisation_agrees_with_the_sde_for_small_steps(name):
    sde = make_sde(name, N=20000)
    x = torch.randn(4, 3)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8])
    f, G = sde.discretize(x, t)
    drift, g = sde.sde(x, t)
    torch.testing.assert_close(f * sde.N, drift, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(G**2 * sde.N, g**2, rtol=2e-3, atol=1e-3)


def test_dsm_loss_equals_its_closed_form_at_the_exact_score():
    """Data N(0, s^2 I), VP: E||std s*(x_t) + z||^2 / D = alpha_t^2 s^2 / (alpha_t^2 s^2 + std_t^2), averaged over t."""
    sde, s2, eps, D = VPSDE(), 0.25, 1e-3, 4

    def exact(x, t):
        alpha, std = sde.marginal_coeffs(t)
        return -x / (alpha**2 * s2 + std**2)[:, None]

    def per_dim(t):
        a2 = math.exp(2 * sde.log_mean_coeff(torch.tensor(t)).item())
        return a2 * s2 / (a2 * s2 + 1 - a2)

    expected = integrate.quad(per_dim, eps, 1.0)[0] / (1 - eps)
    x0 = torch.randn(400000, D, dtype=torch.float64) * math.sqrt(s2)
    loss = dsm_loss(sde, exact, x0, eps=eps, reduce_mean=True).item()
    assert loss == pytest.approx(expected, abs=3e-3)
    zero = dsm_loss(sde, lambda x, t: torch.zeros_like(x), x0, eps=eps, reduce_mean=False).item()
    assert zero == pytest.approx(D, rel=0.01)  # with s = 0 the loss is E||z||^2 = D


def test_bits_per_dim_of_a_uniform_density_over_the_bins_is_log2_of_the_levels():
    D = 12
    for n in (256, 17):
        width = 2 + 2 / (n - 1)  # n bins of width 2 / (n - 1) centred on the grid of [-1, 1]
        logp = torch.full((3,), -D * math.log(width))
        torch.testing.assert_close(bits_per_dim(logp, D, n), torch.full((3,), math.log2(n)))


def test_dequantisation_bins_are_centred_on_the_training_grid():
    n = 17
    x01 = torch.arange(n).float().repeat(2000) / (n - 1)
    y = dequantize(x01, n)
    assert ((y - x01).abs() <= 0.5 / (n - 1) + 1e-6).all()  # each value stays in its own bin
    torch.testing.assert_close((y - x01).mean(), torch.tensor(0.0), atol=2e-3, rtol=0)  # centred, not shifted
    with pytest.raises(ValueError, match="n_bins must be >= 2"):
        dequantize(x01, 1)


def test_ema_warmup_follows_the_reference_schedule():
    ema, cur = [torch.zeros(3)], [torch.ones(3)]
    ema_with_warmup(0.999)(ema, cur, torch.tensor(1))
    torch.testing.assert_close(ema[0], torch.full((3,), 1 - 2 / 11))  # decay = min(0.999, 2/11)


# ----------------------------------------------------------------- few-step VP grid
@pytest.mark.parametrize("N", [10, 50, 1000])
def test_grid_betas_reproduce_the_marginal_at_every_grid_time(N):
    sde = VPSDE(N=N)
    t = torch.linspace(sde.eps, 1.0, N, dtype=torch.float64)
    abar = torch.exp(2 * sde.log_mean_coeff(t))
    torch.testing.assert_close(sde.alphas_cumprod.double(), abar, rtol=1e-5, atol=1e-7)
    assert sde.discrete_betas[0].item() == pytest.approx(1 - abar[0].item(), rel=1e-4)  # the last step: eps -> 0


def test_the_reference_betas_at_50_steps_remove_18x_the_noise_left_at_eps():
    old, new = VPSDE(N=50, discretization="ddpm"), VPSDE(N=50)
    left = 1 - math.exp(2 * new.log_mean_coeff(torch.tensor(new.eps)).item())  # noise variance at t = eps
    assert old.discrete_betas[0].item() / left == pytest.approx(18.2, rel=0.02)
    assert new.discrete_betas[0].item() / left == pytest.approx(1.0, rel=1e-3)
    assert VPSDE(N=1000, discretization="ddpm").discrete_betas[0].item() / left == pytest.approx(0.91, rel=0.01)  # N ~ 1/eps


def test_grid_points_map_to_their_index_beyond_n_1000():
    sde = VPSDE(N=2000)  # the reference's floor(t (N - 1)) puts t_0 = eps at index 1 here
    torch.testing.assert_close(sde.timestep(sde.time_grid()), torch.arange(1999, -1, -1))


NARROW = narrow_mixture()  # 40 Gaussians of width 0.05 in [-1, 1]^16


def _width_ratio(name, N, predictor, corrector, discretization="grid"):
    sde = make_sde(name, sigma_max=10.0, N=N, discretization=discretization)
    x, _ = pc_sampler(sde, NARROW.score_fn(sde), (1000, 16), predictor, corrector)
    return NARROW.width_ratio(x)


def test_exact_samples_of_the_narrow_mixture_have_width_ratio_one():
    assert NARROW.width_ratio(NARROW.sample(4000)) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("name,N,predictor,corrector", [
    ("ve", 50, "reverse_diffusion", "langevin"), ("ve", 100, "reverse_diffusion", "none"),
])
def test_few_step_ve_sampling_with_the_exact_score_lands_on_the_width(name, N, predictor, corrector):
    assert _width_ratio(name, N, predictor, corrector) == pytest.approx(1.0, abs=0.06)


def test_few_step_vp_pc_with_grid_betas_stays_within_twice_the_width_and_the_old_betas_collapse():
    """VP PC50 with the exact score: 1.7x the width on the grid (its linear time grid is coarse near t = 0),
    0.47x with the reference's betas, whose last step removes 18x the noise left at eps."""
    assert 1.0 < _width_ratio("vp", 50, "reverse_diffusion", "langevin") < 2.0
    assert _width_ratio("vp", 50, "reverse_diffusion", "langevin", "ddpm") < 0.6


def test_vp_ancestral_converges_to_the_width_and_the_posterior_variance_collapses():
    """sigma^2 = beta (the reference) reaches the width at N = 1000; beta~ stays below it (it drops
    the spread of x0 given x_t), which is why the benchmark keeps beta."""
    assert _width_ratio("vp", 1000, "ancestral", "none") == pytest.approx(1.0, abs=0.04)
    assert _width_ratio("vp", 1000, "ancestral_posterior", "none") < 0.95


def test_ode_sampler_ends_with_one_denoising_step_at_eps():
    sde = VPSDE(N=50)
    score = NARROW.score_fn(sde)
    z = torch.randn(200, 16)
    raw, nfe_raw = ode_sampler(sde, score, (200, 16), rtol=1e-3, atol=1e-3, z=z, denoise=False)
    done, nfe = ode_sampler(sde, score, (200, 16), rtol=1e-3, atol=1e-3, z=z)
    assert nfe == nfe_raw + 1
    expected = reverse_diffusion_predictor(sde, score, raw, torch.full((200,), sde.eps))[1]
    torch.testing.assert_close(done, expected)
    assert NARROW.width_ratio(done) == pytest.approx(1.0, abs=0.05)


def test_isotropic_mixture_score_is_the_gradient_of_its_log_density():
    mix = IsotropicMixture(torch.randn(5, 3, dtype=torch.float64), 0.4)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    grad = torch.autograd.grad(mix.log_prob(x).sum(), x)[0]
    ones, zeros = torch.ones(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    torch.testing.assert_close(mix.score(x.detach(), ones, zeros), grad)
    with pytest.raises(ValueError, match="width must be > 0"):
        IsotropicMixture(torch.zeros(2, 2), 0.0)


# ------------------------------------------------------------- exact-score samplers
def _moments_close(x, mixture, tol=0.05):
    x = x.reshape(x.shape[0], -1).double()
    torch.testing.assert_close(x.mean(0), mixture.mean(), atol=tol, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), mixture.covariance(), atol=tol, rtol=0)


@pytest.mark.parametrize("name,predictor,corrector", [
    ("ve", "reverse_diffusion", "langevin"),
    ("vp", "reverse_diffusion", "langevin"),
    ("vp", "euler_maruyama", "none"),
    ("subvp", "euler_maruyama", "langevin"),
    ("ve", "ancestral", "none"),
])
def test_pc_sampler_with_the_exact_score_reproduces_gaussian_moments(name, predictor, corrector):
    sde = make_sde(name, N=300)
    x, nfe = pc_sampler(sde, GAUSS.score_fn(sde), (4000, 2), predictor, corrector)
    assert nfe == 300 * (2 if corrector == "langevin" else 1)
    _moments_close(x, GAUSS)


def test_ddpm_ancestral_with_the_exact_score_reproduces_gaussian_moments():
    sde = VPSDE(N=300)
    x, nfe = ddpm_ancestral(sde, GAUSS.score_fn(sde), (4000, 2))
    assert nfe == 300
    _moments_close(x, GAUSS)


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_ode_sampler_with_the_exact_score_reproduces_gaussian_moments(name):
    sde = make_sde(name)
    x, nfe = ode_sampler(sde, GAUSS.score_fn(sde), (3000, 2))
    assert 10 < nfe < 2000
    _moments_close(x, GAUSS)


def _paper_prior_logp(sde, z):
    """log p_T(z) of the paper's priors, written out here rather than taken from ``sde``:
    N(0, sigma_max^2 I) for VE, N(0, I) for VP and sub-VP (Song et al., 2021, Sec. 3.4)."""
    s2 = sde.sigma_max**2 if isinstance(sde, VESDE) else 1.0
    D = z[0].numel()
    return -D / 2 * math.log(2 * math.pi * s2) - (z**2).reshape(z.shape[0], -1).sum(1) / (2 * s2)


def _expected_ode_logp(mixture, sde, x, z):
    """What the ODE likelihood returns with the exact score: log p_0(x) - log p_T(z) + log prior(z),
    the change of variables with the true marginal p_T replaced by the prior at T. For VE the two
    differ visibly (the prior ignores the data mean: about m.z / sigma_max^2 ~ 0.02 nats)."""
    t = torch.ones(z.shape[0], dtype=torch.float64)
    alpha, std = sde.marginal_coeffs(t)
    if isinstance(sde, VESDE):  # the SDE started at x0 has variance sigma(t)^2 - sigma_min^2
        std = torch.sqrt(std**2 - sde.sigma_min**2)
    return mixture.log_prob(x) - mixture.log_prob(z, alpha, std) + _paper_prior_logp(sde, z)


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_ode_likelihood_with_the_exact_score_matches_the_analytic_density(name):
    sde = make_sde(name)
    x = GAUSS.sample(16).double()
    logp, z, _ = ode_likelihood(sde, GAUSS.score_fn(sde), x, divergence="exact")
    torch.testing.assert_close(logp, _expected_ode_logp(GAUSS, sde, x, z), atol=2e-3, rtol=0)


def test_ode_likelihood_of_a_non_gaussian_mixture_matches_its_density():
    mixture, sde = make_mixture("two_gaussians"), VPSDE()
    x = mixture.sample(12).double()
    logp, z, _ = ode_likelihood(sde, mixture.score_fn(sde), x, divergence="exact")
    torch.testing.assert_close(logp, _expected_ode_logp(mixture, sde, x, z), atol=1e-2, rtol=0)


def test_prior_logp_is_the_papers_prior():
    z = torch.randn(5, 1, 2, 3, dtype=torch.float64) * 3
    for sde in (VESDE(0.01, 50.0), VPSDE(), SubVPSDE()):
        torch.testing.assert_close(sde.prior_logp(z), _paper_prior_logp(sde, z))


def test_hutchinson_likelihood_of_isotropic_image_gaussian_is_exact():
    """Rademacher noise gives the exact trace of a diagonal Jacobian: images (B, 1, 4, 4) ~ N(m, s^2 I)."""
    sde, m, s2 = VPSDE(), 0.3, 0.2

    def score(x, t):
        alpha, std = sde.marginal_coeffs(t)
        return -(x - alpha.view(-1, 1, 1, 1) * m) / (alpha**2 * s2 + std**2).view(-1, 1, 1, 1)

    x = m + math.sqrt(s2) * torch.randn(8, 1, 4, 4)
    logp, z, _ = ode_likelihood(sde, score, x, divergence="rademacher")
    analytic = -8 * math.log(2 * math.pi * s2) - ((x - m) ** 2).sum((1, 2, 3)).double() / (2 * s2)
    torch.testing.assert_close(logp, analytic, atol=2e-2, rtol=0)
    assert z.shape == x.shape


def test_mixture_score_is_the_gradient_of_its_log_density():
    mixture = make_mixture("eight_gaussians")
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    alpha, std = torch.full((6,), 0.8, dtype=torch.float64), torch.full((6,), 0.3, dtype=torch.float64)
    grad = torch.autograd.grad(mixture.log_prob(x, alpha, std).sum(), x)[0]
    torch.testing.assert_close(mixture.score(x.detach(), alpha, std), grad)


def test_mixture_datamodule_serves_samples_of_its_mixture():
    dm = MixtureDataModule("two_gaussians", n_train=20000, n_test=100, seed=1)
    dm.setup()
    _moments_close(dm.x["train"], dm.mixture, tol=0.03)
    assert next(iter(dm.train_dataloader()))[0].shape == (256, 2)


# ----------------------------------------------------------------------------- bad input
def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown SDE 'vx'.*ve, vp, subvp"):
        make_sde("vx")
    with pytest.raises(ValueError, match="unknown predictor 'leapfrog'"):
        pc_sampler(VPSDE(N=30), GAUSS.score_fn(VPSDE()), (4, 2), predictor="leapfrog")
    with pytest.raises(ValueError, match="unknown corrector 'hmc'"):
        pc_sampler(VPSDE(N=30), GAUSS.score_fn(VPSDE()), (4, 2), corrector="hmc")
    with pytest.raises(ValueError, match="unknown divergence"):
        ode_likelihood(VPSDE(), GAUSS.score_fn(VPSDE()), torch.zeros(2, 2), divergence="skilling")
    with pytest.raises(ValueError, match="unknown mixture"):
        make_mixture("nine_gaussians")


def test_samplers_refuse_sdes_they_are_not_defined_for():
    with pytest.raises(ValueError, match="ancestral sampling is defined for VESDE and VPSDE"):
        pc_sampler(SubVPSDE(N=30), GAUSS.score_fn(SubVPSDE()), (4, 2), "ancestral", "none")
    with pytest.raises(ValueError, match="needs a VPSDE"):
        ddpm_ancestral(VESDE(N=30), GAUSS.score_fn(VESDE()), (4, 2))
    with pytest.raises(ValueError, match="needs N > beta_max"):
        pc_sampler(VPSDE(N=10, discretization="ddpm"), GAUSS.score_fn(VPSDE()), (4, 2))
    with pytest.raises(ValueError, match="SDE's grid ends at eps=0.001"):
        pc_sampler(VPSDE(N=30), GAUSS.score_fn(VPSDE()), (4, 2), eps=1e-5)
    with pytest.raises(ValueError, match="unknown ancestral variance 'half'"):
        ddpm_ancestral(VPSDE(N=30), GAUSS.score_fn(VPSDE()), (4, 2), variance="half")
    with pytest.raises(ValueError, match="unknown discretization 'euler'"):
        VPSDE(discretization="euler")


def test_bad_sde_and_mixture_parameters_are_refused():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        VPSDE(beta_min=1.0, beta_max=0.1)
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture(torch.tensor([0.5, 0.6]), torch.zeros(2, 2), torch.eye(2).repeat(2, 1, 1))


# --------------------------------------------------------------------------- FID path
@pytest.fixture(scope="module")
def fidelity():
    """torch-fidelity is an optional extra: the tests that compute FID/IS/KID skip without it."""
    return pytest.importorskip("torch_fidelity")


@pytest.fixture(scope="module")
def digits_clf(tmp_path_factory, fidelity):
    data = unit.digits({"split_seed": 0}, None, 0)
    path = tmp_path_factory.mktemp("clf") / "clf.pt"
    torch.save(unit.train_classifier(data, steps=60), path)
    return data, unit.register_classifier_extractor("digits"), str(path)


def test_to_uint8_nchw_maps_the_range_and_refuses_bad_images():
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3)
    torch.testing.assert_close(unit.to_uint8_nchw(x), torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 1, 3))
    assert unit.to_uint8_nchw(x, channels=3).shape == (1, 3, 1, 3)
    with pytest.raises(ValueError, match="outside"):
        unit.to_uint8_nchw(x * 1.5)
    assert unit.to_uint8_nchw(x * 1.5, clip=True).max() == 255
    with pytest.raises(ValueError, match="NaN"):
        unit.to_uint8_nchw(torch.full((1, 1, 2, 2), float("nan")), clip=True)
    with pytest.raises(ValueError, match="floating point .* or uint8"):
        unit.to_uint8_nchw(torch.zeros(1, 1, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        unit.to_uint8_nchw(torch.zeros(2, 2))


def test_fid_of_identical_sets_is_zero_and_of_a_shifted_set_is_larger(digits_clf, tmp_path):
    data, name, weights = digits_clf
    real = unit.to_uint8_nchw(data.x["train"][:400])
    same = unit.fidelity_metrics(real, real, name, "clf", weights, str(tmp_path), None, kid_subset_size=200)
    assert set(same) == {"fid_clf", "is_clf", "kid_clf"}
    assert abs(same["fid_clf"]) < 1e-6
    shifted = unit.to_uint8_nchw(data.x["train"][:400] + 0.5, clip=True)
    moved = unit.fidelity_metrics(shifted, real, name, "clf", weights, str(tmp_path), None, kid_subset_size=200)
    assert moved["fid_clf"] > 1.0
    # KID is an unbiased estimate from random subsets: about zero for identical sets, not exactly.
    assert abs(same["kid_clf"]) < 0.05 * moved["kid_clf"]
    other = unit.to_uint8_nchw(data.x["test"][:300])  # held-out real digits: between the two
    held = unit.fidelity_metrics(other, real, name, "clf", weights, str(tmp_path), None, kid_subset_size=200)
    assert same["fid_clf"] < held["fid_clf"] < moved["fid_clf"]


def test_fidelity_refuses_too_few_samples_and_unknown_extractors(digits_clf, tmp_path):
    data, name, weights = digits_clf
    real = unit.to_uint8_nchw(data.x["train"][:50])
    with pytest.raises(ValueError, match="too few samples"):
        unit.fidelity_metrics(real[:5], real, name, "clf", weights, str(tmp_path), None)
    assert name == "iclrbench-clf-digits" and "inception" not in name
    from benchmarks.unit import UnitContext

    bench = score_sde()
    ctx = UnitContext("score_sde", "vp_pc", 0, "smoke", "digits", {**bench.config("smoke", "vp_pc"), "fid_extractor": "dino"},
                      artifacts_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown fid_extractor 'dino'"):
        unit.feature_space(ctx, data)
    ctx.config.update(fid_extractor="inception", fid_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        unit.feature_space(ctx, data)


def test_reference_features_are_cached_once_per_run(digits_clf, tmp_path):
    data, name, weights = digits_clf
    real = unit.to_uint8_nchw(data.x["train"][:200])
    fake = unit.to_uint8_nchw(data.x["test"][:100])
    unit.fidelity_metrics(fake, real, name, "clf", weights, str(tmp_path), "digits-ref", kid_subset_size=50)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files and all(f.startswith(f"digits-ref-{name}-") for f in files)
    again = unit.fidelity_metrics(fake, torch.zeros_like(real), name, "clf", weights, str(tmp_path), "digits-ref",
                                  kid_subset_size=50)  # a different input2 under the same name: read from the cache
    first = unit.fidelity_metrics(fake, real, name, "clf", weights, str(tmp_path), None, kid_subset_size=50)
    assert again["fid_clf"] == pytest.approx(first["fid_clf"], rel=1e-6)


def test_inception_tag_below_2048_samples_warns(digits_clf, tmp_path):
    data, name, weights = digits_clf
    real = unit.to_uint8_nchw(data.x["train"][:100])
    with pytest.warns(UserWarning, match="biased"):
        out = unit.fidelity_metrics(real, real, name, "inception", weights, str(tmp_path), None, kid_subset_size=50)
    assert set(out) == {"fid_inception", "is_inception", "kid_inception"}


def test_cached_computes_once(tmp_path):
    calls = []
    first, hit1 = unit.cached(tmp_path / "x.pt", lambda: calls.append(1) or {"v": 3})
    second, hit2 = unit.cached(tmp_path / "x.pt", lambda: calls.append(1) or {"v": 4})
    assert (first, second, hit1, hit2, len(calls)) == ({"v": 3}, {"v": 3}, False, True, 1)


def test_a_cached_file_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return os.makedirs, (str(tmp_path / "pwned"),)

    path = tmp_path / "net.pt"
    torch.save({"state": Evil()}, path)  # e.g. a checkpoint swapped in the run's artifacts folder
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        unit.cached(path, lambda: {"v": 1})
    assert not (tmp_path / "pwned").exists()
    torch.save({"state": {"w": torch.ones(2)}, "config": {"width": 4}}, path)  # tensors and plain data load
    assert unit.cached(path, lambda: None)[0]["config"] == {"width": 4}


def _verdict_rows(pc_offsets, p_fid=30.0, noise=(-0.5, 0.5, 0.0)):
    """ve_p at p_fid + noise per seed; ve_pc = the same seed's ve_p + offset (paired)."""
    rows = [("ve_p", s, "fid_clf", p_fid + e) for s, e in enumerate(noise)]
    rows += [("ve_pc", s, "fid_clf", p_fid + e + o) for s, (e, o) in enumerate(zip(noise, pc_offsets))]
    return rows


@pytest.mark.parametrize("offsets,expected", [
    ((-3.0, -2.5, -3.5, -3.0, -2.8), "holds"), ((3.0, 2.5, 3.5, 3.0, 2.8), "does not hold"),
    ((-3.0, 2.0, 0.5, -4.0, 1.0), "inconclusive"),
    ((-1.0, -1.1, -0.9, -1.0, -1.05), "does not hold"),  # consistent, but reliably below 5% of ve_p's FID
])
def test_verdict_uses_per_seed_relative_differences_at_the_snr_the_exact_score_extra_chose(offsets, expected):
    import pandas as pd

    noise = (-8.0, 8.0, 0.0, 4.0, -4.0)  # seeds differ a lot; the pairs do not
    rows = _verdict_rows([9.0] * 5, noise=noise)  # at the default snr 0.16 ve_pc is far worse ...
    rows += [("ve_pc", s, "fid_clf@snr=0.3", 30.0 + e + o) for s, (e, o) in enumerate(zip(noise, offsets))]
    rows += [("ve_pc", s, "fid_clf@snr=0.08", 40.0) for s in range(5)] + [("ve_pc", 0, "fid_floor_clf", 8.5)]
    # ... but the exact-score extra (no trained network) picks 0.3, so 0.3 is judged
    rows += [("ve_pc", 0, "exact_fid_clf@digits", 3.5), ("ve_pc", 0, "exact_fid_clf@digits,snr=0.3", 2.6),
             ("ve_pc", 0, "exact_fid_clf@digits,snr=0.08", 4.0), ("ddpm_ancestral", 0, "exact_fid_clf@digits,snr=0.3", 1.0)]
    rows += [("vp_pc", s, "fid_clf", 20.0) for s in range(5)] + [("ddpm_ancestral", s, "fid_clf", 21.0) for s in range(5)]
    df = pd.DataFrame(rows, columns=["variant", "seed", "metric", "value"]).assign(step=float("nan"))
    verdict = claim_verdict(df)
    assert verdict.status == expected
    assert "snr 0.3, chosen by the exact-score extra" in verdict.evidence and "floor" in verdict.evidence
    primary, secondary = verdict.judgements
    assert primary.comparison.metric == "fid_clf@snr=0.3" and primary.estimate.n == 5
    assert primary.estimate.effect == pytest.approx(-sum(o / (30.0 + e) for e, o in zip(noise, offsets)) / 5)
    assert secondary.comparison.baseline == "ddpm_ancestral" and "1.9%" in verdict.evidence


def test_verdict_falls_back_to_the_default_snr_without_the_extra():
    import pandas as pd

    rows = _verdict_rows([-3.0, -2.5, -3.5]) + [("ve_pc", s, "fid_clf@snr=0.3", 1.0) for s in range(3)]
    verdict = claim_verdict(pd.DataFrame(rows, columns=["variant", "seed", "metric", "value"]).assign(step=float("nan")))
    assert verdict.judgements[0].comparison.metric == "fid_clf" and "reference's default" in verdict.evidence


def test_cifar10_factory_scales_8bit_images_to_the_unit_interval(monkeypatch):
    import numpy as np

    import datamodules.images as images

    fake = {"train": (np.array([[[[0, 255]]] * 3], dtype=np.uint8).reshape(1, 3, 1, 2), np.array([4])),
            "test": (np.full((2, 3, 1, 2), 51, dtype=np.uint8), np.array([1, 2]))}
    monkeypatch.setattr(images, "load_cifar10", lambda data_dir: fake)
    data = unit.cifar10({"split_seed": 0}, "/nowhere", 0)
    torch.testing.assert_close(data.x["train"][0, :, 0], torch.tensor([[-1.0, 1.0]] * 3))
    torch.testing.assert_close(data.x["test"], torch.full((2, 3, 1, 2), 51 / 255 * 2 - 1))
    assert data.n_bins == 256 and data.shape == (3, 1, 2) and data.y["test"].tolist() == [1, 2]
