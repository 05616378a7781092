"""Translating images of any size in tiles: the tile plan and blending (plan), whole-image statistics for instance
norms (norms), the memory budget that decides when to tile (budget) and the band-by-band loop (engine).

`i2i translate`, `i2i evaluate` and `i2i demo` go through `engine.tiled_bands` (streamed files) or
`engine.translate_tensor` (an image already in memory).
"""

__all__ = ["BLENDS", "NORM_STATS"]

#: --blend: raised-cosine ramps across each overlap (they add up to one), a Gaussian over the whole tile (MONAI's
#: sliding-window default), the plain mean of the overlapping tiles, or no blending (each pixel from its owner)
BLENDS = ("cosine", "gaussian", "average", "crop")
#: --norm-stats: instance-norm statistics of the whole image measured layer by layer over all tiles (exact, one
#: pass per norm layer), taken from full-resolution crops spread over the image (one small extra pass), from a
#: downscaled copy of it (URUST's thumbnail; one small extra pass), or each tile's own
NORM_STATS = ("image", "sample", "thumbnail", "tile")
