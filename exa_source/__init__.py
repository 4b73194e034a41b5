"""exa-source: a dlt source that loads the Exa Websets API into a warehouse.

Where each thing lives:

* :mod:`exa_source.source`: the dlt source ``exa`` and its resource ``imports``;
* :mod:`exa_source.sync`: what a run writes, decided by comparing the scan with the destination
  table (exact change capture and deletion marks), and the scan's state;
* :mod:`exa_source.client`: HTTP and paging (dlt's REST client, paginator, retrying session);
* :mod:`exa_source.schema`: the table's declared columns and the page-to-Arrow conversion;
* :mod:`exa_source.config`: where the API key comes from, and the checks every option passes;
* :mod:`exa_source.exceptions`: the errors raised on purpose;
* :mod:`exa_source.pipeline`: building the pipeline and running one load (CLI and DAG);
* :mod:`exa_source.warehouse`: BI views, data dictionary, reports;
* :mod:`exa_source.dlt_workarounds`: fixes for dlt behaviours, with the versions that need them;
* :mod:`exa_source.settings`: constants; :mod:`exa_source.cli`: the ``exa-source`` command;
* :mod:`exa_source.emulator`: the offline emulator of the API.

Importing the package changes no global state (loggers, environment, garbage collector), and
imports neither dlt nor pyarrow: :func:`exa_websets_source` is imported from
:mod:`exa_source.source` on first access (PEP 562), so ``exa-source --help`` stays immediate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exa_source.exceptions import (
    ExaAPIError,
    ExaAuthError,
    ExaConfigError,
    ExaCreditsError,
    ExaDataError,
    ExaDestinationError,
    ExaError,
    ExaPaginationError,
)

if TYPE_CHECKING:
    from exa_source.source import exa_websets_source

__version__ = "0.2.0"

__all__ = [
    "ExaAPIError",
    "ExaAuthError",
    "ExaConfigError",
    "ExaCreditsError",
    "ExaDataError",
    "ExaDestinationError",
    "ExaError",
    "ExaPaginationError",
    "__version__",
    "exa_websets_source",
]


def __getattr__(name: str) -> Any:
    """Import :func:`exa_websets_source` (and with it dlt) on first access (PEP 562).

    Raises:
        AttributeError: ``name`` is not an attribute of the package.
    """
    if name == "exa_websets_source":
        from exa_source.source import exa_websets_source

        globals()[name] = exa_websets_source
        return exa_websets_source
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
