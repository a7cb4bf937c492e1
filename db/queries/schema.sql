-- The schema itself, as the catalog describes it.

-- name: SchemaInvalidIndexes :many
-- Indexes of the service's schema that the planner may not use: left by a
-- CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY that did not finish.
SELECT c.relname::text AS index_name
FROM pg_catalog.pg_index AS i
JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND NOT i.indisvalid
ORDER BY c.relname;
