"""`AnoGenDataModule`: any anomalib image datamodule, with bank anomalies mixed into its TRAIN set.

anomalib puts every anomalous image in the test split and computes ``gt_label`` before augmentations, so a
transform alone cannot add labelled anomalies to training. The wrapper replaces the train dataset by an
`AnoGenDataset`, which, with probability ``p``, returns a sample of an anomaly bank instead of the normal image
it was asked for, labelled from its mask (``gt_label = gt_mask.any()``). Validation and test sets are the
inner datamodule's, untouched.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from anomalib import TaskType
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import LabelName, read_image, read_mask
from PIL import Image as PILImage
from torch.utils.data import Dataset, get_worker_info
from torchvision.transforms.v2 import functional as TF
from torchvision.tv_tensors import Image, Mask

from anogen_aug.bank import AnomalyBank
from anogen_aug.checks import check_bool, check_probability

from .batch import AnoGenImageBatch, AnoGenImageItem
from .supervision import check_consumes_anomalies

logger = logging.getLogger(__name__)


class AnoGenDataset(Dataset):
    """Train set of normal images where each item is, with probability ``p``, a bank anomaly instead.

    Every item is an `AnoGenImageItem` with every field filled:

    - normal item: the inner dataset's image, ``gt_mask`` zeros, ``box_mask`` zeros,
      ``source_image`` = the image, ``is_generated`` False;
    - generated item: a random bank sample resized to the size of the normal image it replaces;
      ``gt_mask`` = the sample's pixel mask when it is exact (crop-and-paste), else its BOX mask (diffusion:
      the box is the label, as in the paper); ``box_mask`` = the boxes; ``source_image`` = the clean normal
      image the sample was made from; ``is_generated`` True.

    ``gt_label = gt_mask.any()`` is computed after the augmentations, which are applied jointly to the image,
    ``gt_mask``, ``box_mask`` and ``source_image`` (as `tv_tensors` Image / Mask, so geometric transforms stay
    aligned and masks use nearest interpolation).

    Args:
        dataset: The inner anomalib train dataset (its ``samples`` table is read; its images are loaded here).
        bank: An `AnomalyBank` (``bank[i] -> BankSample``, ``bank.load_source(i)``).
        p: Probability that an item is a bank sample.
        seed: None draws from torch's global RNG (seeded per DataLoader worker by PyTorch / Lightning). An
            int seeds the draws; with DataLoader workers they also depend on the worker seeds, which come from
            torch's global RNG (``lightning.seed_everything``), so epochs differ and runs repeat.
        augmentations: A torchvision v2 transform (the datamodule sets it, with the model's resize appended).
    """

    def __init__(self, dataset, bank, *, p: float = 0.5, seed: int | None = None, augmentations=None) -> None:
        super().__init__()
        self.p = check_probability(p, "p")
        if self.p > 0 and len(bank) == 0:
            raise ValueError("`bank` has no samples, but `p` > 0 asks for generated items")
        self.dataset = dataset
        self.bank = bank
        self.seed = seed
        self.augmentations = augmentations
        self._generator: torch.Generator | None = None
        self._key: int | None = None

    # anomalib reads these from its datasets (workspace names, task checks, collation)
    @property
    def samples(self):
        return self.dataset.samples

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def category(self) -> str | None:
        return self.dataset.category

    @property
    def task(self) -> TaskType:
        return TaskType.SEGMENTATION  # every item has a mask

    @property
    def collate_fn(self):
        return AnoGenImageBatch.collate

    def __len__(self) -> int:
        return len(self.dataset.samples)

    def _draw_generator(self) -> torch.Generator | None:
        """The generator for this process. In a DataLoader worker it is re-seeded from ``seed`` and the
        worker's seed, which PyTorch draws anew for every epoch from the main process's (seeded) RNG."""
        if self.seed is None:
            return None
        info = get_worker_info()
        key = 0 if info is None else info.seed + 1
        if self._generator is None or self._key != key:
            self._generator = torch.Generator().manual_seed((self.seed * 1_000_003 + key) % 2**63)
            self._key = key
        return self._generator

    def __getitem__(self, index: int) -> AnoGenImageItem:
        generator = self._draw_generator()
        row = self.dataset.samples.iloc[index]
        if self.p > 0 and torch.rand((), generator=generator).item() < self.p:
            choice = int(torch.randint(len(self.bank), (), generator=generator))
            image, gt_mask, box_mask, source, image_path, mask_path = self._bank_item(choice, row)
            is_generated = True
        else:
            image, gt_mask, image_path, mask_path = self._normal_item(row)
            box_mask, source, is_generated = Mask(torch.zeros_like(gt_mask)), Image(image.clone()), False
        if self.augmentations is not None:
            image, gt_mask, box_mask, source = self.augmentations(image, gt_mask, box_mask, source)
        gt_mask = gt_mask != 0  # (1, H, W) bool
        return AnoGenImageItem(
            image=image,
            gt_mask=gt_mask,
            gt_label=gt_mask.any(),
            image_path=image_path,
            mask_path=mask_path,
            box_mask=Mask((box_mask != 0).float()),
            source_image=source,
            is_generated=torch.tensor(is_generated),
        )

    @staticmethod
    def _normal_item(row):
        """The inner item without augmentations: ``(image, gt_mask (1, H, W) uint8, paths)``."""
        image = read_image(row.image_path, as_tensor=True)  # Image (3, H, W) float [0, 1]
        mask_path = str(getattr(row, "mask_path", "") or "")
        if row.label_index == LabelName.ABNORMAL and mask_path:
            gt_mask = Mask(read_mask(mask_path, as_tensor=True).reshape(1, *image.shape[-2:]))
        else:
            gt_mask = Mask(torch.zeros(1, *image.shape[-2:], dtype=torch.uint8))
        return image, gt_mask, str(row.image_path), mask_path

    def _bank_item(self, choice: int, row):
        """Bank sample ``choice`` at the size of the normal image in ``row`` (read from its header)."""
        sample = self.bank[choice]
        with PILImage.open(row.image_path) as handle:
            width, height = handle.size
        size = [height, width]
        image = TF.resize(Image(sample.image), size, antialias=True)
        source = TF.resize(Image(self.bank.load_source(choice)), size, antialias=True)
        label = sample.mask if sample.mask_exact else sample.box_mask
        gt_mask = TF.resize(Mask((label != 0).to(torch.uint8)), size)  # nearest for masks
        box_mask = TF.resize(Mask((sample.box_mask != 0).to(torch.uint8)), size)
        file = getattr(self.bank, "file", None)  # an AnomalyBank resolves its files inside its folder
        image_path, mask_path = (
            str(file(choice, f)) if file else sample.record[f] for f in ("image", "mask")
        )
        return image, gt_mask, box_mask, source, image_path, mask_path


class AnoGenDataModule(AnomalibDataModule):
    """Wrap an anomalib image datamodule (``Folder``, ``MVTecAD``, ...) to train on bank anomalies too.

    Batch sizes, workers and augmentations are copied from ``datamodule``. ``setup`` sets the inner
    datamodule up, wraps ONLY its train set in an `AnoGenDataset`, takes its val / test sets as they are and
    appends the model's resize to the augmentations (anomalib's ``_update_augmentations``), so anomalies go in
    before the resize. Train batches are `AnoGenImageBatch` (fields ``box_mask``, ``source_image``,
    ``is_generated``), consumed by `WeakDraem` and `DeSTSeg`; other anomalib models see ordinary
    ``image`` / ``gt_mask`` / ``gt_label`` fields (``Supersimplenet(supervised=True)`` learns from them).

    One-class models (PatchCore, PaDiM, anomalib's Draem, ...) learn every train image as normal: fed
    generated anomalies, they learn the defects as normal. So ``setup("fit")`` looks at the model being
    trained (``trainer.lightning_module``) and, when ``p > 0``, refuses with a ``ValueError`` any model that
    does not consume anomalies (`consumes_anomalies`), unless ``allow_one_class`` is True.

    Every argument is typed, so anomalib's CLI builds this from a config file (``anomalib fit -c``), the
    bank given by its path (see ``examples/anomalib/``).

    Args:
        datamodule: The inner anomalib datamodule.
        bank: An `AnomalyBank` or the path of a bank folder (opened by `AnomalyBank.open`); None only with
            ``p=0`` (a baseline without generated anomalies: every train item is the inner one).
        p: Probability that a train item is a bank sample (0.5 for the DRAEM recipe, 1.0 for DeSTSeg).
        category, defect_type: Use only these records of the bank (`AnomalyBank.open`'s filters).
        boxes_only: Label every bank sample by its box, its pixel mask hidden (`AnomalyBank`'s ``boxes_only``).
        seed: Seed of the bank draws (None: torch's global RNG, as seeded by Lightning and the workers).
        allow_one_class: Let a one-class model train on the generated anomalies (it learns them as normal).
        exclude_images: Image files removed from the val and test sets, e.g. the support anomalies the bank
            was made from (`anogen_aug.mvtec.split_support`), so the detector is not tested on them.
    """

    def __init__(
        self,
        datamodule: AnomalibDataModule,
        bank: AnomalyBank | str | os.PathLike | None,
        *,
        p: float = 0.5,
        category: str | None = None,
        defect_type: str | None = None,
        boxes_only: bool = False,
        seed: int | None = None,
        allow_one_class: bool = False,
        exclude_images: list[str] | None = None,
    ) -> None:
        if not isinstance(datamodule, AnomalibDataModule):
            raise TypeError(
                f"`datamodule` must be an anomalib AnomalibDataModule, got {type(datamodule).__name__}"
            )
        super().__init__(
            train_batch_size=datamodule.train_batch_size,
            eval_batch_size=datamodule.eval_batch_size,
            num_workers=datamodule.num_workers,
            train_augmentations=datamodule.train_augmentations,
            val_augmentations=datamodule.val_augmentations,
            test_augmentations=datamodule.test_augmentations,
            seed=datamodule.seed,
        )
        self.datamodule = datamodule
        self.p = check_probability(p, "p")
        if bank is None and self.p > 0:
            raise ValueError(f"`bank` is None, but p={p} > 0 asks for bank samples: give a bank or p=0")
        self.bank = (
            None
            if bank is None
            else AnomalyBank.open(
                bank,
                category=category,
                defect_type=defect_type,
                boxes_only=check_bool(boxes_only, "boxes_only"),
            )
        )
        self.bank_seed = seed
        self.allow_one_class = check_bool(allow_one_class, "allow_one_class")
        if exclude_images is not None and not isinstance(exclude_images, (list, tuple)):
            raise ValueError(
                f"`exclude_images` must be a list of image paths or None, got {exclude_images!r}"
            )
        self.exclude_images = sorted({_resolved(path) for path in exclude_images or ()})
        self.excluded_images: list[str] = []  # those found in the val / test sets and removed
        self._excluding_done = False
        if self.p > 0 and len(self.bank) == 0:
            raise ValueError(
                f"the bank has no samples (category={category!r}, defect_type={defect_type!r}), but p={p} > 0"
            )

    @property
    def name(self) -> str:
        return self.datamodule.name

    @property
    def category(self) -> str:
        return self.datamodule.category

    @category.setter
    def category(self, category: str) -> None:
        self.datamodule.category = category

    def prepare_data(self) -> None:
        self.datamodule.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """Set the inner datamodule up, wrap its train set, then append the model's resize.

        Raises:
            ValueError: ``stage`` is "fit", ``p > 0`` and the trainer's model is a one-class model (see the
                class docstring), unless ``allow_one_class``.
        """
        if stage == "fit" and self.trainer is not None:
            model = self.trainer.lightning_module
            check_consumes_anomalies(model, p=self.p, allow_one_class=self.allow_one_class)
        self._setup(stage)
        self._update_augmentations()

    def _setup(self, _stage: str | None = None) -> None:
        self.datamodule.setup(_stage)
        inner_train = getattr(self.datamodule, "train_data", None)
        if inner_train is not None:
            current = getattr(self, "train_data", None)
            if not isinstance(current, AnoGenDataset) or current.dataset is not inner_train:
                self.train_data = AnoGenDataset(inner_train, self.bank, p=self.p, seed=self.bank_seed)
        for subset in ("val_data", "test_data"):
            if hasattr(self.datamodule, subset):
                setattr(self, subset, getattr(self.datamodule, subset))
        if self.exclude_images:
            self._exclude()

    def _exclude(self) -> None:
        """Drop `exclude_images` from the val and test sets (in place: they are the inner datamodule's, set up
        once); ``excluded_images`` lists those found, and a warning names how many were in neither set."""
        excluded = set(self.excluded_images)
        for subset in ("val_data", "test_data"):
            dataset = getattr(self, subset, None)
            if dataset is None or dataset.samples.empty:
                continue
            paths = dataset.samples.image_path.map(_resolved)
            drop = paths.isin(self.exclude_images).to_numpy()
            excluded |= set(paths[drop])
            if drop.any():
                dataset.samples = dataset.samples[~drop].reset_index(drop=True)
        self.excluded_images = sorted(excluded)
        missing = len(self.exclude_images) - len(excluded)
        if missing and not self._excluding_done:
            logger.warning(
                "%d of %d `exclude_images` are in no val or test set", missing, len(self.exclude_images)
            )
        self._excluding_done = True


def _resolved(path: str | os.PathLike) -> str:
    return str(Path(path).resolve())
