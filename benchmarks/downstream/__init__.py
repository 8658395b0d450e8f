"""Downstream quality on real data: does training on generated anomalies make a detector better?

CPU protocol (about half an hour on 2 CPU cores): supervised segmentation from generated anomalies, the
protocol of AnomalyDiffusion / DualAnoDiff / SeaS. For each data set (MVTec AD layout) and seed:

1. k = 3 support anomalies per defect type are drawn from the test split and REMOVED from the evaluation set;
2. a crop-and-paste bank (`CopyPasteGenerator`, exact masks) is written from them onto the normal train
   images;
3. a small U-Net (`anogen_aug.integrations.segmentation`) is trained from scratch per arm, then tested on the
   remaining real test images: image AUROC, pixel AUROC, pixel AP, F1-max, AUPRO.

Arms: ``perlin`` (no generated anomalies: anomalib's Perlin anomalies), ``box_tau1.0`` / ``box_tau0.9`` (the
bank labelled by boxes, weak supervision off / at the paper's tau), ``pixel_mask`` (the same bank with its
exact pixel masks), ``perlin+bank`` (both; bank labelled by boxes at tau 0.9). Every arm sees the same share
(one half) of anomalous training items. The ``diffusion`` arm (the paper's generator, box labels, tau 0.9)
needs a bank made with a real backbone: ``--arms diffusion --diffusion-bank 'banks/{category}/seed{seed}'``
(see benchmarks/README.md).

    python -m benchmarks.downstream --out benchmarks/results/downstream.json
    python -m benchmarks.downstream --gpu-protocol        # print DRAEM / DeSTSeg commands (paper settings)
    python -m benchmarks.downstream --smoke-gpu-protocol  # run those commands at toy size on the CPU

Writes JSON (results per seed, mean and std, package versions, git commit, machine) and prints a markdown
table. Modules: ``arms`` (the recipes and the bank), ``evaluation`` (the test images), ``cpu_protocol``,
``gpu_protocol``, ``__main__`` (the command line).
"""
