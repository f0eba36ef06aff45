-- One PostgreSQL for the stack, a database per store (docker-compose.yml mounts this into
-- /docker-entrypoint-initdb.d; infra/local/stack.sh creates the same four).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE optuna;
CREATE DATABASE results;
