/*
 * The audit trail: an append-only table (audit_trail, created by the application's migration
 * migrations/005_audit.sql) whose entries each carry the SHA-256 of the one before, so that a changed,
 * removed or reordered entry breaks the chain.
 *
 * An entry's hash is SHA-256 (core/sha256.c, libcrypto) over its canonical form: the line
 * "triage-audit-1", then one line per field, in the order of enum tr_audit_field, "name=" followed by
 * "null" for an SQL NULL or the value's length in bytes (decimal), ':' and the value itself, each
 * line ending in '\n'. Values are hashed as text (seq as its decimal digits). The length prefix makes
 * the form unambiguous whatever bytes a value holds.
 *
 * Entries are written by the store's writer thread, inside the transaction of the change they
 * record (core/lua/triage/store.lua, tx:audit): the INSERT reads the last entry's seq and hash in that
 * transaction and calls the SQL function triage_audit_hash, which tr_audit_register adds to the
 * writer's connection. Writers of all workers are serialized by SQLite's write lock, so each entry
 * links to the one committed just before it. On PostgreSQL the entry is appended by the SQL function
 * triage_audit_append, which computes the same hash; core/pg_schema.h says how the entries of several
 * nodes form one chain. The reviewer's commands read either store through a tr_audit_reader_t.
 */
#ifndef TR_AUDIT_H
#define TR_AUDIT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct sqlite3;

#define TR_AUDIT_TABLE "audit_trail"
/* prev_hash of the first entry. */
#define TR_AUDIT_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"

/* The hashed fields, in canonical order (the table's columns of the same names; hash excluded). */
enum tr_audit_field {
    TR_AUDIT_SEQ,
    TR_AUDIT_AT,
    TR_AUDIT_WHO,
    TR_AUDIT_ACTION,
    TR_AUDIT_RECORD_TABLE,
    TR_AUDIT_RECORD_ID,
    TR_AUDIT_ROUTE,
    TR_AUDIT_REQUEST_ID,
    TR_AUDIT_BEFORE,
    TR_AUDIT_AFTER,
    TR_AUDIT_REASON,
    TR_AUDIT_PREV_HASH,
    TR_AUDIT_FIELDS
};

/* An entry's fields as text, borrowed from the caller: value[i] NULL is SQL NULL. */
typedef struct tr_audit_entry_s {
    const char *value[TR_AUDIT_FIELDS];
    size_t len[TR_AUDIT_FIELDS];
} tr_audit_entry_t;

/* Every entry, in seq order: the columns of enum tr_audit_field, then hash (SQL for either store). */
#define TR_AUDIT_SELECT_ENTRIES                                                                                        \
    "SELECT seq, at, who, action, record_table, record_id, route, request_id, before, after, reason, prev_hash, "      \
    "hash FROM " TR_AUDIT_TABLE " ORDER BY seq"

/* The column names, in enum order. */
extern const char *const tr_audit_field_names[TR_AUDIT_FIELDS];

/* Write the canonical form of e into out (at most size bytes, no NUL added). Returns its full
 * length: when that is more than size, out holds a truncated form and the call can be repeated with
 * a buffer that large (as snprintf). */
size_t tr_audit_canonical(const tr_audit_entry_t *e, char *out, size_t size);

/* The entry's hash, as 64 lower-case hex digits and a NUL, at out. Aborts on out of memory. */
void tr_audit_hash(const tr_audit_entry_t *e, char out[65]);

/* Add the SQL function triage_audit_hash(seq, at, who, action, record_table, record_id, route,
 * request_id, before, after, reason, prev_hash) -> hex hash to the connection db.
 * Returns 0, or -1 (SQLite could not add it). */
int tr_audit_register(struct sqlite3 *db);

/*
 * Where verify and export read the trail from: its entries in seq order, from one consistent snapshot
 * (the server may be writing meanwhile). An implementation embeds this struct as its first member;
 * tr_audit_open (SQLite) and tr_audit_pg_open (core/audit_pg.h, PostgreSQL) make one.
 */
typedef struct tr_audit_reader_s tr_audit_reader_t;
struct tr_audit_reader_s {
    /* The next entry: 1 with e and *hash (the stored hash, NULL if SQL NULL) set, borrowed until the
     * next call; 0 after the last entry; -1 when it cannot be read (message in err). */
    int (*next)(tr_audit_reader_t *reader, tr_audit_entry_t *e, const char **hash, char *err, size_t err_size);
    /* The seq of the first entry whose stored hash is hash, or 0 if there is none (or on an error).
     * Called between two calls of next. */
    int64_t (*seq_of_hash)(tr_audit_reader_t *reader, const char *hash);
    /* Ends the snapshot and frees the reader. */
    void (*close)(tr_audit_reader_t *reader);
};

/* A reader of data_dir/triage.db, opened read-only, in one read transaction. Returns NULL with a
 * message in err when the database or its audit_trail table cannot be read. */
tr_audit_reader_t *tr_audit_open(const char *data_dir, char *err, size_t err_size);

/*
 * Check the whole chain read from reader (which the caller closes). Prints the outcome to out: the
 * number of entries and the last hash when intact, else the first bad entry by its sequence number and
 * what is wrong with it (a gap in the sequence, a reordering, a broken link, a hash mismatch). Returns
 * 0 intact, 1 broken, -1 when the chain cannot be read (message in err).
 */
int tr_audit_verify(tr_audit_reader_t *reader, FILE *out, char *err, size_t err_size);

/* Write every entry read from reader (which the caller closes), in sequence order, to out as JSON
 * lines (jsonl) or CSV with a header (csv). Returns the number of entries, or -1 with a message in err
 * (an unknown format: nothing is read). */
long tr_audit_export(tr_audit_reader_t *reader, const char *format, FILE *out, char *err, size_t err_size);

#endif
