"""Airflow DAG ``exa_websets``: load Exa Websets imports into DuckDB or a warehouse with dlt.

Drop this file into Airflow's ``dags/`` folder (the ``exa-source`` package must be installed
on the DAG processor and the workers). Configuration and credentials are in the DAG's
``doc_md`` (:mod:`exa_source.airflow.dag`) and the README, *Schedule it with Airflow*.

A second deployment of the same load, with its own state, Variables and Asset, is one more
file with another DAG id::

    from exa_source.airflow.dag import exa_websets_dag

    exa_websets_dag("exa_websets_eu", conn_id="exa_eu", duckdb_path="/data/exa_eu.duckdb")

``EXA_WEBSETS_DAG_ID`` renames this one (e.g. a dev and a prod Airflow on one host).
"""

from __future__ import annotations

import os

from exa_source.airflow.dag import DEFAULT_DAG_ID, exa_websets_dag

exa_websets = exa_websets_dag(os.environ.get("EXA_WEBSETS_DAG_ID", "").strip() or DEFAULT_DAG_ID)
