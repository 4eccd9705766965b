"""Scoring: COCO metrics over DeepFashion2 result files, and the detection -> result writers."""
