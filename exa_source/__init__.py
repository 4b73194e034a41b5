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

Importing the package changes no global state (loggers, environment, garbage collector).
"""

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
