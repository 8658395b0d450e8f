"""anomalib integration: AnoGenDataModule, WeakDraem, DeSTSeg (install the extra: `pip install anogen-aug[anomalib]`)."""
