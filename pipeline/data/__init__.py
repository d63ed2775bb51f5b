"""Datasets and data tools: Cityscapes-layout segmentation (`cityscapes`), COCO top-down keypoints
(`coco`), shared transforms (`transforms`, `keypoints`, `heatmaps`), the held-out search split
(`splits`) and the built-in synthetic generator (`synth`). Errors are `errors.DataError`."""
