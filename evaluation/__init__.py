"""Evaluation suite: FID/KID, segmentation consistency, paired image metrics, diversity, speed."""
