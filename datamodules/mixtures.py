"""Gaussian mixtures with known densities, and their exact scores under a linear SDE.

A procedural dataset (nothing to download): ``GaussianMixture`` holds weights pi_k, means
mu_k and covariances Sigma_k, samples from the mixture and evaluates its log-density. Under
any SDE whose perturbation kernel is N(alpha_t x, std_t^2 I) (VE, VP, sub-VP), the marginal
p_t is again a mixture, of N(alpha_t mu_k, alpha_t^2 Sigma_k + std_t^2 I), so its score is
known in closed form; ``score_fn(sde)`` returns it, to test samplers and likelihoods without
a learned network. ``MixtureDataModule`` serves samples for training a 2-D score model.
``IsotropicMixture`` is the same for many components of one width in any dimension: a
mixture of narrow Gaussians (``narrow_mixture``) or a data set smoothed by Gaussian noise
(its images as the means), whose exact score tells a wrong sampler from a weak network.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

MIXTURES = ("eight_gaussians", "two_gaussians", "gaussian")


class GaussianMixture:
    """sum_k pi_k N(mu_k, Sigma_k) in R^d; weights (K,), means (K, d), covs (K, d, d)."""

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> None:
        weights, means, covs = (torch.as_tensor(a, dtype=torch.float64) for a in (weights, means, covs))
        K, d = means.shape
        if weights.shape != (K,) or covs.shape != (K, d, d):
            raise ValueError(f"shapes disagree: weights {tuple(weights.shape)}, means {tuple(means.shape)}, covs {tuple(covs.shape)}")
        if (weights < 0).any() or not math.isclose(float(weights.sum()), 1.0, rel_tol=1e-6):
            raise ValueError(f"weights must be non-negative and sum to 1; got {weights.tolist()}")
        torch.linalg.cholesky(covs)  # raises unless every covariance is positive definite
        self.weights, self.means, self.covs = weights, means, covs

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        m = self.mean()
        second = (self.weights[:, None, None] * (self.covs + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - m[:, None] * m[None, :]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, d) float32 samples."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covs)
        return (self.means[k] + (chol[k] @ z[:, :, None])[:, :, 0]).float()

    def _perturbed(self, alpha: torch.Tensor, std: torch.Tensor):
        """Component means (B, K, d) and covariances (B, K, d, d) of p_t for per-example alpha, std (B,)."""
        a = alpha.double()[:, None, None]
        means = a * self.means[None]
        eye = torch.eye(self.dim, dtype=torch.float64)
        covs = a[..., None] ** 2 * self.covs[None] + std.double()[:, None, None, None] ** 2 * eye
        return means, covs

    def log_prob(self, x: torch.Tensor, alpha: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) per row (B,); with alpha, std (B,), the log-density of the perturbed p_t."""
        x = x.double()
        B = x.shape[0]
        alpha = torch.ones(B, dtype=torch.float64) if alpha is None else alpha
        std = torch.zeros(B, dtype=torch.float64) if std is None else std
        means, covs = self._perturbed(alpha, std)
        comp = torch.distributions.MultivariateNormal(means, covariance_matrix=covs)
        return torch.logsumexp(comp.log_prob(x[:, None, :]) + self.weights.log()[None], dim=1)

    def score(self, x: torch.Tensor, alpha: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """grad_x log p_t(x) = sum_k r_k(x) Sigma_tk^{-1} (alpha mu_k - x), r_k the responsibilities."""
        xd = x.double()
        means, covs = self._perturbed(alpha, std)
        comp = torch.distributions.MultivariateNormal(means, covariance_matrix=covs)
        logr = comp.log_prob(xd[:, None, :]) + self.weights.log()[None]
        r = torch.softmax(logr, dim=1)  # (B, K)
        diff = (means - xd[:, None, :])[..., None]  # (B, K, d, 1)
        comp_scores = torch.linalg.solve(covs, diff)[..., 0]  # (B, K, d)
        return (r[..., None] * comp_scores).sum(1).to(x.dtype)

    def score_fn(self, sde):
        """The exact score s(x, t) of the SDE's marginal p_t for data from this mixture.

        x may have any shape (B, *D) with prod(D) = d. For ``VESDE`` the kernel variance is
        sigma(t)^2 - sigma_min^2 (the forward SDE started at the data), not the reference's
        sigma(t)^2, so that the score is exact for the SDE as simulated.
        """
        from lit_modules.score_sde import VESDE

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            alpha, std = sde.marginal_coeffs(t)
            if isinstance(sde, VESDE):
                std = torch.sqrt(torch.clamp(std**2 - sde.sigma_min**2, min=0.0))
            return self.score(x.reshape(x.shape[0], -1), alpha, std).reshape(x.shape)

        return fn


class IsotropicMixture:
    """(1/K) sum_k N(mu_k, w^2 I) in R^D, means (K, D), one width w; scores in closed form.

    Under a kernel N(alpha_t x, std_t^2 I) the marginal is (1/K) sum_k N(alpha_t mu_k, v_t I)
    with v_t = alpha_t^2 w^2 + std_t^2, so grad log p_t(x) = (alpha_t sum_k r_k mu_k - x) / v_t,
    r_k the responsibilities (a softmax of -||x - alpha_t mu_k||^2 / (2 v_t)).
    """

    def __init__(self, means: torch.Tensor, width: float) -> None:
        if means.dim() != 2 or len(means) < 1:
            raise ValueError(f"means must be (K, D) with K >= 1; got shape {tuple(means.shape)}")
        if not width > 0:
            raise ValueError(f"width must be > 0; got {width}")
        self.means, self.width = means.double(), float(width)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, D) float32 samples."""
        k = torch.randint(len(self.means), (n,), generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.width * z).float()

    def _sq_dist(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """||x_b - alpha_b mu_k||^2, (B, K), by matrix products (B x K x D, no (B, K, D) tensor)."""
        mu = self.means.to(x.dtype)
        a = alpha.to(x.dtype)[:, None]
        return (x**2).sum(1, keepdim=True) - 2 * a * (x @ mu.T) + a**2 * (mu**2).sum(1)[None]

    def score(self, x: torch.Tensor, alpha: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """grad_x log p_t(x) for x (B, D) and per-example alpha, std (B,)."""
        v = (alpha.to(x.dtype) ** 2 * self.width**2 + std.to(x.dtype) ** 2)[:, None]
        r = torch.softmax(-self._sq_dist(x, alpha) / (2 * v), dim=1)  # (B, K)
        return (alpha.to(x.dtype)[:, None] * (r @ self.means.to(x.dtype)) - x) / v

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per row (B,)."""
        x = x.double()
        ones = torch.ones(len(x), dtype=torch.float64)
        K, D, w2 = len(self.means), self.dim, self.width**2
        return (torch.logsumexp(-self._sq_dist(x, ones) / (2 * w2), dim=1) - math.log(K)
                - D / 2 * math.log(2 * math.pi * w2))

    def nearest_distance(self, x: torch.Tensor) -> torch.Tensor:
        """Distance of each row of x (B, D) to its nearest component mean, (B,)."""
        ones = torch.ones(len(x), dtype=torch.float64)
        return self._sq_dist(x.double(), ones).min(1).values.clamp(min=0).sqrt()

    def width_ratio(self, x: torch.Tensor) -> float:
        """RMS nearest-component distance over w sqrt(D): 1 for exact samples of well-separated
        components, below 1 for samples collapsed onto the means, above 1 for blurred ones."""
        d = self.nearest_distance(x.reshape(len(x), -1))
        return float(d.pow(2).mean().sqrt() / (self.width * math.sqrt(self.dim)))

    def score_fn(self, sde):
        """The exact score of the SDE's marginal for data from this mixture (x (B, *D)); as
        :meth:`GaussianMixture.score_fn`, VE's kernel variance is sigma(t)^2 - sigma_min^2."""
        from lit_modules.score_sde import VESDE

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            alpha, std = sde.marginal_coeffs(t)
            if isinstance(sde, VESDE):
                std = torch.sqrt(torch.clamp(std**2 - sde.sigma_min**2, min=0.0))
            return self.score(x.reshape(x.shape[0], -1), alpha, std).reshape(x.shape)

        return fn


def narrow_mixture(dim: int = 16, k: int = 40, width: float = 0.05, seed: int = 0) -> IsotropicMixture:
    """k narrow components in [-1, 1]^dim (means uniform, seeded): far apart (about
    sqrt(2 dim / 3) = 3.3 for dim 16) against their width, like images against pixel noise."""
    g = torch.Generator().manual_seed(seed)
    return IsotropicMixture(torch.rand(k, dim, generator=g, dtype=torch.float64) * 2 - 1, width)


def make_mixture(name: str = "eight_gaussians") -> GaussianMixture:
    """Named mixtures: eight Gaussians on a circle of radius 2 (std 0.15, a standard toy set
    in the score-model literature), two unequal Gaussians, and one anisotropic Gaussian."""
    if name == "eight_gaussians":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        means = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        return GaussianMixture(torch.full((8,), 1 / 8), means, 0.15**2 * torch.eye(2).repeat(8, 1, 1))
    if name == "two_gaussians":
        means = torch.tensor([[-1.0, 0.0], [1.5, 0.5]])
        covs = torch.stack([0.1 * torch.eye(2), torch.tensor([[0.2, 0.05], [0.05, 0.1]])])
        return GaussianMixture(torch.tensor([0.3, 0.7]), means, covs)
    if name == "gaussian":
        return GaussianMixture(torch.ones(1), torch.tensor([[0.5, -0.25]]), torch.tensor([[[0.3, 0.1], [0.1, 0.2]]]))
    raise ValueError(f"unknown mixture {name!r}; known: {', '.join(MIXTURES)}")


class MixtureDataModule(L.LightningDataModule):
    """n_train / n_test samples of a named 2-D mixture (B, 2); the density stays available."""

    def __init__(self, name: str = "eight_gaussians", n_train: int = 10000, n_test: int = 2000,
                 batch_size: int = 256, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.mixture = make_mixture(name)
        self.x: dict[str, torch.Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.x:
            return
        g = torch.Generator().manual_seed(self.hparams.seed)
        self.x["train"] = self.mixture.sample(self.hparams.n_train, g)
        self.x["test"] = self.mixture.sample(self.hparams.n_test, g)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x["train"]), batch_size=self.hparams.batch_size, shuffle=True, drop_last=True)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x["test"]), batch_size=self.hparams.batch_size)
