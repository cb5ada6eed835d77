"""Distribution-skew advisor for MPP warehouses (GaussDB(DWS), openGauss, Greenplum, PostgreSQL).

Which data node each row of a hash-distributed table lands on, per candidate key,
computed inside the database (sql.py) or from a parquet/csv file (offline.py) with the
same hash functions (hashing.py), and a verdict plus DDL by the DWS rules (advise.py).
"""
