"""The anomaly bank on disk: a resumable, crash-safe writer and a torch `Dataset` reader.

One module per concept: `manifest` (the layout, append-only ``manifest.jsonl``, ``bank.json``, the writer's lock),
`records` (the record fields and their checks: paths stay inside the bank), `writer` (`write_bank`), `reader`
(`AnomalyBank`, `BankSample`, `AnomalyBank.open`), `merge` (`merge_banks`), `verify` (`verify_bank`) and
`export` (Hugging Face ``datasets`` and the Hub). See `manifest` for the folder layout and record fields.
"""

from .manifest import BANK_INFO, FORMAT_VERSION, MANIFEST, read_manifest, resize_source
from .merge import merge_banks
from .reader import AnomalyBank, BankSample
from .verify import VerifyReport, verify_bank
from .writer import write_bank

__all__ = [
    "BANK_INFO",
    "FORMAT_VERSION",
    "MANIFEST",
    "AnomalyBank",
    "BankSample",
    "VerifyReport",
    "merge_banks",
    "read_manifest",
    "resize_source",
    "verify_bank",
    "write_bank",
]
