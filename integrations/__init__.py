"""Integrations of anogen-aug with detector frameworks (shipped as `anogen_aug.integrations`)."""
