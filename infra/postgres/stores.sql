-- The four stores of bru-lab, each its own database owned by its own login role, so that a
-- leaked worker password opens the Optuna and results stores only, never MLflow's or
-- Prefect's. Run by psql as the cluster's superuser: docker-compose.yml mounts it into
-- /docker-entrypoint-initdb.d (first start), infra/local/stack.sh runs it on every `up`.
-- It is idempotent: a role is created or its password reset to the current secret, a
-- database created or handed to its role.
--
-- The passwords come from the environment (psql's \getenv), never from a command line:
--   BRU_PG_MLFLOW_PASSWORD   role bru_mlflow: databases mlflow and mlflow_auth (the MLflow server)
--   BRU_PG_PREFECT_PASSWORD  role bru_prefect: database prefect (the Prefect server)
--   BRU_PG_OPTUNA_PASSWORD   role bru_optuna: database optuna (workers, bru search)
--   BRU_PG_RESULTS_PASSWORD  role bru_results: database results (workers, bru results)
\set ON_ERROR_STOP on
\set QUIET on

\getenv mlflow_password BRU_PG_MLFLOW_PASSWORD
\getenv prefect_password BRU_PG_PREFECT_PASSWORD
\getenv optuna_password BRU_PG_OPTUNA_PASSWORD
\getenv results_password BRU_PG_RESULTS_PASSWORD

-- A missing or empty variable: stop with its name before anything is created.
\if :{?mlflow_password} \else \set mlflow_password '' \endif
\if :{?prefect_password} \else \set prefect_password '' \endif
\if :{?optuna_password} \else \set optuna_password '' \endif
\if :{?results_password} \else \set results_password '' \endif
SELECT count(*) > 0 AS any_missing, string_agg(name, ', ') AS missing
FROM (VALUES ('BRU_PG_MLFLOW_PASSWORD', :'mlflow_password'), ('BRU_PG_PREFECT_PASSWORD', :'prefect_password'),
             ('BRU_PG_OPTUNA_PASSWORD', :'optuna_password'), ('BRU_PG_RESULTS_PASSWORD', :'results_password')) AS t(name, value)
WHERE value = '' \gset
\if :any_missing
  \warn 'error: not set:' :missing '(generate each, e.g. openssl rand -hex 24)'
  DO $$ BEGIN RAISE EXCEPTION 'stores.sql stopped before creating anything'; END $$;
\endif

SET password_encryption = 'scram-sha-256';

-- role, password
SELECT format('CREATE ROLE %I LOGIN', r) FROM (VALUES ('bru_mlflow'), ('bru_prefect'), ('bru_optuna'), ('bru_results')) AS t(r)
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec
ALTER ROLE bru_mlflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'mlflow_password';
ALTER ROLE bru_prefect LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'prefect_password';
ALTER ROLE bru_optuna LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'optuna_password';
ALTER ROLE bru_results LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'results_password';

-- database, owner; nobody else may connect (PUBLIC has CONNECT by default)
SELECT format('CREATE DATABASE %I OWNER %I', d, o)
FROM (VALUES ('mlflow', 'bru_mlflow'), ('mlflow_auth', 'bru_mlflow'), ('prefect', 'bru_prefect'),
             ('optuna', 'bru_optuna'), ('results', 'bru_results')) AS t(d, o)
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = d) \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', d, o), format('REVOKE ALL ON DATABASE %I FROM PUBLIC', d)
FROM (VALUES ('mlflow', 'bru_mlflow'), ('mlflow_auth', 'bru_mlflow'), ('prefect', 'bru_prefect'),
             ('optuna', 'bru_optuna'), ('results', 'bru_results')) AS t(d, o) \gexec
