"""Volume-preserving reshapes: image <-> patches, cyclic shift, transpose, a fixed pixel
permutation (log-det 0)."""

import torch
from nflows.transforms.base import Transform

from mixerflow.core.errors import UserError


def _zero_logdet(inputs: torch.Tensor) -> torch.Tensor:
    return inputs.new_zeros(inputs.shape[0])


class Patchify(Transform):
    """Cut ``(B, C, H, W)`` images into ``S = (H/P)(W/P)`` patches of ``D = C·P²`` values.

    Output ``(B, S, D)``: patches in row-major order over the patch grid, each patch
    flattened as ``(C, P, P)``. A pure reshape, so the log-det is 0.
    """

    def __init__(self, image_shape: tuple[int, int, int], patch_size: int):
        super().__init__()
        channels, height, width = image_shape
        if patch_size < 1 or height % patch_size or width % patch_size:
            raise UserError(
                f"patch_size {patch_size} does not divide the image size {height}x{width}"
            )
        self.image_shape = (channels, height, width)
        self.patch_size = patch_size
        self.grid = (height // patch_size, width // patch_size)

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}, patch_size={self.patch_size}, grid={self.grid}"

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def patch_dim(self) -> int:
        return self.image_shape[0] * self.patch_size**2

    def forward(self, inputs, context=None):
        b = inputs.shape[0]
        c, p, (gh, gw) = self.image_shape[0], self.patch_size, self.grid
        patches = inputs.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
        return patches.reshape(b, gh * gw, c * p * p), _zero_logdet(inputs)

    def inverse(self, inputs, context=None):
        b = inputs.shape[0]
        c, p, (gh, gw) = self.image_shape[0], self.patch_size, self.grid
        images = inputs.reshape(b, gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return images.reshape(b, c, gh * p, gw * p), _zero_logdet(inputs)


class Shift(Transform):
    """Cyclic roll of ``(B, C, H, W)`` images by ``shift`` pixels down and right.

    Rolling by half a patch moves patch borders, so the next patchify groups pixels
    that used to sit in neighbouring patches. Volume preserving.
    """

    def __init__(self, shift: int):
        super().__init__()
        self.shift = shift

    def extra_repr(self) -> str:
        return f"shift={self.shift}"

    def forward(self, inputs, context=None):
        return torch.roll(inputs, (self.shift, self.shift), dims=(2, 3)), _zero_logdet(inputs)

    def inverse(self, inputs, context=None):
        return torch.roll(inputs, (-self.shift, -self.shift), dims=(2, 3)), _zero_logdet(inputs)


class Transpose(Transform):
    """Swap the last two axes: ``(B, S, D) <-> (B, D, S)``. Volume preserving."""

    def forward(self, inputs, context=None):
        return inputs.transpose(1, 2), _zero_logdet(inputs)

    def inverse(self, inputs, context=None):
        return inputs.transpose(1, 2), _zero_logdet(inputs)


class PermutePixels(Transform):
    """One fixed random permutation of the ``H·W`` pixel positions of ``(B, C, H, W)``
    images, the same for every channel and image, drawn from ``seed``. It destroys
    locality: the permutation-robustness experiment (``data.permute_pixels``)."""

    def __init__(self, image_shape: tuple[int, int, int], seed: int):
        super().__init__()
        self.image_shape, self.seed = tuple(image_shape), seed
        positions = image_shape[1] * image_shape[2]
        order = torch.randperm(positions, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("inverse_order", torch.argsort(order), persistent=False)

    def extra_repr(self) -> str:
        return f"seed={self.seed}"

    def _gather(self, inputs: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        flat = inputs.flatten(2)  # (B, C, H·W)
        return flat[:, :, order].reshape(inputs.shape)

    def forward(self, inputs, context=None):
        return self._gather(inputs, self.order), _zero_logdet(inputs)

    def inverse(self, inputs, context=None):
        return self._gather(inputs, self.inverse_order), _zero_logdet(inputs)
