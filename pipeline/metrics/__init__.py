"""Metrics: confusion-matrix mIoU (`segmentation`) and top-down pose decoding + COCO AP (`pose`)."""
