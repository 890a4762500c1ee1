-- The hits database lives beside Airflow's metadata database on the same server.
CREATE DATABASE hits OWNER copyhunt;
