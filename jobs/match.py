"""Entry point of the match job for spark-submit; the job is copyhunt.jobs.match (main, transform).

    spark-submit --master 'local[*]' jobs/match.py --fingerprints F --index-dir I --query-blobs Q --ref-blobs R --out M

The pipeline submits the package's copy itself (copyhunt.sparkjob), so this file is for people.
"""

import sys

from copyhunt.jobs.match import main, transform  # noqa: F401  (transform: the job's pure part)

if __name__ == "__main__":
    sys.exit(main())
