"""exa-source: a dlt source that loads the Exa Websets API into a warehouse.

The source and its resources are declared in :mod:`exa_source.source`; HTTP and paging live in
:mod:`exa_source.helpers`, the table's columns in :mod:`exa_source.schema`, constants in
:mod:`exa_source.settings`, the pipeline runner in :mod:`exa_source.pipeline`, the CLI in
:mod:`exa_source.cli` and the offline emulator of the API in :mod:`exa_source.emulator`.
"""

from exa_source.helpers import (
    ExaAPIError,
    ExaAuthError,
    ExaConfigError,
    ExaCreditsError,
    ExaError,
    ExaPaginationError,
)
from exa_source.schema import ExaDataError
from exa_source.source import exa_websets_source

__all__ = [
    "ExaAPIError",
    "ExaAuthError",
    "ExaConfigError",
    "ExaCreditsError",
    "ExaDataError",
    "ExaError",
    "ExaPaginationError",
    "exa_websets_source",
]
