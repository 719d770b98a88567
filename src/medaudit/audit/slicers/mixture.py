"""Error-aware Gaussian mixture slicer (the Domino mixture model, Eyuboglu et al., ICLR 2022).

Model. Each case belongs to one of ``K`` mixture components ``s`` with prior ``w_s``. Given ``s``
the (PCA-reduced) embedding is Gaussian with diagonal covariance, the true label is categorical with
parameter ``p_s`` and the prediction is categorical with parameter ``q_s``. EM maximises the
weighted log-likelihood

    l = sum_i log sum_s w_s N(z_i | mu_s, diag(sigma2_s)) (y_i . p_s)^gamma (yhat_i . q_s)^gammahat

with ``gamma = y_log_likelihood_weight`` and ``gammahat = y_hat_log_likelihood_weight``; soft
predictions are plugged into the categorical likelihood as ``yhat_i . q_s`` exactly as in Domino
0.1.5.

Ranking (``rank_by``). Domino returns the components whose mean prediction differs most from their
mean label, ``max_c |q_sc - p_sc|`` (``rank_by="error"``, the study's rule). That rule ignores how many
cases a component holds, so a tiny, pure group of errors (a handful of cases, error 1.0) outranks a
large group with a somewhat lower error rate, although the evidence for the tiny one is far weaker
and it explains few of the model's errors. Two statistically aware rules use each component's
effective size ``n_s = sum_i r_is`` (``r`` the final responsibilities) and soft error count
``E_s = sum_i r_is e_i``, with ``e_i = 0.5 sum_c |yhat_ic - y_ic|`` the per-case error in [0, 1]
(``|p_i - y_i|`` for binary; the 0/1 error for hard predictions):

* ``"error_lcb"``: the lower bound of the Wilson score interval (confidence ``rank_confidence``) of
  the component's error rate ``E_s / n_s`` with ``n_s`` trials: "the error rate this component
  has at least, given how few cases back it". A 6-case pure group scores ~0.61 at 95%; a 100-case
  group at 0.75 scores ~0.66.
* ``"excess_errors"``: ``E_s - n_s * e_bar`` (``e_bar`` the overall mean error), the number of errors
  the component holds beyond what its size predicts: a component with many excess errors explains
  much of the failure; it favours large components.

``min_slice_size`` ranks components with ``n_s`` below it after all others, under any rule.

Implementation. Vectorised EM in torch (float32 by default, CUDA when present). The E- and M-steps
are fused into one pass over row chunks. The data are held once as a design matrix
``[z^2, z, 1, y, yhat]`` (``z`` the PCA projection); each chunk's log-likelihoods are one matrix
product of it with the stacked weights ``[-1/(2 sigma2), mu/sigma2, const_s, gamma log p_s,
gammahat log q_s]`` of *all components of all restarts at once* (for one-hot labels/predictions the
categorical terms are linear; soft predictions add one small product and a log). Responsibilities
come from an in-place log-sum-exp, and one more matrix product with the same design matrix gives
every M-step sufficient statistic, accumulated in float64. Memory is ``O(n p)`` for the design
matrix plus ``O(chunk * K * n_init)``. The ``n_init`` restarts run side by
side in the same matrix products; a restart stops updating once its lower bound changes by less than
``restart_tol``, the best is kept and refined until ``tol`` (``restart_tol=None``: every restart
runs to ``tol``). Initialisation draws its noise from
``numpy.random.RandomState(random_state)`` in the same order as Domino/scikit-learn, so with
``n_init=1`` and ``dtype="float64"`` it follows Domino's EM path.
"""

from __future__ import annotations

import math
import warnings
from typing import Self

import numpy as np
import torch
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from medaudit.device import default_device
from medaudit.errors import InputError
from medaudit.progress import make_progress

from .base import BaseSlicer, SlicerInputs, check_slicer_inputs

__all__ = ["RANK_RULES", "ErrorAwareMixtureSlicer", "rank_components"]

RANK_RULES = ("error", "error_lcb", "excess_errors")

_EPS64 = float(np.finfo(np.float64).eps)  # Domino adds float64 eps inside the label/prediction logs
_LOG_2PI = math.log(2.0 * math.pi)
_EXP_FLOOR = {torch.float32: -87.0, torch.float64: -708.0}  # exp() stays a normal number above these
_INITS = ("confusion", "random", "kmeans")
_COV_TYPES = ("diag", "spherical")


def rank_components(
    component_error: np.ndarray,
    size: np.ndarray,
    error_count: np.ndarray,
    rank_by: str = "excess_errors",
    confidence: float = 0.95,
    min_size: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranking score of each mixture component and the component order (best first).

    Args:
        component_error: (K,) Domino's error ``max_c |q_sc - p_sc|``.
        size: (K,) effective sizes ``n_s`` (sums of responsibilities).
        error_count: (K,) soft error counts ``E_s`` (responsibility-weighted per-case errors).
        rank_by: ``"error"``, ``"error_lcb"`` or ``"excess_errors"`` (see the module docstring).
        confidence: two-sided confidence of the Wilson interval for ``"error_lcb"``.
        min_size: components with ``n_s < min_size`` are ranked after every other component.

    Returns:
        ``(score, order)``: the (K,) scores (higher = worse slice) and the (K,) component indices
        sorted by descending score (ties keep the component order), small components last.
    """
    from scipy.stats import norm

    if rank_by not in RANK_RULES:
        raise InputError(f"rank_by must be one of {RANK_RULES}, got {rank_by!r}")
    size = np.asarray(size, dtype=np.float64)
    count = np.clip(np.asarray(error_count, dtype=np.float64), 0.0, size)
    if rank_by == "error":
        score = np.asarray(component_error, dtype=np.float64).copy()
    elif rank_by == "excess_errors":
        score = count - size * (count.sum() / max(size.sum(), _EPS64))
    else:
        z = float(norm.ppf(0.5 + confidence / 2.0))
        n = np.maximum(size, _EPS64)
        phat = count / n
        centre = phat + z * z / (2 * n)
        half = z * np.sqrt(np.maximum(phat * (1 - phat) / n + z * z / (4 * n * n), 0.0))
        score = np.clip((centre - half) / (1 + z * z / n), 0.0, 1.0)
    small = size < min_size
    order = np.lexsort((-score, small))  # primary key: small components last; then descending score
    return score, order


class _Params:
    """Stacked parameters of R restarts (float64 on the compute device)."""

    FIELDS = ("log_w", "means", "var", "y_p", "yh_p")

    def __init__(
        self,
        log_w: torch.Tensor,
        means: torch.Tensor,
        var: torch.Tensor,
        y_p: torch.Tensor,
        yh_p: torch.Tensor,
    ) -> None:
        self.log_w, self.means, self.var, self.y_p, self.yh_p = log_w, means, var, y_p, yh_p

    def select(self, idx: list[int]) -> _Params:
        return _Params(self.log_w[idx], self.means[idx], self.var[idx], self.y_p[idx], self.yh_p[idx])

    def assign(self, idx: list[int], other: _Params) -> None:
        for name in self.FIELDS:
            getattr(self, name)[idx] = getattr(other, name)


class ErrorAwareMixtureSlicer(BaseSlicer):
    """Domino-style error-aware Gaussian mixture slicer.

    Args:
        n_slices: number of slices returned (the highest-ranked mixture components).
        n_mixture_components: number of mixture components ``K`` (>= ``n_slices``).
        y_log_likelihood_weight: weight ``gamma`` of the true-label log-likelihood term.
        y_hat_log_likelihood_weight: weight of the prediction log-likelihood term.
        n_pca_components: PCA dimension applied first (sklearn ``PCA``; ``None`` = no PCA). Clipped to
            ``min(n, d)``.
        pca_svd_solver: scikit-learn ``PCA`` solver. ``"auto"`` picks the exact covariance-eigh
            solver when n >= 10 d (one pass over the data; the fastest for tall embeddings) and the
            randomized solver for large wide inputs. ``"randomized"`` reproduces Domino's PCA.
        init: ``"confusion"`` (responsibilities from the confusion-matrix cell of each case, plus
            uniform noise of scale ``confusion_noise``, as Domino), ``"random"`` or ``"kmeans"``.
        n_init: EM restarts; the one with the best lower bound is kept.
        max_iter: maximum EM iterations per restart.
        tol: convergence threshold on the change of the mean per-case lower bound.
        restart_tol: with ``n_init > 1``, the restarts run side by side until each changes by less
            than ``restart_tol`` (Domino's/scikit-learn's default tolerance, 1e-3); the one with the
            best lower bound is then refined alone until ``tol`` ("short-run EM" selection,
            Biernacki et al. 2003). ``None`` runs every restart to ``tol`` and keeps the best.
        reg_covar: added to every variance.
        covariance_type: ``"diag"`` or ``"spherical"``.
        confusion_noise: noise scale of the confusion initialisation.
        chunk_size: rows per chunk in the fused E/M pass (bounds temporary memory).
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        dtype: ``"float32"`` (fast) or ``"float64"`` of the EM arithmetic; sufficient statistics are
            always accumulated in float64.
        rank_by: how components are ranked into slices: ``"excess_errors"`` (soft errors beyond the
            overall rate; the default, as in :class:`medaudit.audit.config.AuditConfig`), ``"error"``
            (Domino: ``max_c |q_sc - p_sc|``) or ``"error_lcb"`` (Wilson lower confidence bound of the
            soft error rate with the effective size); see the module docstring.
        rank_confidence: two-sided confidence level of the ``"error_lcb"`` interval.
        min_slice_size: components whose effective size ``sum_i r_is`` is below this are ranked last.
        random_state: seed (int), ``RandomState`` or ``None``.

    Fitted attributes:
        pca_ (``PCA`` or None), means_ (K, p), covariances_ (K, p), weights_ (K,), y_probs_ (K, C),
        y_hat_probs_ (K, C), component_error_ (K,) = max_c |y_hat_probs_ - y_probs_|, component_size_
        (K,) effective sizes, component_error_rate_ (K,) soft error rates, component_score_ (K,) the
        ``rank_by`` scores, slice_indices_ (n_slices,) components of the slices (column order),
        slice_error_ (n_slices,) their ``component_error_``, slice_score_ (n_slices,), lower_bound_
        (mean weighted log-likelihood of the kept restart), init_lower_bounds_ (n_init,) lower
        bound of each restart when they were compared, n_iter_, converged_, n_classes_,
        n_features_in_, device_.
    """

    def __init__(
        self,
        n_slices: int = 5,
        n_mixture_components: int = 20,
        y_log_likelihood_weight: float = 10.0,
        y_hat_log_likelihood_weight: float = 10.0,
        n_pca_components: int | None = 128,
        pca_svd_solver: str = "auto",
        init: str = "confusion",
        n_init: int = 3,
        max_iter: int = 100,
        tol: float = 1e-5,
        restart_tol: float | None = 1e-3,
        reg_covar: float = 1e-6,
        covariance_type: str = "diag",
        confusion_noise: float = 1e-3,
        chunk_size: int = 65536,
        device: str | None = None,
        dtype: str = "float32",
        rank_by: str = "excess_errors",
        rank_confidence: float = 0.95,
        min_slice_size: float = 0.0,
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.n_slices = n_slices
        self.n_mixture_components = n_mixture_components
        self.y_log_likelihood_weight = y_log_likelihood_weight
        self.y_hat_log_likelihood_weight = y_hat_log_likelihood_weight
        self.n_pca_components = n_pca_components
        self.pca_svd_solver = pca_svd_solver
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.restart_tol = restart_tol
        self.reg_covar = reg_covar
        self.covariance_type = covariance_type
        self.confusion_noise = confusion_noise
        self.chunk_size = chunk_size
        self.device = device
        self.dtype = dtype
        self.rank_by = rank_by
        self.rank_confidence = rank_confidence
        self.min_slice_size = min_slice_size
        self.random_state = random_state

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        k = self.n_mixture_components
        if not (isinstance(self.n_slices, int | np.integer) and self.n_slices >= 1):
            raise InputError(f"n_slices must be a positive integer, got {self.n_slices!r}")
        if not (isinstance(k, int | np.integer) and k >= self.n_slices):
            raise InputError(f"n_mixture_components ({k!r}) must be an integer >= n_slices ({self.n_slices})")
        if self.init not in _INITS:
            raise InputError(f"init must be one of {_INITS}, got {self.init!r}")
        if self.covariance_type not in _COV_TYPES:
            raise InputError(f"covariance_type must be one of {_COV_TYPES}, got {self.covariance_type!r}")
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.n_init < 1 or self.max_iter < 1 or self.chunk_size < 1:
            raise InputError("n_init, max_iter and chunk_size must be >= 1")
        if self.n_pca_components is not None and self.n_pca_components < 1:
            raise InputError(f"n_pca_components must be >= 1 or None, got {self.n_pca_components}")
        if self.tol < 0 or self.reg_covar < 0:
            raise InputError("tol and reg_covar must be >= 0")
        if self.rank_by not in RANK_RULES:
            raise InputError(f"rank_by must be one of {RANK_RULES}, got {self.rank_by!r}")
        if not 0.0 < self.rank_confidence < 1.0:
            raise InputError(f"rank_confidence must be in (0, 1), got {self.rank_confidence!r}")
        if self.min_slice_size < 0:
            raise InputError(f"min_slice_size must be >= 0, got {self.min_slice_size!r}")

    # ------------------------------------------------------------------ fit
    def fit(self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray) -> Self:
        """Fit PCA and the mixture on (n, d) embeddings, targets and predicted probabilities.

        Args:
            embeddings: (n, d) float array (a memory-mapped ``.npy`` works and is not copied).
            targets: (n,) integer labels or (n, C) one-hot.
            pred_probs: (n,) probability of class 1 (hard 0/1 accepted) or (n, C) probabilities.
        """
        inp = self._check_fit_inputs(embeddings, targets, pred_probs)
        rs = check_random_state(self.random_state)
        self._fit_pca(inp)
        xe = self._design(inp)  # (n, F) = [z^2, z, 1, y, yhat] on device
        lin_y, lin_yh = _is_onehot(inp.targets), _is_onehot(inp.pred_probs)
        params, lower, last_change, n_iter, best = self._run_em(xe, lin_y, lin_yh, rs)
        bp = params.select([best])
        size, err_count = self._component_counts(xe, lin_y, lin_yh, bp)
        del xe
        converged = abs(last_change[best]) < self.tol
        if not converged:
            warnings.warn(
                f"ErrorAwareMixtureSlicer: best restart did not converge in max_iter={self.max_iter} "
                f"iterations (tol={self.tol}); consider raising max_iter",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.lower_bound_ = float(lower[best])
        self.n_iter_ = int(n_iter[best])
        self.converged_ = bool(converged)
        self._store_components(bp, size, err_count)
        return self

    def _check_fit_inputs(
        self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray
    ) -> SlicerInputs:
        self._check_params()
        inp = check_slicer_inputs(embeddings, targets, pred_probs)
        n, d = inp.embeddings.shape
        k = int(self.n_mixture_components)
        if n < k:
            raise InputError(
                f"{n} cases is fewer than n_mixture_components={k}; need at least {k} cases to fit"
            )
        c = inp.n_classes
        if self.init == "confusion" and k < c * c:
            raise InputError(f"init='confusion' needs n_mixture_components >= n_classes^2 = {c * c}, got {k}")
        self.n_features_in_ = d
        self.n_classes_ = c
        self.device_ = default_device(self.device)
        return inp

    def _fit_pca(self, inp: SlicerInputs) -> None:
        """PCA (scikit-learn; "auto" picks the covariance-eigh solver for n >> d, randomized for large d)."""
        n, d = inp.embeddings.shape
        if self.n_pca_components is None:
            self.pca_ = None
            return
        n_comp = int(min(self.n_pca_components, n, d))
        seed = self.random_state if isinstance(self.random_state, int | np.integer) else 0
        self.pca_ = PCA(n_components=n_comp, svd_solver=self.pca_svd_solver, random_state=seed)
        self.pca_.fit(inp.embeddings)

    def _run_em(
        self, xe: torch.Tensor, lin_y: bool, lin_yh: bool, rs: np.random.RandomState
    ) -> tuple[_Params, np.ndarray, np.ndarray, np.ndarray, int]:
        """EM for all restarts at once; returns the parameters, per-restart bounds and the best restart.

        With ``restart_tol`` the restarts are compared after a short run and only the best one is refined
        to ``tol``.
        """
        n, k, r_count = xe.shape[0], int(self.n_mixture_components), int(self.n_init)
        inits = [self._init_params(xe, rs) for _ in range(r_count)]
        params = _Params(*(torch.cat([getattr(q, f) for q in inits]) for f in _Params.FIELDS))
        lower = np.full(r_count, -np.inf)
        last_change = np.full(r_count, np.inf)
        n_iter = np.zeros(r_count, dtype=int)
        two_phase = r_count > 1 and self.restart_tol is not None and self.restart_tol > self.tol
        phase_tol = float(self.restart_tol) if two_phase else float(self.tol)
        active, best, it = list(range(r_count)), -1, 0
        with make_progress() as progress:
            task = progress.add_task(f"mixture EM (n={n}, K={k}, {r_count} restarts)", total=self.max_iter)
            for it in range(1, self.max_iter + 1):
                lb, stats = self._pass(xe, lin_y, lin_yh, params.select(active), want_stats=True)
                params.assign(active, self._m_step(stats, len(active), n))
                for j, r in enumerate(active):
                    last_change[r] = lb[j] - lower[r]
                    lower[r] = lb[j]
                    n_iter[r] = it
                active = [r for r in active if abs(last_change[r]) >= phase_tol]
                progress.update(task, advance=1)
                if not active and best < 0 and two_phase:
                    best = int(np.argmax(lower))
                    self.init_lower_bounds_ = lower.copy()
                    phase_tol = float(self.tol)
                    active = [best] if abs(last_change[best]) >= phase_tol else []
                if not active:
                    break
            progress.update(task, total=it, completed=it)  # converged early: the bar ends full
        if best < 0:
            best = int(np.argmax(lower))  # first best on ties, like scikit-learn's strict ">"
            self.init_lower_bounds_ = lower.copy()
        return params, lower, last_change, n_iter, best

    def _store_components(self, bp: _Params, size: np.ndarray, err_count: np.ndarray) -> None:
        """Fitted mixture parameters, per-component error and size, and the ranked slices."""
        self.weights_ = bp.log_w[0].exp().cpu().numpy()
        self.means_ = bp.means[0].cpu().numpy()
        self.covariances_ = bp.var[0].cpu().numpy()
        self.y_probs_ = bp.y_p[0].cpu().numpy()
        self.y_hat_probs_ = bp.yh_p[0].cpu().numpy()
        self.component_error_ = np.abs(self.y_hat_probs_ - self.y_probs_).max(axis=1)
        self.component_size_ = size
        self.component_error_rate_ = err_count / np.maximum(size, _EPS64)
        score, order = rank_components(
            self.component_error_,
            size,
            err_count,
            self.rank_by,
            float(self.rank_confidence),
            float(self.min_slice_size),
        )
        self.component_score_ = score
        self.slice_indices_ = order[: self.n_slices]
        self.slice_error_ = self.component_error_[self.slice_indices_]
        self.slice_score_ = score[self.slice_indices_]

    def _component_counts(
        self, xe: torch.Tensor, lin_y: bool, lin_yh: bool, par: _Params
    ) -> tuple[np.ndarray, np.ndarray]:
        """Effective size ``sum_i r_is`` and soft error count ``sum_i r_is e_i`` of every component under
        the fitted parameters, ``e_i = 0.5 sum_c |yhat_ic - y_ic|`` (one more pass over the rows)."""
        p, c = self._p, self.n_classes_
        k = par.means.shape[1]
        w, fe, nonlin = self._estep_setup(par, lin_y, lin_yh)
        size = torch.zeros(k, dtype=torch.float64, device=xe.device)
        count = torch.zeros(k, dtype=torch.float64, device=xe.device)
        for s in range(0, xe.shape[0], self.chunk_size):
            xc = xe[s : s + self.chunk_size]
            resp, _ = self._estep_chunk(xc, w, fe, nonlin, 1, k)
            y, yh = xc[:, 2 * p + 1 : 2 * p + 1 + c], xc[:, 2 * p + 1 + c :]
            err = 0.5 * (yh - y).abs().sum(1)
            size += resp.sum(0).double()
            count += (resp.T @ err).double()
        return size.cpu().numpy(), count.cpu().numpy()

    @property
    def _p(self) -> int:
        """Dimension of the modelled embedding (after PCA)."""
        return int(self.n_features_in_ if self.pca_ is None else self.pca_.n_components_)

    @property
    def _tdtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32

    def _project(self, emb: np.ndarray) -> np.ndarray:
        out = emb if self.pca_ is None else self.pca_.transform(emb)
        return np.asarray(out, dtype=np.float64 if self.dtype == "float64" else np.float32)

    def _design_chunk(self, emb: np.ndarray, y: np.ndarray, yh: np.ndarray) -> torch.Tensor:
        """[z^2, z, 1, y, yhat] for a chunk of rows, z the PCA projection."""
        z = torch.from_numpy(self._project(emb)).to(self.device_)
        dt = self._tdtype
        ones = torch.ones((z.shape[0], 1), dtype=dt, device=self.device_)
        yt = torch.from_numpy(y).to(self.device_, dt)
        yht = torch.from_numpy(yh).to(self.device_, dt)
        return torch.cat([z * z, z, ones, yt, yht], dim=1)

    def _design(self, inp: SlicerInputs) -> torch.Tensor:
        """The design matrix of all rows, PCA applied chunk by chunk (no full float64/centred copy).

        Its matrix product with the stacked per-component weights gives every linear term of the
        log-likelihood at once, and its product with the responsibilities gives every sufficient
        statistic of the M-step (sum r z^2, sum r z, n_k, sum r y, sum r yhat) at once."""
        n = inp.embeddings.shape[0]
        f = 2 * self._p + 1 + 2 * self.n_classes_
        xe = torch.empty((n, f), dtype=self._tdtype, device=self.device_)
        for s in range(0, n, self.chunk_size):
            e = min(n, s + self.chunk_size)
            xe[s:e] = self._design_chunk(inp.embeddings[s:e], inp.targets[s:e], inp.pred_probs[s:e])
        return xe

    # ------------------------------------------------------------------ EM pieces
    def _init_params(self, xe: torch.Tensor, rs: np.random.RandomState) -> _Params:
        """Initial parameters from initial responsibilities (one M-step), as Domino/scikit-learn."""
        n = xe.shape[0]
        k = int(self.n_mixture_components)
        p, c = self._p, self.n_classes_
        labels = None
        if self.init == "kmeans":
            z = xe[:, p : 2 * p].cpu().numpy()
            km_cls = KMeans if n <= 200_000 else MiniBatchKMeans
            labels = torch.from_numpy(
                km_cls(n_clusters=k, n_init=1, random_state=rs).fit(z).labels_.astype(np.int64)
            )
            labels = labels.to(self.device_)
        stats = torch.zeros((k, xe.shape[1]), dtype=torch.float64, device=self.device_)
        for s in range(0, n, self.chunk_size):
            e = min(n, s + self.chunk_size)
            m = e - s
            xc = xe[s:e]
            if self.init == "kmeans":
                resp = torch.zeros((m, k), dtype=self._tdtype, device=self.device_)
                resp[torch.arange(m, device=self.device_), labels[s:e]] = 1.0
            elif self.init == "random":
                resp = torch.from_numpy(rs.rand(m, k)).to(self.device_, self._tdtype)
                resp /= resp.sum(1, keepdim=True)
            else:  # confusion: cell (y, yhat) of each case, tiled over the K components, plus noise
                y, yh = xc[:, 2 * p + 1 : 2 * p + 1 + c], xc[:, 2 * p + 1 + c :]
                cell = (y[:, :, None] * yh[:, None, :]).reshape(m, c * c)
                resp = cell.repeat(1, -(-k // (c * c)))[:, :k]
                resp = resp / resp.sum(1, keepdim=True)
                noise = torch.from_numpy(rs.rand(m, k)).to(self.device_, self._tdtype)
                resp = resp + noise * self.confusion_noise
                resp /= resp.sum(1, keepdim=True)
            stats += (resp.T @ xc).double()
        return self._m_step(stats, 1, n)

    def _m_step(self, stats: torch.Tensor, r: int, n: int) -> _Params:
        """Parameters from float64 sufficient statistics (the Domino / scikit-learn M-step)."""
        p, c = self._p, self.n_classes_
        k = stats.shape[0] // r
        st = stats.reshape(r, k, -1)
        nk = st[..., 2 * p] + 10 * _EPS64
        means = st[..., p : 2 * p] / nk[..., None]
        var = st[..., :p] / nk[..., None] - means * means
        var = var.clamp_min(0.0) + self.reg_covar
        if self.covariance_type == "spherical":
            var = var.mean(-1, keepdim=True).expand(-1, -1, p).clone()
        var = var.clamp_min(torch.finfo(self._tdtype).tiny)
        return _Params(
            log_w=torch.log(nk / n),
            means=means,
            var=var,
            y_p=st[..., 2 * p + 1 : 2 * p + 1 + c] / nk[..., None],
            yh_p=st[..., 2 * p + 1 + c :] / nk[..., None],
        )

    def _estep_setup(self, par: _Params, lin_y: bool, lin_yh: bool) -> tuple[torch.Tensor, int, list]:
        """Stacked linear weights W (R*K, F_e) for the first F_e design columns, and the terms that
        are not linear in the design (soft labels / soft predictions): log(y . p_s + eps)."""
        dt = self._tdtype
        p, c = self._p, self.n_classes_
        r, k, _ = par.means.shape
        wy, wyh = float(self.y_log_likelihood_weight), float(self.y_hat_log_likelihood_weight)
        prec = 1.0 / par.var
        const = -0.5 * (p * _LOG_2PI + (par.means * par.means * prec).sum(-1)) + 0.5 * torch.log(prec).sum(-1)
        parts = [-0.5 * prec, par.means * prec, (const + par.log_w)[..., None]]
        nonlin = []
        # For one-hot rows, log(y . p + eps) == y . log(p + eps): linear in the design columns.
        if lin_y:
            parts.append(wy * torch.log(par.y_p + _EPS64))
        else:
            nonlin.append((2 * p + 1, par.y_p.reshape(r * k, c).T.to(dt), wy))
        if lin_y and lin_yh:
            parts.append(wyh * torch.log(par.yh_p + _EPS64))
        else:
            nonlin.append((2 * p + 1 + c, par.yh_p.reshape(r * k, c).T.to(dt), wyh))
        w = torch.cat(parts, dim=-1).reshape(r * k, -1).to(dt)
        return w, w.shape[1], nonlin

    def _estep_chunk(
        self, xc: torch.Tensor, w: torch.Tensor, fe: int, nonlin: list, r: int, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Responsibilities (m, R*K) and log-normalisers (m, R) of a chunk (log-sum-exp, in place)."""
        c = self.n_classes_
        out = xc[:, :fe] @ w.T
        for col, probs_t, weight in nonlin:
            out.add_(torch.log(xc[:, col : col + c] @ probs_t + _EPS64), alpha=weight)
        lp = out.view(xc.shape[0], r, k)
        mx = lp.amax(dim=2, keepdim=True)
        # exp() of arguments below the underflow limit takes a slow path in the vectorised kernels
        # (about 10x slower) only to return 0 or a denormal, and denormal responsibilities then slow
        # down the M-step matrix product as much again; setting them to exactly 0 first avoids both.
        floor = _EXP_FLOOR[xc.dtype]
        lp.sub_(mx)
        lp.masked_fill_(lp < floor, -math.inf).exp_()
        ssum = lp.sum(dim=2, keepdim=True)
        lp.div_(ssum)
        return out, (ssum.log_() + mx)[..., 0]

    def _pass(
        self, xe: torch.Tensor, lin_y: bool, lin_yh: bool, par: _Params, want_stats: bool
    ) -> tuple[np.ndarray, torch.Tensor | None]:
        """One fused E-step (+ M-step statistics) over all rows, chunk by chunk. Returns the mean
        lower bound of each restart and the float64 statistics (R*K, F)."""
        n = xe.shape[0]
        r, k, _ = par.means.shape
        w, fe, nonlin = self._estep_setup(par, lin_y, lin_yh)
        lb = torch.zeros(r, dtype=torch.float64, device=xe.device)
        stats = (
            torch.zeros((r * k, xe.shape[1]), dtype=torch.float64, device=xe.device) if want_stats else None
        )
        for s in range(0, n, self.chunk_size):
            xc = xe[s : s + self.chunk_size]
            resp, lse = self._estep_chunk(xc, w, fe, nonlin, r, k)
            lb += lse.sum(0).double()
            if stats is not None:
                stats += (resp.T @ xc).double()
        return (lb / n).cpu().numpy(), stats

    # ------------------------------------------------------------------ inference
    def _fitted_params(self) -> _Params:
        """The fitted parameters as a one-restart stack on ``device_`` (built from the public attrs,
        so a pickled slicer keeps working)."""

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float64), device=self.device_)[None]

        return _Params(
            log_w=torch.log(t(self.weights_)),
            means=t(self.means_),
            var=t(self.covariances_),
            y_p=t(self.y_probs_),
            yh_p=t(self.y_hat_probs_),
        )

    def _checked(self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray) -> SlicerInputs:
        check_is_fitted(self, "slice_indices_")
        inp = check_slicer_inputs(embeddings, targets, pred_probs, n_classes=self.n_classes_)
        if inp.embeddings.shape[1] != self.n_features_in_:
            raise InputError(
                f"embeddings has {inp.embeddings.shape[1]} columns but the slicer was fitted on {self.n_features_in_}"
            )
        return inp

    def _responsibilities(
        self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray
    ) -> np.ndarray:
        """(n, K) posterior component probabilities under the fitted model."""
        inp = self._checked(embeddings, targets, pred_probs)
        n = inp.embeddings.shape[0]
        k = int(self.n_mixture_components)
        w, fe, nonlin = self._estep_setup(
            self._fitted_params(), _is_onehot(inp.targets), _is_onehot(inp.pred_probs)
        )
        out = np.empty((n, k), dtype=np.float32)
        for s in range(0, n, self.chunk_size):
            e = min(n, s + self.chunk_size)
            xc = self._design_chunk(inp.embeddings[s:e], inp.targets[s:e], inp.pred_probs[s:e])
            resp, _ = self._estep_chunk(xc, w, fe, nonlin, 1, k)
            out[s:e] = resp.float().cpu().numpy()
        return out

    def predict_proba(
        self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray
    ) -> np.ndarray:
        """(n, n_slices) slice membership probabilities; column 0 is the highest-error slice.

        These are the mixture responsibilities of the slice components (rows need not sum to 1: the
        rest of the mass sits on the non-slice components), as Domino's ``predict_proba``.
        """
        return self._responsibilities(embeddings, targets, pred_probs)[:, self.slice_indices_]

    def predict(self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
        """(n, n_slices) hard membership: 1 where the case's most probable mixture component (over
        all ``K``) is that slice. Cases whose best component is not a slice belong to no slice
        (Domino instead forces every case into its best slice)."""
        resp = self._responsibilities(embeddings, targets, pred_probs)
        best = resp.argmax(axis=1)
        return (best[:, None] == self.slice_indices_[None, :]).astype(np.int32)

    def score(self, embeddings: np.ndarray, targets: np.ndarray, pred_probs: np.ndarray) -> float:
        """Mean per-case weighted log-likelihood (the quantity EM maximises) under the fitted model."""
        inp = self._checked(embeddings, targets, pred_probs)
        xe = self._design(inp)
        lb, _ = self._pass(
            xe, _is_onehot(inp.targets), _is_onehot(inp.pred_probs), self._fitted_params(), False
        )
        return float(lb[0])


def _is_onehot(a: np.ndarray) -> bool:
    """True when every row is exactly one-hot (hard labels / hard predictions)."""
    return bool(np.all((a == 0) | (a == 1)) and np.all(a.sum(axis=1) == 1))
