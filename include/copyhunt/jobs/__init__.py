"""The Spark jobs, one module each with ``main(argv)`` and a pure ``transform``.

They live in the package so that an installed copyhunt finds them (``copyhunt.sparkjob``
submits the module's file); ``jobs/<name>.py`` at the top of the checkout are their entry points
for a hand-typed ``spark-submit``.
"""
