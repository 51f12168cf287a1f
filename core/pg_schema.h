/* The core's SQL on PostgreSQL, run by the migration runner (pg_migrate.h) at every start. */
#ifndef TR_PG_SCHEMA_H
#define TR_PG_SCHEMA_H

extern const char tr_pg_core_sql[];

#endif
