"""How many calibration images the per-channel statistics need (stage: quantize).

Equalization (each channel's |x| max) and bias correction (each channel's mean) read a
channel's values over images and positions, so a network with small late maps needs more
images than one with large maps for the same statistics. The default count gives every Conv
output channel at least CHANNEL_VALUES values at the smallest map, and at least MIN_IMAGES
images: 256 for the digits GoogLeNet (2 x 2 maps), 16 for Inception v3 at 299 (8 x 8).

Measured on the digits GoogLeNet, held-out mean abs logit error in exact Q/DQ mode, the mean
over four calibration seeds (256-image subsets): 256 images for both statistics (1024 values
a channel) 0.0125; 64 (256 values) 0.0134; 16 (64 values) 0.0149; equalization on 16 with
bias correction on 256, 0.0143 (calibration/README.md). Below 1024 values the error grew.
"""

from __future__ import annotations

import math
from typing import Optional

CHANNEL_VALUES = 1024
MIN_IMAGES = 16


def images_for_channel_statistics(model, available: int, asked: Optional[int] = None) -> int:
    """`asked` (the recipe's count) when given, else the rule above; never more than `available`."""
    from ..graph_utils import inferred_dims

    if asked is not None:
        return max(1, min(asked, available))
    dims = inferred_dims(model)
    maps = []
    for node in model.graph.node:
        shape = dims.get(node.output[0], [])
        if node.op_type == "Conv" and len(shape) >= 3 and all(d > 0 for d in shape[2:]):
            maps.append(math.prod(shape[2:]))
    if not maps:  # spatial sizes unknown (a dynamic input): the larger of the two bounds' counts
        return min(available, max(MIN_IMAGES, 64))
    return min(available, max(MIN_IMAGES, math.ceil(CHANNEL_VALUES / min(maps))))
