"""The hits database: customers, their images and licences, found uses ("hits"), and daily digests.

``models`` declares the tables, ``store`` loads a run's priced hits into them (an idempotent
upsert), and ``digest`` e-mails each customer the hits that were new on a run date.
Everything works on SQLite (the default, one file) and PostgreSQL (production); the dialect is
chosen by the URL in ``Settings.database_url``.
"""
