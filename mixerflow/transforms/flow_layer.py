"""One flow layer, ActNorm -> linear map -> complementary couplings, in a few large ops
(Glow's "step of flow"; the name *step* is kept for the optimiser's).

nflows composes such a layer from generic pieces: every coupling gathers its two halves with
index tensors and scatters them back, the LU map builds its triangles from numpy indices
and applies two products, and ActNorm is a pass of its own. Each of those small ops is a
kernel launch on a GPU. :class:`FlowLayer` keeps the very same nflows modules, so the
parameters, the ``state_dict`` and old checkpoints are unchanged, and
``CompositeTransform.forward`` of the same modules is the reference it is tested
against. It computes the layer as

    [a | b] = x @ M.T + c           ActNorm, linear map and the couplings' split: one product
    a = f(a; net(b)), b = f(b; net(a)), ...     each coupling updates one half
    y = [a | b] put back in the original feature order (one gather)

The product, the coupling maps and every log-det run in float32 even under autocast;
only the conditioner networks follow autocast (bf16 on a GPU).
"""

import torch
from nflows.transforms.base import CompositeTransform
from nflows.transforms.conv import OneByOneConvolution
from nflows.transforms.coupling import (
    AdditiveCouplingTransform,
    CouplingTransform,
    PiecewiseRationalQuadraticCouplingTransform,
)
from nflows.transforms.lu import LULinear
from nflows.transforms.normalization import ActNorm
from nflows.transforms.permutations import RandomPermutation
from nflows.utils.torchutils import sum_except_batch
from torch.nn import functional as F

from mixerflow.nn.classes import guide, unguided
from mixerflow.nn.precision import float32_region
from mixerflow.transforms.coupling import (
    BoundedAffineCoupling,
    CouplingSpec,
    bounded_scale,
    coupling_layer,
)

LINEAR_MAPS = ("lu", "permutation")

SUPPORTED_COUPLINGS = (
    BoundedAffineCoupling,
    AdditiveCouplingTransform,
    PiecewiseRationalQuadraticCouplingTransform,
)


class FlowLayer(CompositeTransform):
    """ActNorm -> LU map or permutation -> couplings over the features on ``feature_dim``.

    ``feature_dim=-1``: inputs ``(..., D)``, e.g. MixerFlow's rows ``(B, R, D)``, with a
    conditioner context that broadcasts against them (``(R, ctx)``). ``feature_dim=1``:
    images ``(B, D, H, W)`` (Glow's channels, 1x1 convolution). The couplings' masks must
    be two complementary halves, used in any order. A :class:`~mixerflow.nn.classes.Guided`
    context guides every coupling's parameters.
    """

    def __init__(
        self,
        actnorm: ActNorm,
        linear: LULinear | RandomPermutation,
        couplings: list[CouplingTransform],
        feature_dim: int = -1,
    ):
        super().__init__([actnorm, linear, *couplings])
        if feature_dim not in (1, -1):
            raise ValueError(f"feature_dim must be 1 or -1, got {feature_dim}")
        first, second = couplings[0].transform_features, couplings[0].identity_features
        for coupling in couplings:
            if not isinstance(coupling, SUPPORTED_COUPLINGS):
                raise TypeError(f"FlowLayer cannot fuse a {type(coupling).__name__}")
            if not any(torch.equal(coupling.transform_features, half) for half in (first, second)):
                raise ValueError("the couplings' masks must be two complementary halves")
        self.feature_dim = feature_dim
        self.features = actnorm.log_scale.numel()
        self.halves = (len(first), len(second))
        # coupling k updates the first half (a) when its transformed features are ``first``
        self.updates_first = [torch.equal(c.transform_features, first) for c in couplings]
        halves_order = torch.cat([first, second])
        self.register_buffer("halves_order", halves_order, persistent=False)
        self.register_buffer("original_order", torch.argsort(halves_order), persistent=False)
        # alternating masks of equal halves: the original order is a plain interleave
        interleave = torch.stack([first, second], dim=1).flatten() if len(first) == len(
            second) else None
        self.interleaved = interleave is not None and torch.equal(
            interleave, torch.arange(self.features))
        if isinstance(linear, LULinear):
            # nflows stores both triangles' entries in row-major order
            rows, cols = torch.tril_indices(self.features, self.features, -1)
            self.register_buffer("lower_index", rows * self.features + cols, persistent=False)
            rows, cols = torch.triu_indices(self.features, self.features, 1)
            self.register_buffer("upper_index", rows * self.features + cols, persistent=False)
        self._actnorm_ready = False  # a Python flag, so a compiled graph never reads the buffer
        self.register_load_state_dict_post_hook(FlowLayer._after_load)

    @property
    def actnorm(self) -> ActNorm:
        return self._transforms[0]

    @property
    def linear(self) -> LULinear | RandomPermutation:
        return self._transforms[1]

    @property
    def couplings(self) -> list[CouplingTransform]:
        return list(self._transforms[2:])

    @staticmethod
    def _after_load(module: "FlowLayer", incompatible_keys) -> None:
        module._actnorm_ready = bool(module.actnorm.initialized)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None):
        """``inputs`` -> ``(outputs, logabsdet (B,))``; see the class for the shapes."""
        self._initialize_actnorm(inputs)
        with float32_region(inputs):
            weight, bias, logdet_per_position = self._affine_map()
            mixed = self._apply_matrix(inputs, weight, bias)
        logabsdet = logdet_per_position * (inputs[0].numel() // self.features)
        a, b, logabsdet = self._couple_halves(
            *mixed.split(self.halves, dim=self.feature_dim),
            logabsdet.expand(inputs.shape[0]), context, inverse=False,
        )
        return self._original_order(a, b), logabsdet

    def inverse(self, inputs: torch.Tensor, context: torch.Tensor | None = None):
        halves = inputs.index_select(self.feature_dim, self.halves_order)
        a, b, logabsdet = self._couple_halves(
            *halves.split(self.halves, dim=self.feature_dim),
            inputs.new_zeros(inputs.shape[0]), context, inverse=True,
        )
        with float32_region(inputs):
            outputs = self._unmix(self._original_order(a, b))
            logdet_per_position = self._logdet_per_position()
        return outputs, logabsdet - logdet_per_position * (inputs[0].numel() // self.features)

    def _couple_halves(self, a, b, logabsdet, context, inverse: bool):
        """Every coupling in order (reversed for the inverse), each updating its half given
        the other; ``(a, b, logabsdet)`` with the couplings' log-dets added."""
        order = list(zip(self.couplings, self.updates_first, strict=True))
        for coupling, first in order[::-1] if inverse else order:
            if first:
                a, elementwise = self._couple(coupling, a, b, context, inverse)
            else:
                b, elementwise = self._couple(coupling, b, a, context, inverse)
            if elementwise is not None:
                logabsdet = logabsdet + sum_except_batch(elementwise)
        return a, b, logabsdet

    def _original_order(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The halves put back in feature order (an interleave for alternating masks)."""
        dim = self.feature_dim % a.dim()
        if self.interleaved:
            return torch.stack([a, b], dim=dim + 1).flatten(dim, dim + 1)
        return torch.cat([a, b], dim=dim).index_select(dim, self.original_order)

    def _initialize_actnorm(self, inputs: torch.Tensor) -> None:
        """nflows' data-dependent ActNorm init, on the first training pass only."""
        if not self.training or self._actnorm_ready:
            return
        if not self.actnorm.initialized:
            rows = inputs.detach().movedim(self.feature_dim, -1).reshape(-1, self.features)
            self.actnorm._initialize(rows)
        self._actnorm_ready = True

    def _linear_matrix(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The linear map as ``(W (D, D), bias (D,) or None)``."""
        linear = self.linear
        if isinstance(linear, RandomPermutation):
            shift = self.actnorm.shift
            eye = torch.eye(self.features, device=shift.device, dtype=shift.dtype)
            return eye.index_select(0, linear._permutation), None
        lower, upper = self._triangles()
        weight = lower @ upper
        if isinstance(linear, OneByOneConvolution):  # permutes its inputs before the LU product
            weight = weight.index_select(1, torch.argsort(linear.permutation._permutation))
        return weight, linear.bias

    def _logdet_per_position(self) -> torch.Tensor:
        """``log|det|`` of ActNorm and the linear map at one position (a permutation adds 0)."""
        logdet = self.actnorm.log_scale.sum()
        if isinstance(self.linear, LULinear):
            logdet = logdet + torch.log(self.linear.upper_diag).sum()
        return logdet

    def _triangles(self) -> tuple[torch.Tensor, torch.Tensor]:
        """nflows' ``L`` (unit diagonal) and ``U`` of the LU map, built by flat index."""
        linear, size = self.linear, self.features
        flat = linear.lower_entries.new_zeros(size * size)
        lower = flat.index_put((self.lower_index,), linear.lower_entries).view(size, size)
        upper = flat.index_put((self.upper_index,), linear.upper_entries).view(size, size)
        eye = torch.eye(size, device=flat.device, dtype=flat.dtype)
        return lower + eye, upper + torch.diag(linear.upper_diag)

    def _affine_map(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(M, c, log-det per position)``: ``x @ M.T + c`` is ActNorm then the linear map,
        with the output features in halves order."""
        weight, linear_bias = self._linear_matrix()
        actnorm = self.actnorm
        bias = weight @ actnorm.shift
        if linear_bias is not None:
            bias = bias + linear_bias
        matrix = (weight * torch.exp(actnorm.log_scale)).index_select(0, self.halves_order)
        return matrix, bias.index_select(0, self.halves_order), self._logdet_per_position()

    def _apply_matrix(self, inputs, matrix, bias):
        # A matrix product, never a 1x1 convolution: cuDNN convolutions run float32 in
        # TF32 by default on CUDA (10-bit mantissa), which would break the exact inverse.
        if self.feature_dim == -1:
            return F.linear(inputs, matrix, bias)
        return F.linear(inputs.movedim(1, -1), matrix, bias).movedim(-1, 1)

    def _unmix(self, mixed: torch.Tensor) -> torch.Tensor:
        """Invert ActNorm and the linear map."""
        weight_free = mixed.movedim(self.feature_dim, -1)
        shape = weight_free.shape
        rows = weight_free.reshape(-1, self.features)
        linear, actnorm = self.linear, self.actnorm
        if isinstance(linear, RandomPermutation):
            rows = rows.index_select(1, torch.argsort(linear._permutation))
        else:
            lower, upper = self._triangles()
            solved = torch.linalg.solve_triangular(
                lower, (rows - linear.bias).T, upper=False, unitriangular=True
            )
            rows = torch.linalg.solve_triangular(upper, solved, upper=True).T
            if isinstance(linear, OneByOneConvolution):
                rows = rows.index_select(1, torch.argsort(linear.permutation._permutation))
        rows = (rows - actnorm.shift) * torch.exp(-actnorm.log_scale)
        return rows.reshape(shape).movedim(-1, self.feature_dim)

    def _couple(self, coupling, updated, given, context, inverse: bool):
        """One coupling: ``updated`` half mapped given the ``given`` half; ``(values, per-element
        log-dets or None)``."""
        params = guide(coupling.transform_net(given, unguided(context)), context)
        count = updated.shape[self.feature_dim]
        if isinstance(coupling, PiecewiseRationalQuadraticCouplingTransform):
            if self.feature_dim == -1:
                params = params.reshape(*updated.shape, -1)
            else:  # nflows' image layout: (B, C*P, H, W) -> (B, C, H, W, P)
                params = params.reshape(updated.shape[0], count, -1, *updated.shape[2:])
                params = params.movedim(2, -1)
            return coupling._piecewise_cdf(updated, params, inverse=inverse)
        if isinstance(coupling, AdditiveCouplingTransform):
            return (updated - params if inverse else updated + params), None
        shift, unconstrained = params.split(count, dim=self.feature_dim)
        scale = bounded_scale(unconstrained)
        if inverse:
            return (updated - shift) / scale, -torch.log(scale)
        return updated * scale + shift, torch.log(scale)



def linear_map(features: int, linear: str) -> LULinear | RandomPermutation:
    """A layer's linear map over ``features``: ``lu`` (learned, identity at start) or
    ``permutation`` (fixed, random)."""
    if linear == "lu":
        return LULinear(features, identity_init=True)
    if linear == "permutation":
        return RandomPermutation(features)
    raise ValueError(f"unknown linear map {linear!r}; choose one of {', '.join(LINEAR_MAPS)}")


def flow_layer(features: int, coupling: CouplingSpec, coupling_layers: int,
               linear: str = "lu") -> FlowLayer:
    """ActNorm -> LU linear map (or fixed permutation) -> ``coupling_layers`` complementary
    couplings, on the last dimension of ``(..., features)`` (e.g. rows ``(B, R, features)``)."""
    mixer = linear_map(features, linear)  # drawn before the couplings (a permutation's seed)
    layers = [coupling_layer(coupling, features, even=i % 2 == 0)
              for i in range(coupling_layers)]
    return FlowLayer(ActNorm(features), mixer, layers)
