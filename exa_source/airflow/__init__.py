"""Airflow integration: the ``exa`` connection type, the DAG factory and their helpers.

* :mod:`exa_source.airflow.provider`: ``get_provider_info``, the ``apache_airflow_provider`` entry
  point that registers the connection type ``exa`` with Airflow;
* :mod:`exa_source.airflow.hooks`: :class:`~exa_source.airflow.hooks.ExaHook`, the key and base
  URL of an ``exa`` Connection, its form labels and ``test_connection``;
* :mod:`exa_source.airflow.dlt_config`: hands dlt the Airflow Variable ``dlt_secrets_toml`` read
  once per task, instead of dlt's own Airflow provider (one Variable request per setting);
* :mod:`exa_source.airflow.dag`: :func:`~exa_source.airflow.dag.exa_websets_dag`, the DAG
  factory ``dags/exa_websets.py`` calls.

Importing any of these imports neither dlt nor Airflow's task machinery beyond ``airflow.sdk``:
a DAG file that calls the factory parses in the time of ``import airflow.sdk``.
"""
