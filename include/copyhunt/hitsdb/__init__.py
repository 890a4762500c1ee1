"""The hits database: customers, their images and licences, found uses ("hits"), and daily digests.

``models`` declares the tables and ``migrations/`` (Alembic) makes them: ``store.create_schema``
runs ``upgrade head``. ``store`` loads a run's priced hits (an idempotent upsert), ``digest``
e-mails each customer the hits that were new on a run date, ``workflow`` is what the customer
inbox reads and writes (always scoped to one customer), ``tokens`` the inbox's sign-in tokens and
sessions (hashes only), and ``report`` the per-run figures the data team sees in Airflow.
Everything works on SQLite (the default, one file) and PostgreSQL (production); the dialect is
chosen by the URL in ``Settings.database_url``.
"""
