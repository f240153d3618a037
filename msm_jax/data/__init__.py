"""Data: readers for the official dataset layouts, synthetic faces, augmentation, input pipeline."""
