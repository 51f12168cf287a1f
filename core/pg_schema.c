#include "pg_schema.h"

const char tr_pg_core_sql[] = "SELECT 1";
