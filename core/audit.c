/*
 * The audit trail's hash chain: canonical form and hash, the SQL function the writer uses, and the
 * reviewer's side (verify, export). See audit.h.
 */
#include "audit.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

const char *const tr_audit_field_names[TR_AUDIT_FIELDS] = {
    "seq",   "at",         "who",    "action", "record_table", "record_id",
    "route", "request_id", "before", "after",  "reason",       "prev_hash",
};

#define CANONICAL_HEADER "triage-audit-1\n"

/* Append data to out if it fits; the length counts on regardless (see tr_audit_canonical). */
static size_t put(char *out, size_t size, size_t at, const char *data, size_t len)
{
    if (at < size)
        memcpy(out + at, data, at + len <= size ? len : size - at);
    return at + len;
}

size_t tr_audit_canonical(const tr_audit_entry_t *e, char *out, size_t size)
{
    size_t at = put(out, size, 0, CANONICAL_HEADER, sizeof(CANONICAL_HEADER) - 1);
    for (int i = 0; i < TR_AUDIT_FIELDS; i++) {
        const char *name = tr_audit_field_names[i];
        char prefix[64];
        int n = e->value[i] == NULL ? snprintf(prefix, sizeof(prefix), "%s=null", name)
                                    : snprintf(prefix, sizeof(prefix), "%s=%zu:", name, e->len[i]);
        at = put(out, size, at, prefix, (size_t)n);
        if (e->value[i] != NULL)
            at = put(out, size, at, e->value[i], e->len[i]);
        at = put(out, size, at, "\n", 1);
    }
    return at;
}

void tr_audit_hash(const tr_audit_entry_t *e, char out[65])
{
    char small[2048];
    size_t n = tr_audit_canonical(e, small, sizeof(small));
    if (n <= sizeof(small)) {
        tr_sha256_hex(small, n, out);
        return;
    }
    /* A large before/after value: the writer thread's (or the command's) own memory, not the loop's. */
    char *big = malloc(n);
    if (big == NULL)
        abort();
    tr_audit_canonical(e, big, n);
    tr_sha256_hex(big, n, out);
    free(big);
}

/* Fill e from SQL values (or columns): text as SQLite renders it, NULL as NULL. */
static void entry_of_values(tr_audit_entry_t *e, sqlite3_value **v)
{
    for (int i = 0; i < TR_AUDIT_FIELDS; i++) {
        if (sqlite3_value_type(v[i]) == SQLITE_NULL) {
            e->value[i] = NULL;
            e->len[i] = 0;
        } else {
            e->value[i] = (const char *)sqlite3_value_text(v[i]);
            e->len[i] = (size_t)sqlite3_value_bytes(v[i]);
            if (e->value[i] == NULL) /* out of memory converting it to text */
                e->len[i] = 0;
        }
    }
}

static void sql_audit_hash(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc; /* registered with exactly TR_AUDIT_FIELDS arguments */
    tr_audit_entry_t e;
    entry_of_values(&e, argv);
    char hex[65];
    tr_audit_hash(&e, hex);
    sqlite3_result_text(ctx, hex, 64, SQLITE_TRANSIENT);
}

int tr_audit_register(struct sqlite3 *db)
{
    return sqlite3_create_function(db, "triage_audit_hash", TR_AUDIT_FIELDS, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                                   sql_audit_hash, NULL, NULL) == SQLITE_OK
               ? 0
               : -1;
}

/* ---- the SQLite reader ---- */

#define HASH_COLUMN TR_AUDIT_FIELDS

typedef struct sqlite_reader_s {
    tr_audit_reader_t reader; /* first: the reader is this struct */
    sqlite3 *db;
    sqlite3_stmt *entries;
} sqlite_reader_t;

static int sqlite_next(tr_audit_reader_t *reader, tr_audit_entry_t *e, const char **hash, char *err, size_t err_size)
{
    sqlite_reader_t *r = (sqlite_reader_t *)reader;
    int rc = sqlite3_step(r->entries);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW) {
        snprintf(err, err_size, "reading the audit trail: %s", sqlite3_errmsg(r->db));
        return -1;
    }
    for (int i = 0; i < TR_AUDIT_FIELDS; i++) {
        if (sqlite3_column_type(r->entries, i) == SQLITE_NULL) {
            e->value[i] = NULL;
            e->len[i] = 0;
        } else {
            e->value[i] = (const char *)sqlite3_column_text(r->entries, i);
            e->len[i] = (size_t)sqlite3_column_bytes(r->entries, i);
        }
    }
    *hash = (const char *)sqlite3_column_text(r->entries, HASH_COLUMN);
    return 1;
}

static int64_t sqlite_seq_of_hash(tr_audit_reader_t *reader, const char *hash)
{
    sqlite_reader_t *r = (sqlite_reader_t *)reader;
    sqlite3_stmt *q;
    int64_t seq = 0;
    if (sqlite3_prepare_v2(r->db, "SELECT seq FROM " TR_AUDIT_TABLE " WHERE hash = ? ORDER BY seq LIMIT 1", -1, &q,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(q, 1, hash, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(q) == SQLITE_ROW)
            seq = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
    }
    return seq;
}

static void sqlite_close(tr_audit_reader_t *reader)
{
    sqlite_reader_t *r = (sqlite_reader_t *)reader;
    sqlite3_finalize(r->entries);
    sqlite3_close(r->db); /* ends the read transaction */
    free(r);
}

tr_audit_reader_t *tr_audit_open(const char *data_dir, char *err, size_t err_size)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/triage.db", data_dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *entries = NULL;
    /* Read-only: a reviewer's command can never change the trail, and never takes the write lock. */
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, TR_AUDIT_SELECT_ENTRIES, -1, &entries, NULL);
    if (rc != SQLITE_OK) {
        const char *why = db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
        if (strstr(why, "no such table") != NULL)
            snprintf(err, err_size, "%s has no audit trail (table " TR_AUDIT_TABLE ", migrations/005_audit.sql)", path);
        else
            snprintf(err, err_size, "cannot read %s: %s", path, why);
        sqlite3_close(db);
        return NULL;
    }
    sqlite_reader_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        abort();
    r->reader.next = sqlite_next;
    r->reader.seq_of_hash = sqlite_seq_of_hash;
    r->reader.close = sqlite_close;
    r->db = db;
    r->entries = entries;
    return &r->reader;
}

/* ---- verify ---- */

/* An entry's seq, from its text (both stores give the decimal digits). */
static int64_t seq_of_entry(const tr_audit_entry_t *e)
{
    return e->value[TR_AUDIT_SEQ] != NULL ? strtoll(e->value[TR_AUDIT_SEQ], NULL, 10) : 0;
}

/*
 * Walk the entries in seq order, checking for each: its seq follows the previous one's (else a gap:
 * entries removed), its prev_hash is the previous entry's hash (else: linking to a later entry means
 * the two were reordered; to no entry, the previous one was rewritten or this link changed), and its
 * hash is that of its fields (else it was changed after it was written). The first failure is
 * reported: whatever follows a break is not trustworthy either.
 */
int tr_audit_verify(tr_audit_reader_t *reader, FILE *out, char *err, size_t err_size)
{
    char prev_hash[65] = TR_AUDIT_GENESIS;
    int64_t expected = 1, count = 0;
    int bad = 0, rc;
    tr_audit_entry_t e;
    const char *stored;
    while (!bad && (rc = reader->next(reader, &e, &stored, err, err_size)) == 1) {
        int64_t seq = seq_of_entry(&e);
        const char *link = e.value[TR_AUDIT_PREV_HASH] != NULL ? e.value[TR_AUDIT_PREV_HASH] : "";
        if (stored == NULL)
            stored = "";
        char hash[65];
        tr_audit_hash(&e, hash);
        bad = 1;
        if (seq != expected) {
            if (seq == expected + 1)
                fprintf(out, "entry %" PRId64 ": gap in sequence: entry %" PRId64 " is missing\n", seq, expected);
            else
                fprintf(out, "entry %" PRId64 ": gap in sequence: entries %" PRId64 " to %" PRId64 " are missing\n",
                        seq, expected, seq - 1);
        } else if (strcmp(link, prev_hash) != 0) {
            int64_t target = reader->seq_of_hash(reader, link);
            if (target > seq)
                fprintf(out,
                        "entry %" PRId64 ": reordering: its prev_hash is the hash of entry %" PRId64
                        ", which comes after it (entries moved or swapped)\n",
                        seq, target);
            else if (target > 0)
                fprintf(out,
                        "entry %" PRId64 ": reordering: it links to entry %" PRId64 ", not to entry %" PRId64
                        " before it\n",
                        seq, target, seq - 1);
            else if (seq == 1)
                fprintf(out, "entry 1: broken link: its prev_hash is not the chain's start (%.8s...)\n",
                        TR_AUDIT_GENESIS);
            else
                fprintf(out,
                        "entry %" PRId64 ": broken link: its prev_hash is not the hash of entry %" PRId64
                        " (that entry was rewritten, or this link changed)\n",
                        seq, seq - 1);
        } else if (strcmp(hash, stored) != 0) {
            fprintf(out,
                    "entry %" PRId64 ": hash mismatch: its fields do not hash to its stored hash (changed after it "
                    "was written)\n",
                    seq);
        } else {
            bad = 0;
            snprintf(prev_hash, sizeof(prev_hash), "%s", stored);
            expected = seq + 1;
            count++;
        }
    }
    if (!bad && rc < 0)
        return -1;
    if (!bad) {
        if (count == 0)
            fprintf(out, "audit trail intact: no entries\n");
        else
            fprintf(out, "audit trail intact: %" PRId64 " entries (1 to %" PRId64 "), last hash %s\n", count,
                    expected - 1, prev_hash);
    }
    return bad;
}

/* ---- export ---- */

static void json_string(FILE *out, const char *s, size_t len)
{
    fputc('"', out);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", out);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

/* RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled. */
static void csv_field(FILE *out, const char *s, size_t len)
{
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fwrite(s, 1, len, out);
        return;
    }
    fputc('"', out);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"')
            fputc('"', out);
        fputc(s[i], out);
    }
    fputc('"', out);
}

long tr_audit_export(tr_audit_reader_t *reader, const char *format, FILE *out, char *err, size_t err_size)
{
    int csv = strcmp(format, "csv") == 0;
    if (!csv && strcmp(format, "jsonl") != 0) {
        snprintf(err, err_size, "--format %s: jsonl or csv", format);
        return -1;
    }
    int columns = TR_AUDIT_FIELDS + 1;
    if (csv) {
        for (int i = 0; i < columns; i++)
            fprintf(out, "%s%s", i ? "," : "", i < TR_AUDIT_FIELDS ? tr_audit_field_names[i] : "hash");
        fputs("\r\n", out);
    }
    long n = 0;
    int rc;
    tr_audit_entry_t e;
    const char *hash;
    while ((rc = reader->next(reader, &e, &hash, err, err_size)) == 1) {
        if (!csv)
            fputc('{', out);
        for (int i = 0; i < columns; i++) {
            const char *s = i < TR_AUDIT_FIELDS ? e.value[i] : hash;
            size_t len = i < TR_AUDIT_FIELDS ? e.len[i] : s != NULL ? strlen(s) : 0;
            if (csv) {
                if (i > 0)
                    fputc(',', out);
                if (s != NULL)
                    csv_field(out, s, len);
                continue;
            }
            fprintf(out, "%s\"%s\":", i ? "," : "", i < TR_AUDIT_FIELDS ? tr_audit_field_names[i] : "hash");
            if (s == NULL)
                fputs("null", out);
            else if (i == TR_AUDIT_SEQ)
                fprintf(out, "%" PRId64, seq_of_entry(&e)); /* the one integer column */
            else
                json_string(out, s, len); /* before and after too: the text that was hashed, as it is */
        }
        fputs(csv ? "\r\n" : "}\n", out);
        n++;
    }
    return rc < 0 ? -1 : n;
}
