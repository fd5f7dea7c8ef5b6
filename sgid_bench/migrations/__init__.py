"""Alembic migrations of the results store (``sgid_bench.store`` runs them on open).

A schema change is a new file in ``versions/`` (``alembic revision`` with
``script_location`` pointing here), the model change in ``store.py``, and ``store.HEAD``
set to the new revision.
"""
