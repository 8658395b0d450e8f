"""Downstream quality on real data: does training on generated anomalies make a detector better?

Two CPU protocols, one command each; for each data set (MVTec AD layout: Magnetic Tile, KolektorSDD, MVTec 3D-AD
tire by default) and seed, k = 3 support anomalies per defect type are drawn from the test split and REMOVED from
the evaluation set, and a crop-and-paste bank (`CopyPasteGenerator`, exact masks) is written from them onto the
normal train images.

- segmentation (about 45 minutes on one core): a small U-Net (`anogen_aug.integrations.segmentation`) trained
  from scratch per arm, starting at P(anomalous) = 0.5 (``--prior``, DRAEM's softmax head starts there too), so
  the tau mask is not pre-empted by the prior. Arms: ``perlin``, ``box_tau1.0`` / ``box_tau0.9`` (the bank read
  with ``boxes_only``: labelled by boxes as the diffusion generator's output), ``pixel_mask`` (exact masks),
  ``perlin+bank``; ``diffusion`` needs a bank made with a real backbone (``--diffusion-bank``).
- draem (about an hour on one core): `WeakDraem` at reduced size and width through `train_detector`, the same
  optimiser steps per arm: ``perlin`` (no bank, anomalib's recipe), ``box_tau1.0`` / ``box_tau0.9`` (bank labels
  "boxes"), ``pixel_mask``.

    python -m benchmarks.downstream                       # -> benchmarks/results/downstream.json
    python -m benchmarks.downstream --protocol draem      # -> benchmarks/results/downstream_draem.json
    python -m benchmarks.downstream --gpu-protocol        # print DRAEM / DeSTSeg commands (paper settings)
    python -m benchmarks.downstream --smoke-gpu-protocol  # run those commands at toy size on the CPU

Both write JSON after every run (``--resume`` keeps what is there: results per seed, mean and std, package
versions, git commit, machine) and print a markdown table. Modules: ``arms`` (the segmentation recipes and the
bank), ``evaluation`` (the test images), ``record`` (what the protocols share: the resumable record, the loop over
data sets and seeds, summary and table), ``cpu_protocol`` (segmentation), ``draem_protocol``, ``gpu_protocol``,
``__main__`` (the command line).
"""
