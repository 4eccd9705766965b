"""Pure jax.numpy detection ops: boxes, anchors, NMS, RoIAlign.

    from match_rcnn_jax import ops
    ops.roi_align(features, boxes, output_size, spatial_scale=1.0, sampling_ratio=2,
                  aligned=True)
    ops.nms(boxes, scores, iou_threshold, max_output_size) -> (indices, valid)
"""

from match_rcnn_jax.ops import losses, sampling
from match_rcnn_jax.ops.anchors import base_anchors, level_anchors, multilevel_anchors
from match_rcnn_jax.ops.boxes import area, clip, decode, encode, iou
from match_rcnn_jax.ops.nms import batched_nms, nms
from match_rcnn_jax.ops.roi_align import assign_levels, multilevel_roi_align, roi_align

__all__ = [
    "area", "assign_levels", "base_anchors", "batched_nms", "clip", "decode", "encode", "iou",
    "level_anchors", "losses", "multilevel_anchors", "multilevel_roi_align", "nms", "roi_align",
    "sampling",
]
