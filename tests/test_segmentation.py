"""The segmentation integration: a U-Net trained in a plain loop on AnoGenAugment anomalies; its metrics."""

from __future__ import annotations

import pytest
import torch

from anogen_aug.bank import write_bank
from anogen_aug.boxes import BoxSampler
from anogen_aug.images import save_png
from anogen_aug.paste import CopyPasteGenerator, PasteConfig
from anogen_aug.transforms import AnoGenAugment

pytest.importorskip("anomalib")
segmentation = pytest.importorskip("anogen_aug.integrations.segmentation")

SIZE = 32


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions run faster on one thread, above all on a busy shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _normal(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (0.3 + 0.05 * torch.rand(1, SIZE, SIZE, generator=generator)).expand(3, -1, -1).clone()


@pytest.fixture(scope="module")
def square_bank(tmp_path_factory):
    """A crop-and-paste bank of bright squares (exact masks) on dark noisy 32 px images."""
    root = tmp_path_factory.mktemp("squares")
    paths = [save_png(_normal(i), root / "normal" / f"{i}.png") for i in range(8)]
    support = _normal(100)
    support[:, 10:20, 12:22] = 1.0
    support_mask = torch.zeros(1, SIZE, SIZE)
    support_mask[:, 10:20, 12:22] = 1.0
    config = PasteConfig(
        rotation_range=(0.0, 0.0), brightness_range=(1.0, 1.0), blend="hard", scale_range=(0.5, 0.6)
    )
    generator = CopyPasteGenerator([support], [support_mask], config=config)
    sampler = BoxSampler(width_range=(0.3, 0.4), height_range=(0.3, 0.4))
    bank = write_bank(
        generator, paths, root / "bank", category="toy", defect_type="square", box_sampler=sampler,
        boxes_per_image=1, samples_per_box=2, size=SIZE, progress=False,
    )  # fmt: skip
    return bank, paths


def _small_unet():
    return segmentation.UNet(base_channels=4, depth=3)


def test_box_labels_carry_the_box_and_pixel_labels_the_mask(square_bank):
    bank, paths = square_bank
    seen = {"box_mask": 0, "mask": 0}
    for mask_from in seen:
        augment = AnoGenAugment(bank, p=1.0, mask_from=mask_from, generator=torch.Generator().manual_seed(0))
        data = segmentation.SyntheticAnomalySet(paths, augment=augment)
        for i in range(len(data)):
            item = data[i]
            assert item["gt_mask"].any()
            bright = (item["image"][0] > 0.9).float()[None]  # the pasted square, smaller than its box
            if mask_from == "box_mask":  # the target is the box, and all of it is weakly supervised
                assert torch.equal(item["box_mask"], item["gt_mask"])
                assert (item["gt_mask"] >= bright).all() and item["gt_mask"].sum() > bright.sum()
            else:  # the exact square, fully supervised
                assert not item["box_mask"].any()
                assert torch.equal(item["gt_mask"], bright)
            seen[mask_from] += 1
    assert seen == {"box_mask": 8, "mask": 8}


def test_weak_supervision_drops_confident_normal_pixels_inside_the_box():
    logits = torch.full((1, 1, 8, 8), 0.0)
    logits[..., 2:4, 2:6] = -4.0  # P(normal) = 0.982 >= 0.9: dropped at tau 0.9, kept at tau 1.0
    logits.requires_grad_(True)
    box = torch.zeros(1, 1, 8, 8)
    box[..., 2:6, 2:6] = 1
    grads = {}
    for tau in (0.9, 1.0):
        criterion = segmentation.segmentation_criterion(tau=tau, loss="bce")
        (grad,) = torch.autograd.grad(criterion(logits, box, box, 1 - torch.sigmoid(logits)), logits)
        grads[tau] = grad
    dropped = torch.zeros_like(box, dtype=torch.bool)
    dropped[..., 2:4, 2:6] = True
    assert (grads[0.9][dropped] == 0).all()
    assert (grads[1.0][dropped] < 0).all()  # pushed towards "anomalous", the box's label
    assert torch.equal(grads[0.9][~dropped], grads[1.0][~dropped])


def test_training_loop_learns_bright_squares(square_bank):
    bank, paths = square_bank
    augment = AnoGenAugment(bank, p=0.5, mask_from="mask")
    data = segmentation.SyntheticAnomalySet(paths, augment=augment)
    run = segmentation.train_segmenter(
        data, model=_small_unet(), epochs=20, lr=1e-2, batch_size=4, tau=1.0,
        generator=torch.Generator().manual_seed(0), progress=False,
    )  # fmt: skip
    first, last = sum(run.losses[:4]) / 4, sum(run.losses[-4:]) / 4
    assert len(run.losses) == 40 and last < 0.5 * first
    assert not run.model.training
    # The trained model finds squares pasted into unseen normal images.
    test_augment = AnoGenAugment(bank, p=1.0, mask_from="mask", match_source=False)
    test = segmentation.SyntheticAnomalySet([_normal(200 + i) for i in range(6)], augment=test_augment)
    items = [test[i] for i in range(len(test))] + [
        {"image": _normal(300 + i), "gt_mask": torch.zeros(1, SIZE, SIZE)} for i in range(6)
    ]
    metrics = segmentation.evaluate_segmenter(run.model, items)
    assert metrics.pixel_auroc > 0.9 and metrics.image_auroc > 0.9


def test_same_generator_same_run_with_perlin(square_bank):
    bank, paths = square_bank
    runs = []
    for _ in range(2):
        augment = AnoGenAugment(bank, p=0.5, mask_from="box_mask")
        data = segmentation.SyntheticAnomalySet(paths[:4], augment=augment, perlin_p=0.5)
        run = segmentation.train_segmenter(
            data, epochs=1, batch_size=2, generator=torch.Generator().manual_seed(3), progress=False
        )
        runs.append(run)
    assert runs[0].losses == runs[1].losses
    for a, b in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values()):
        assert torch.equal(a, b)


def test_metrics_of_a_perfect_and_a_random_predictor():
    generator = torch.Generator().manual_seed(0)
    gt_mask = torch.zeros(6, 1, SIZE, SIZE)
    gt_mask[0, :, 3:9, 4:12] = 1
    gt_mask[1, :, 20:30, 2:5] = 1
    gt_mask[2, :, 10:12, 10:30] = 1
    perfect = segmentation.score_maps(gt_mask * 0.8 + 0.1, gt_mask)
    for name, value in perfect.to_dict().items():
        assert value == pytest.approx(1.0, abs=1e-6), name
    noisy = segmentation.score_maps(torch.rand(6, 1, SIZE, SIZE, generator=generator), gt_mask)
    for name, value in noisy.to_dict().items():
        assert 0.0 <= value <= 1.0 and value < 0.95, name
    # The same through a model: one that reads the defect off the image's first channel.
    items = [{"image": torch.cat([m, torch.zeros(2, SIZE, SIZE)]), "gt_mask": m} for m in gt_mask]
    model = torch.nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, 0] = 20.0
        model.bias.fill_(-10.0)
    through_model = segmentation.evaluate_segmenter(model, items).to_dict()
    assert through_model == pytest.approx(perfect.to_dict(), abs=1e-6)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="loss"):
        segmentation.segmentation_criterion(loss="dice")
    with pytest.raises(ValueError, match="tau"):
        segmentation.segmentation_criterion(tau=0.0)
    with pytest.raises(ValueError, match="image_score"):
        segmentation.image_scores(torch.rand(2, 1, 4, 4), image_score="mean")
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        segmentation.score_maps(torch.rand(2, 1, 4, 4), torch.zeros(2, 1, 4, 8))
    with pytest.raises(ValueError, match="normal and anomalous"):
        segmentation.score_maps(torch.rand(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="divisible by 16"):
        segmentation.UNet()(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="prior"):
        segmentation.UNet(prior=1.0)


def test_unet_starts_at_its_prior_and_keeps_the_size():
    model = segmentation.UNet(base_channels=4, depth=3, prior=0.2).eval()
    with torch.no_grad():
        probability = torch.sigmoid(model(torch.rand(2, 3, 16, 24)))
    assert probability.shape == (2, 1, 16, 24)
    assert probability.mean().item() == pytest.approx(0.2, abs=0.1)
